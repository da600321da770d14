"""Verified basic-auth credentials, each bound to the stored password hash it was checked against.

MLflow 3.17.2's own credential cache (``_USER_AUTH_CACHE`` in ``mlflow/server/auth/__init__.py``,
documented in its ``basic_auth.ini``: "Other workers in a multi-worker deployment may continue to
accept the old credential until the TTL expires") keys a verified ``(username, password)`` to the
``User`` row read at that moment (password hash *and* ``is_admin``) and drops it only on the worker
that handled a change. Here the user's row is read on every request instead (one indexed query,
the read the permission check makes anyway) and only the scrypt verdict is kept: the key is an
HMAC-SHA256, under a random per-process key, of the username, the supplied password and the stored
hash it was verified against. A new password (a new hash: werkzeug salts every hash), a deleted
user (no row) or a changed admin flag (read from the row) therefore apply to the very next request
on every worker of every task, while repeating a valid credential costs one HMAC, not scrypt.
No plaintext password is kept; the cache is a bounded LRU, and an entry is verified again after
``max_age`` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict

from werkzeug import security


class VerifiedCredentials:
    """A bounded LRU of (username, password, stored hash) triples that scrypt already accepted.

    ``max_size`` or ``max_age`` 0: nothing is kept (every check runs scrypt, as MLflow does with
    its cache off). Only accepted credentials are kept; a rejected one is checked again each time,
    as in MLflow."""

    def __init__(self, max_size: int, max_age: float, clock=time.monotonic) -> None:
        self.max_size = max(0, int(max_size))
        self.max_age = max(0.0, float(max_age))
        self._clock = clock
        self._key = secrets.token_bytes(32)  # per process: the digests are useless outside it
        self._entries: OrderedDict[bytes, float] = OrderedDict()  # digest -> when scrypt accepted it
        self._lock = threading.Lock()  # Flask handlers run on several threads of a worker

    @property
    def enabled(self) -> bool:
        return self.max_size > 0 and self.max_age > 0

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, username: str, password: str, password_hash: str) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in (username, password, password_hash):  # length-prefixed: no two triples collide
            raw = part.encode("utf-8", "surrogatepass")
            mac.update(len(raw).to_bytes(8, "big"))
            mac.update(raw)
        return mac.digest()

    def check(self, username: str, password: str, password_hash: str) -> bool:
        """Whether ``password`` matches ``password_hash`` (the user's stored hash, read now)."""
        if not self.enabled:
            return security.check_password_hash(password_hash, password)
        key = self._digest(username, password, password_hash)
        now = self._clock()
        with self._lock:
            since = self._entries.get(key)
            if since is not None:
                if now - since < self.max_age:
                    self._entries.move_to_end(key)
                    return True
                del self._entries[key]
        # scrypt outside the lock: different credentials are verified in parallel
        if not security.check_password_hash(password_hash, password):
            return False
        with self._lock:
            self._entries[key] = now
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
        return True
