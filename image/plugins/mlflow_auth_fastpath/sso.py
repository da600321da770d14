"""Single sign-on through the load balancer (issue 15): MLflow's ``authorization_function`` hook.

The entrypoint names this function in the auth ini only when MLFLOW_SSO_SIGNER_ARN is set
(``authorization_function = mlflow_auth_fastpath.sso:authenticate_request``); MLflow 3.17.2 then calls
it wherever it authenticates a request (``authenticate_request`` -> ``get_auth_func``: the
permission check ``_before_request``, the after-request grant handlers, GraphQL, the FastAPI
middleware's bridge ``_authenticate_custom_for_fastapi``), and answers ``is_basic_auth: false`` on
``/users/current`` (the UI then hides its basic-auth logout and change-password items).

A request carrying ``x-amzn-oidc-data`` is trusted only when the load balancer signed it (Elastic
Load Balancing User Guide, "Authenticate users using an Application Load Balancer", "User claims
encoding and signature verification"): the header is a JWT whose header holds ``alg`` (ES256: ECDSA
P-256 + SHA-256), ``kid``, ``signer`` (the load balancer's ARN), ``iss``, ``client`` and ``exp``; its
payload holds the claims of the identity provider's user info endpoint. Checked here, in order:

1. the JWT header's ``signer`` is this stack's load balancer (MLFLOW_SSO_SIGNER_ARN), ``alg`` ES256;
2. the ES256 signature verifies against the public key the load balancer's region publishes for
   the header's ``kid`` (a UUID; https://public-keys.auth.elb.REGION.amazonaws.com/KID, a PEM),
   fetched with a short timeout and kept per kid in a bounded cache (sso_keys.py). An unknown kid
   (403/404) is 401 and remembered for a minute; an endpoint that cannot be reached is 503, never a
   pass and never a hang;
3. the token has not expired: ``exp`` of the JWT header (where AWS's guide shows it) and of the
   payload (where AWS's own verifier, aws-jwt-verify's AlbJwtVerifier, checks it), each one present
   must be in the future, and at least one must be present;
4. ``iss``, likewise in header and payload, equals MLFLOW_SSO_ISSUER (the identity provider's issuer,
   e.g. https://cognito-idp.REGION.amazonaws.com/POOL_ID: aws-jwt-verify's test against a real
   load balancer with Cognito expects exactly that);
5. the claim MLFLOW_SSO_USER_CLAIM (default ``email``) is a non-empty string: the MLflow user;
   with ``email``, a payload's ``email_verified``, when present, must be true (``true`` or Cognito's
   string ``"true"``); absent, the email is taken (Entra ID's user info does not send it).

Anything else is refused (401), with no fallback to basic auth: the load balancer forwards
programmatic paths (/api/...) without its login, so a client can send this header itself there.
A request carrying both the header and ``Authorization`` is refused too (401): MLflow's job
handlers take a job's user from ``Authorization`` whatever the authorization function decided.

The user is created on first sight (MLflow's auth store ``create_user``, with a random password
nobody is told: the person can use basic auth only after an admin sets a password), with no grants
of its own, so MLflow's ``default_permission`` applies. Its admin flag follows MLFLOW_SSO_ADMIN_USERS
(compared case-insensitively) or the group claim on every request, both ways (``update_user`` only
when it differs). The basic-auth admin user (MLFLOW_AUTH_ADMIN_USERNAME, in any letter case) is
never reachable through single sign-on, and a name the database matches to a user spelled otherwise
(MySQL's default collation ignores case) is 403: the user found must be exactly the claim's.

Requests without the header get exactly the basic auth of the running app: the module
``mlflow.server.auth``'s ``authenticate_request_basic_auth``, resolved at call time (the auth fast
path's ``install`` replaces it), and on routes FastAPI serves itself MLflow's own
``_authenticate_fastapi_request`` (:func:`install`), as without single sign-on.

JWT library: PyJWT (with ``cryptography``). The load balancer's JWT is base64url WITH padding
('=' at the end of its parts), which RFC 7515 does not allow and AWS warns some libraries reject;
PyJWT 2.15 accepts the padding (``PyJWS._decode_base64url_segment``: "Accept trailing '=' used by
some issuers (e.g. AWS ALB)") and verifies the signature over the header and payload exactly as
received, so no re-encoding is needed here (tests/support/alb_keys.py makes padded tokens).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import re
import secrets
import threading
import time
from pathlib import Path

from mlflow_auth_fastpath.sso_keys import KeyCache, Refused  # noqa: F401 (Refused: part of this module's API)

FUNCTION = "mlflow_auth_fastpath.sso:authenticate_request"
HEADER = "x-amzn-oidc-data"
LEEWAY_SECONDS = 5  # clock difference tolerated on exp/nbf/iat
USERNAME_MAX = 255  # MLflow's users.username column
_VERDICT = "_mlflow_sso_verdict"  # attribute of one request object: its answer
_SETTINGS_FILE = Path(__file__).resolve().parents[2] / "sso_settings.py"  # image/sso_settings.py (/app in the image)

_log = logging.getLogger("mlflow.server.auth.sso")  # under MLflow's configured "mlflow" logger
_state_lock = threading.Lock()
_state: tuple | None = None  # (settings, KeyCache)


# --------------------------------------------------------------------------------------------
# settings and keys
# --------------------------------------------------------------------------------------------
def load_settings_module():
    """image/sso_settings.py (beside the entrypoint; not on the server's PYTHONPATH), loaded by path."""
    import sys

    name = "_mlflow_sso_settings"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _SETTINGS_FILE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: dataclasses look their module up there
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    return sys.modules[name]


def _configured():
    """(settings, keys) from this process's environment, once; Refused(503) if SSO is off or invalid
    (the entrypoint validated the same variables at start, so neither should happen)."""
    global _state
    if _state is None:
        import os

        with _state_lock:
            if _state is None:
                try:
                    settings = load_settings_module().from_env(os.environ)
                except ValueError as e:
                    _log.error("single sign-on: %s", e)
                    raise Refused(503, "single sign-on is misconfigured on the server") from None
                if settings is None:
                    _log.error("single sign-on: %s is configured but MLFLOW_SSO_SIGNER_ARN is not set", FUNCTION)
                    raise Refused(503, "single sign-on is not configured on the server")
                _state = (settings, KeyCache(settings.key_url))
    return _state


# --------------------------------------------------------------------------------------------
# the token
# --------------------------------------------------------------------------------------------
def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and re.fullmatch(r"\d{1,12}", value):
        return float(value)
    return None


def verify(token: str, settings, keys: KeyCache, now: float | None = None) -> dict:
    """The token's claims if the load balancer signed it for this stack and it is valid now;
    otherwise Refused (see the module doc for every check)."""
    import jwt

    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Refused(401, "x-amzn-oidc-data is not a JWT") from None
    if header.get("signer") != settings.signer_arn:
        raise Refused(401, "x-amzn-oidc-data was not signed by this stack's load balancer")
    if header.get("alg") != "ES256":
        raise Refused(401, "x-amzn-oidc-data is not signed with ES256")
    key = keys.get(header.get("kid"))  # a UUID (sso_keys.KID), else 401 without a fetch
    try:
        # exp/iss are checked below in both the header and the payload; PyJWT still refuses an
        # expired payload exp, a future nbf/iat, and any signature that does not verify
        claims = jwt.decode(token, key, algorithms=["ES256"], leeway=LEEWAY_SECONDS,
                            options={"verify_aud": False, "verify_iss": False, "verify_sub": False,
                                     "verify_jti": False})
    except jwt.ExpiredSignatureError:
        raise Refused(401, "x-amzn-oidc-data has expired") from None
    except jwt.InvalidSignatureError:
        raise Refused(401, "x-amzn-oidc-data's signature does not verify") from None
    except jwt.PyJWTError as e:
        raise Refused(401, f"x-amzn-oidc-data is not valid ({type(e).__name__})") from None
    exps = [v for v in (header.get("exp"), claims.get("exp")) if v is not None]
    if not exps:
        raise Refused(401, "x-amzn-oidc-data has no exp")
    for v in exps:
        n = _number(v)
        if n is None:
            raise Refused(401, "x-amzn-oidc-data's exp is not a time")
        if n <= now - LEEWAY_SECONDS:
            raise Refused(401, "x-amzn-oidc-data has expired")
    issuers = [v for v in (header.get("iss"), claims.get("iss")) if v is not None]
    if not issuers:
        raise Refused(401, "x-amzn-oidc-data has no iss")
    if any(v != settings.issuer for v in issuers):
        raise Refused(401, "x-amzn-oidc-data was issued by another identity provider")
    return claims


def username_of(claims: dict, settings) -> str:
    name = claims.get(settings.user_claim)
    if isinstance(name, str):
        name = name.strip()
    if not isinstance(name, str) or not name or len(name) > USERNAME_MAX or re.search(r"[\x00-\x1f\x7f]", name):
        raise Refused(401, f"x-amzn-oidc-data has no usable {settings.user_claim!r} claim")
    if settings.user_claim == "email" and "email_verified" in claims:
        verified = claims["email_verified"]  # Cognito sends the string "true" (aws-load-balancer-controller #1715)
        if verified is not True and verified != "true":
            raise Refused(401, "x-amzn-oidc-data's email is not verified (email_verified)")
    return name


def is_admin(name: str, claims: dict, settings) -> bool:
    # letter case is ignored for ASCII names only: casefold() also maps other characters onto ASCII
    # ('\u017f' long s -> 's', the Kelvin sign -> 'k'), which would let a chosen name match an admin's
    if name in settings.admin_users or (name.isascii() and name.lower() in
                                        {u.lower() for u in settings.admin_users if u.isascii()}):
        return True
    if not settings.admin_group_claim:
        return False
    groups = claims.get(settings.admin_group_claim)
    if isinstance(groups, str):
        return groups == settings.admin_group
    return isinstance(groups, list) and settings.admin_group in [g for g in groups if isinstance(g, str)]


# --------------------------------------------------------------------------------------------
# MLflow's user
# --------------------------------------------------------------------------------------------
def _forget_user_memo(name: str) -> None:
    """Drop this request's copy of the user (the auth fast path reads it once per check) after a write."""
    import flask

    from mlflow_auth_fastpath import _USERS

    if flask.has_app_context():
        users = flask.g.get(_USERS)
        if users is not None:
            users.pop(name, None)


def provision(auth, name: str, admin: bool) -> None:
    """Create the user on first sight; set its admin flag when it differs from `admin`. Refused(403)
    for a user the database finds under another spelling, and never a write to the basic-auth admin."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

    store = auth.store
    try:
        user = store.get_user(name)
    except MlflowException as e:
        if e.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        try:
            # a password nobody knows (MLflow requires one): basic auth for this user only after an
            # admin sets a password; no grants, so MLflow's default_permission applies
            store.create_user(name, secrets.token_urlsafe(48), is_admin=admin)
            _forget_user_memo(name)
            _log.info("single sign-on: created MLflow user %r%s", name, " (admin)" if admin else "")
            return
        except MlflowException as e2:
            if e2.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            user = store.get_user(name)  # another worker or task created it a moment ago
    if user.username != name or _is_bootstrap_admin(auth, user.username):
        raise Refused(403, "the user claim names an existing MLflow user spelled otherwise")
    if bool(user.is_admin) != admin:
        store.update_user(name, is_admin=admin)
        _forget_user_memo(name)
        invalidate = getattr(auth, "_invalidate_user_auth_cache", None)  # MLflow's own credential cache, if on
        if invalidate is not None:
            invalidate(name)
        _log.info("single sign-on: %s admin rights of MLflow user %r", "granted" if admin else "revoked", name)


def _is_bootstrap_admin(auth, name: str) -> bool:
    # wide matching here only refuses more (never grants): casefold is fine
    return name.casefold() == (auth.auth_config.admin_username or "").casefold()


def _refusal(refused: Refused):
    import flask

    _log.warning("single sign-on: refused %s %s: %s (%s)", flask.request.method, flask.request.path,
                 refused.reason, refused.status)
    res = flask.make_response(f"single sign-on: {refused.reason}\n", refused.status)
    res.headers["Content-Type"] = "text/plain; charset=utf-8"
    if refused.status == 503:
        res.headers["Retry-After"] = "5"
    return res


def _sso(auth, token: str):
    from werkzeug.datastructures import Authorization

    try:
        settings, keys = _configured()
        claims = verify(token, settings, keys)
        name = username_of(claims, settings)
        if _is_bootstrap_admin(auth, name):
            raise Refused(403, "the basic-auth admin user cannot log in through single sign-on")
        provision(auth, name, is_admin(name, claims, settings))
    except Refused as r:
        return _refusal(r)
    return Authorization("basic", {"username": name})


def authenticate_request():
    """MLflow's ``authorization_function``: an ``Authorization`` carrying the user name, or a response."""
    import flask
    from mlflow.server import auth

    token = flask.request.headers.get(HEADER)
    if token is None:
        return auth.authenticate_request_basic_auth()  # the running app's (the fast path's, once installed)
    if flask.request.headers.get("Authorization") is not None:
        # MLflow's job handlers read the job's user from Authorization, not from this function's answer
        return _refusal(Refused(401, "a request with x-amzn-oidc-data must not carry an Authorization header"))
    # MLflow authenticates a request several times (before-request check, admin check, validators,
    # after-request grants): decide once per request object (not flask.g: an app context pushed
    # around several requests keeps g across them, and the admin flag must be re-read per request)
    current = flask.request._get_current_object()
    verdict = getattr(current, _VERDICT, None)
    if verdict is None:
        verdict = _sso(auth, token)
        setattr(current, _VERDICT, verdict)
    return verdict


def install(auth) -> None:
    """On routes FastAPI serves itself (gateway, OTLP, ...), MLflow's middleware calls
    ``_authenticate_custom_for_fastapi`` (a Flask request context around :func:`authenticate_request`)
    once a custom function is configured. Without the header, call MLflow's own
    ``_authenticate_fastapi_request`` instead, as without single sign-on (it also honours the
    gateway's X-MLflow-Authorization header and the job runner's internal token, which the bridge
    does not); with it, the bridge. Also reads the settings now, so a problem is logged at start."""
    if getattr(auth, "_mlflow_sso_installed", False):
        return
    bridge = auth._authenticate_custom_for_fastapi

    @functools.wraps(bridge)
    def authenticate(request):
        if request.headers.get(HEADER) is None:
            return auth._authenticate_fastapi_request(request)
        return bridge(request)

    auth._authenticate_custom_for_fastapi = authenticate
    auth._mlflow_sso_installed = True
    try:
        settings, _ = _configured()
        _log.info("mlflow-auth-fastpath: %s", settings.describe())
    except Refused:
        pass  # logged by _configured; every request with the header is then refused (503)
