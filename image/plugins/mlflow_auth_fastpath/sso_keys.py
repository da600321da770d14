"""Single sign-on (sso.py): the load balancer's public keys by key id, and the refusal it answers.

The key of a kid is a PEM at https://public-keys.auth.elb.REGION.amazonaws.com/KID (Elastic Load
Balancing User Guide, "Authenticate users using an Application Load Balancer", "User claims encoding
and signature verification"). The load balancer's key ids are UUIDs: AWS's own verifier
(aws-jwt-verify, src/alb-cache.ts, ``isValidAlbKid``) accepts only
``^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`` (case-insensitive), and so does
:data:`KID` here: anything else is refused without a fetch.

A fetch happens synchronously in the request (MLflow's FastAPI middleware calls the check in its
event loop), so a kid the endpoint does not know (403/404) is remembered for
:data:`REJECTED_SECONDS` (at most :data:`REJECTED_SIZE` kids per worker): a client repeating a forged
kid costs one fetch per 10 s, not one per request.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections import OrderedDict

KEY_FETCH_TIMEOUT = 3.0  # seconds per connection step of one key fetch
KEY_FETCH_SLOTS = 4  # key fetches in flight at once in a worker (kids are few; forged ones are not)
KEY_CACHE_SIZE = 32  # kids kept per worker (a key never changes for its kid)
KEY_MAX_BYTES = 16 * 1024  # a P-256 public key in PEM is ~180 bytes
REJECTED_SECONDS = 10.0  # a kid the endpoint does not know is refused without a fetch this long
REJECTED_SIZE = 1024  # such kids remembered per worker (oldest forgotten first)
KID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_log = logging.getLogger("mlflow.server.auth.sso")  # under MLflow's configured "mlflow" logger


class Refused(Exception):
    """The header is not accepted: `status` (401, 403, 503) and a reason safe to show."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


UNKNOWN_KID = "the token's key id is not one of the load balancer's keys"


def _parse_public_key(pem: bytes):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an EC P-256 public key")
    return key


class KeyCache:
    """The load balancer's public keys by kid: fetched once (one fetch per kid at a time), kept in
    a bounded LRU. get() raises Refused: 401 for a kid not of the UUID form or one the endpoint does
    not know (remembered for REJECTED_SECONDS), 503 when the endpoint cannot be reached or answers
    nonsense (not remembered: the next request tries again)."""

    def __init__(self, base_url: str, timeout: float = KEY_FETCH_TIMEOUT, size: int = KEY_CACHE_SIZE,
                 clock=time.monotonic) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.size = size
        self._clock = clock
        self._keys: OrderedDict[str, object] = OrderedDict()
        self._rejected: OrderedDict[str, float] = OrderedDict()  # kid -> refused until (clock)
        self._inflight: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(KEY_FETCH_SLOTS)

    def _known_unknown(self, kid: str) -> bool:
        """Under the lock: the endpoint refused this kid less than REJECTED_SECONDS ago."""
        until = self._rejected.get(kid)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._rejected[kid]
        return False

    def get(self, kid: str):
        if not isinstance(kid, str) or not KID.fullmatch(kid):
            raise Refused(401, "x-amzn-oidc-data has no valid key id")
        while True:
            with self._lock:
                key = self._keys.get(kid)
                if key is not None:
                    self._keys.move_to_end(kid)
                    return key
                if self._known_unknown(kid):
                    raise Refused(401, UNKNOWN_KID)
                waiting = self._inflight.get(kid)
                if waiting is None:
                    done = self._inflight[kid] = threading.Event()
                    break
            # another thread fetches this kid: take its key, or (it failed) fetch again ourselves
            if not waiting.wait(self.timeout * 3):
                raise Refused(503, "the load balancer's key endpoint did not answer in time")
        try:
            key = self._fetch(kid)
            with self._lock:
                self._keys[kid] = key
                while len(self._keys) > self.size:
                    self._keys.popitem(last=False)
            return key
        except Refused as r:
            if r.status == 401:
                with self._lock:
                    self._rejected[kid] = self._clock() + REJECTED_SECONDS
                    self._rejected.move_to_end(kid)
                    while len(self._rejected) > REJECTED_SIZE:
                        self._rejected.popitem(last=False)
            raise
        finally:
            with self._lock:
                self._inflight.pop(kid, None)
            done.set()

    def _fetch(self, kid: str):
        url = f"{self.base_url}/{kid}"
        if not self._slots.acquire(timeout=self.timeout):
            raise Refused(503, "too many key fetches in flight")
        try:
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as r:  # noqa: S310 (https, or loopback in tests)
                    body = r.read(KEY_MAX_BYTES + 1)
            except urllib.error.HTTPError as e:
                if e.code in (403, 404):  # the endpoint is an S3-style store: a missing object may be 403
                    raise Refused(401, UNKNOWN_KID) from None
                _log.warning("single sign-on: key endpoint %s answered %s", url, e.code)
                raise Refused(503, f"the load balancer's key endpoint answered {e.code}") from None
            except Exception as e:  # URLError, timeouts, resets, http.client.IncompleteRead, ...: 503, not a 500
                _log.warning("single sign-on: key endpoint %s could not be reached: %s", url, e)
                raise Refused(503, "the load balancer's key endpoint could not be reached") from None
        finally:
            self._slots.release()
        try:
            if len(body) > KEY_MAX_BYTES:
                raise ValueError("too large")
            return _parse_public_key(body)
        except Exception as e:  # ValueError, cryptography's UnsupportedAlgorithm, ...
            _log.warning("single sign-on: key endpoint %s did not answer a P-256 public key: %s", url, e)
            raise Refused(503, "the load balancer's key endpoint did not answer a public key") from None
