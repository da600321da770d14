"""What tests/server/test_sso_tokens.py (the token check in process) and tests/server/test_sso.py
(the server) share: the stack's settings, the modules under test, and the refused tokens.

The tokens follow the Elastic Load Balancing User Guide, "Authenticate users using an Application
Load Balancer", "User claims encoding and signature verification" (tests/support/alb_keys.py makes
them).
"""

from __future__ import annotations

import base64
import importlib
import importlib.util
import json
import sys
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.alb_keys import b64_padded

ROOT = Path(__file__).resolve().parents[2]
SIGNER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/mlflow-sso-test/50dc6c495c0c9188"
OTHER_SIGNER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/someone-else/0123456789abcdef"
ISSUER = "https://idp.example.test/realms/mlflow"
GROUP_CLAIM, GROUP = "groups", "mlflow-admins"
LIST_ADMIN = "boss@example.test"
HEADER = "x-amzn-oidc-data"
GOOD_ENV = {"MLFLOW_SSO_SIGNER_ARN": SIGNER, "MLFLOW_SSO_ISSUER": ISSUER}


def _load_settings():
    name = "test_sso_settings_module"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "image" / "sso_settings.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


def _load_plugin(name: str):
    """image/plugins/mlflow_auth_fastpath.<name>, imported as the server imports it (the plugins
    directory on sys.path only while importing)."""
    plugins = str(ROOT / "image" / "plugins")
    sys.path.insert(0, plugins)
    try:
        return importlib.import_module(f"mlflow_auth_fastpath.{name}")
    finally:
        sys.path.remove(plugins)


sso_settings = _load_settings()
sso = _load_plugin("sso")
sso_keys = _load_plugin("sso_keys")


def forged_payload(token: str, **claims) -> str:
    """The same header and signature around another payload (what a forger can make)."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload))
    return f"{header}.{b64_padded(json.dumps({**body, **claims}).encode())}.{signature}"


def refusal_cases(keys):
    kid = keys.kid
    good = dict(signer=SIGNER, issuer=ISSUER)
    claims = {"email": "eve@example.test"}
    now_header = {"alg": "none", "kid": kid, "signer": SIGNER, "iss": ISSUER, "exp": 4102444800}
    return {
        "expired": (keys.token(kid, claims, expires_in=-3600, **good), 401, "expired"),
        "expired-in-header-only": (keys.token(kid, claims, header={"exp": 1_600_000_000}, **good), 401, "expired"),
        "other-key": (keys.token(kid, claims, sign_with=ec.generate_private_key(ec.SECP256R1()), **good), 401,
                      "signature"),
        "forged-payload": (forged_payload(keys.token(kid, claims, **good), email="admin@example.test"), 401,
                           "signature"),
        "unsigned-alg-none": (f"{b64_padded(json.dumps(now_header).encode())}."
                              f"{b64_padded(json.dumps({**claims, 'exp': 4102444800, 'iss': ISSUER}).encode())}.", 401,
                              "ES256"),
        "wrong-signer": (keys.token(kid, claims, signer=OTHER_SIGNER, issuer=ISSUER), 401, "load balancer"),
        "no-signer": (keys.token(kid, claims, header={"signer": None}, **good), 401, "load balancer"),
        "wrong-issuer": (keys.token(kid, claims, signer=SIGNER, issuer="https://evil.example.test"), 401,
                         "another identity provider"),
        "wrong-issuer-in-payload": (keys.token(kid, claims, payload={"iss": "https://evil.example.test"}, **good),
                                    401, "another identity provider"),
        "no-issuer": (keys.token(kid, claims, header={"iss": None}, payload={"iss": None}, **good), 401, "no iss"),
        "no-exp": (keys.token(kid, claims, header={"exp": None}, payload={"exp": None}, **good), 401, "no exp"),
        "unknown-kid": (keys.token(kid, claims, header={"kid": str(uuid.uuid4())}, **good), 401, "key id"),
        "kid-with-path": (keys.token(kid, claims, header={"kid": "../keys"}, **good), 401, "key id"),
        "not-a-jwt": ("hello", 401, "not a JWT"),
        "email-not-verified": (keys.token(kid, {**claims, "email_verified": False}, **good), 401, "not verified"),
        "email-not-verified-string": (keys.token(kid, {**claims, "email_verified": "false"}, **good), 401,
                                      "not verified"),
    }


CASES = ["expired", "expired-in-header-only", "other-key", "forged-payload", "unsigned-alg-none", "wrong-signer",
         "no-signer", "wrong-issuer", "wrong-issuer-in-payload", "no-issuer", "no-exp", "unknown-kid",
         "kid-with-path", "not-a-jwt", "email-not-verified", "email-not-verified-string"]
