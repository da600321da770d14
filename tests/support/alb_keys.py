"""A stand-in for the Application Load Balancer's signing keys and its regional key endpoint.

Follows the Elastic Load Balancing User Guide, "Authenticate users using an Application Load
Balancer", "User claims encoding and signature verification": the load balancer sends the user
claims in the `x-amzn-oidc-data` header as a JWT signed with ECDSA P-256 + SHA-256 (ES256) whose
parts are base64url encoded WITH padding characters at the end; its header holds alg, kid,
signer (the load balancer's ARN), iss, client and exp; its payload the claims of the identity
provider's user info endpoint. The public key of a kid is a PEM served at
https://public-keys.auth.elb.REGION.amazonaws.com/KID. AWS's own verifier (aws-jwt-verify,
AlbJwtVerifier) checks iss and exp in the payload as well, so tokens here carry both there too.

    with AlbKeyEndpoint() as keys:           # http://127.0.0.1:<port>/<kid> -> PEM; unknown kid -> 404
        kid = keys.new_key()                  # a P-256 key pair served under kid
        token = keys.token(kid, {"email": "a@example.com"}, signer=ARN, issuer=ISS)
        keys.url                              # MLFLOW_SSO_KEY_URL
        keys.requests                         # paths requested so far (cache checks)
        keys.slow_kid                         # a kid whose answer comes only after `slow_seconds`

Key ids are UUIDs (12345678-1234-1234-1234-123456789012 in AWS's examples; AWS's verifier accepts
only that form), so the server's own kid check passes them.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.peers import LOOPBACK


def b64_padded(data: bytes) -> str:
    """base64url WITH '=' padding, as the load balancer encodes each part (not RFC 7515's unpadded form)."""
    return base64.urlsafe_b64encode(data).decode()


def es256_sign(private_key, signing_input: bytes) -> bytes:
    """The JWS ES256 signature: r || s, 32 bytes each (RFC 7518 3.4), not the DER cryptography returns."""
    r, s = decode_dss_signature(private_key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def make_token(private_key, header: dict, payload: dict) -> str:
    """header.payload.signature, each part base64url with padding, signed over the padded parts."""
    signing_input = f"{b64_padded(json.dumps(header).encode())}.{b64_padded(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64_padded(es256_sign(private_key, signing_input.encode()))}"


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


class AlbKeyEndpoint:
    """Key pairs by kid and a loopback HTTP endpoint serving their public keys (PEM, as AWS does)."""

    def __init__(self, slow_seconds: float = 8.0) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.requests: list[str] = []
        self.slow_kid = str(uuid.uuid4())  # key ids are UUIDs, as the load balancer's (aws-jwt-verify's alb-cache.ts)
        self.slow_seconds = slow_seconds
        self._stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                kid = self.path.lstrip("/")
                outer.requests.append(self.path)
                if kid == outer.slow_kid:
                    outer._stop.wait(outer.slow_seconds)  # longer than the server's fetch timeout
                key = outer.keys.get(kid)
                if key is None:
                    self.send_error(404)
                    return
                body = public_pem(key)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Quiet(ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # the slow kid's client gave up before the answer: a broken pipe, expected

        self._server = Quiet((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def new_key(self, kid: str | None = None) -> str:
        kid = kid or str(uuid.uuid4())
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return kid

    def token(self, kid: str, claims: dict, *, signer: str, issuer: str, client: str = "test-client",
              expires_in: float = 600, header: dict | None = None, payload: dict | None = None,
              sign_with: ec.EllipticCurvePrivateKey | None = None) -> str:
        """A load balancer's x-amzn-oidc-data for `claims`; `header`/`payload` override fields (None removes)."""
        exp = int(time.time() + expires_in)
        h = {"alg": "ES256", "kid": kid, "signer": signer, "iss": issuer, "client": client, "exp": exp,
             **(header or {})}
        p = {"sub": str(uuid.uuid4()), **claims, "exp": exp, "iss": issuer, **(payload or {})}
        h = {k: v for k, v in h.items() if v is not None}
        p = {k: v for k, v in p.items() if v is not None}
        token = make_token(sign_with or self.keys[kid], h, p)
        assert "=" in token, "the load balancer's tokens are padded"  # the signature (64 bytes) always is
        return token

    def __enter__(self) -> "AlbKeyEndpoint":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
