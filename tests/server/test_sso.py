"""Single sign-on through the load balancer (issue 15, items 3 and 4): the server trusts
`x-amzn-oidc-data` only when the load balancer signed it, and basic auth stays as it was.

The stand-in (tests/support/alb_keys.py) follows the Elastic Load Balancing User Guide,
"Authenticate users using an Application Load Balancer", "User claims encoding and signature
verification": an ES256 (ECDSA P-256 + SHA-256) JWT whose parts are base64url WITH padding, its
header carrying alg, kid, signer (the load balancer's ARN), iss, client and exp, its payload the
identity provider's user claims (plus iss and exp, which AWS's own aws-jwt-verify AlbJwtVerifier
checks there); the public key of a kid is a PEM at https://public-keys.auth.elb.REGION.amazonaws.com/KID,
here a loopback endpoint named by MLFLOW_SSO_KEY_URL (tests only: the server refuses any other host).

In-process: image/sso_settings.py's one-line errors, and the plugin's token check against the
loopback key endpoint. For real: the entrypoint with single sign-on on a MariaDB (user creation
on PostgreSQL too), driven over HTTP as the UI and the MLflow client drive it. Not here: a real
load balancer, its key endpoint and a real identity provider's token.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, DB_PASSWORD, SECRET_KEY, unique
from tests.support.alb_keys import AlbKeyEndpoint, b64_padded
from tests.support.dbadmin import drop_app_user, prepare_databases
from tests.support.peers import free_port
from tests.support.server import Server, database_env, run_entrypoint

ROOT = Path(__file__).resolve().parents[2]
SIGNER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/mlflow-sso-test/50dc6c495c0c9188"
OTHER_SIGNER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/someone-else/0123456789abcdef"
ISSUER = "https://idp.example.test/realms/mlflow"
GROUP_CLAIM, GROUP = "groups", "mlflow-admins"
LIST_ADMIN = "boss@example.test"
HEADER = "x-amzn-oidc-data"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sso_settings = _load(ROOT / "image" / "sso_settings.py", "test_sso_settings_module")
sso = _load(ROOT / "image" / "plugins" / "mlflow_auth_fastpath" / "sso.py", "test_sso_plugin_module")

GOOD_ENV = {"MLFLOW_SSO_SIGNER_ARN": SIGNER, "MLFLOW_SSO_ISSUER": ISSUER}


# --------------------------------------------------------------------------------------------
# settings (image/sso_settings.py): one line naming the variable
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, variable, allowed", [
    ({"MLFLOW_SSO_SIGNER_ARN": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/x/0123"},
     "MLFLOW_SSO_SIGNER_ARN", "loadbalancer/app/NAME/ID"),
    ({"MLFLOW_SSO_SIGNER_ARN": "my-alb"}, "MLFLOW_SSO_SIGNER_ARN", "arn:aws:elasticloadbalancing"),
    ({"MLFLOW_SSO_SIGNER_ARN": SIGNER.replace("arn:aws:", "arn:aws-cn:").replace("eu-west-1", "cn-north-1")},
     "MLFLOW_SSO_SIGNER_ARN", "partition aws"),
    ({"MLFLOW_SSO_SIGNER_ARN": SIGNER}, "MLFLOW_SSO_ISSUER", "https://"),
    ({**GOOD_ENV, "MLFLOW_SSO_ISSUER": "http://idp.example.test"}, "MLFLOW_SSO_ISSUER", "https://"),
    ({**GOOD_ENV, "MLFLOW_SSO_USER_CLAIM": "e mail"}, "MLFLOW_SSO_USER_CLAIM", "no spaces"),
    ({**GOOD_ENV, "MLFLOW_SSO_ADMIN_GROUP_CLAIM": "groups"}, "MLFLOW_SSO_ADMIN_GROUP", "both"),
    ({**GOOD_ENV, "MLFLOW_SSO_ADMIN_GROUP": "admins"}, "MLFLOW_SSO_ADMIN_GROUP_CLAIM", "both"),
    ({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": "https://public-keys.auth.elb.eu-west-1.amazonaws.com"},
     "MLFLOW_SSO_KEY_URL", "127.0.0.1"),
    ({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": "http://10.0.0.1:8080"}, "MLFLOW_SSO_KEY_URL", "tests only"),
    ({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": "ftp://127.0.0.1/keys"}, "MLFLOW_SSO_KEY_URL", "http(s)"),
    ({"MLFLOW_SSO_ISSUER": ISSUER}, "MLFLOW_SSO_SIGNER_ARN", "unset them all"),
], ids=["target-group-arn", "not-an-arn", "china-partition", "no-issuer", "http-issuer", "claim-with-space",
        "group-claim-without-group", "group-without-claim", "key-url-aws", "key-url-private-ip", "key-url-ftp",
        "issuer-without-arn"])
def test_settings_errors_are_one_line_naming_the_variable(env, variable, allowed):
    with pytest.raises(ValueError) as e:
        sso_settings.from_env(env)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(variable) or f" {variable} " in f" {message} ", message
    assert allowed in message, message


def test_settings_values():
    assert sso_settings.from_env({}) is None
    assert sso_settings.from_env({"MLFLOW_SSO_SIGNER_ARN": "  ", "PATH": "/bin"}) is None
    s = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_ADMIN_USERS": " a@x.test, ,b@x.test ",
                               "MLFLOW_SSO_ADMIN_GROUP_CLAIM": "cognito:groups", "MLFLOW_SSO_ADMIN_GROUP": "admins"})
    assert (s.region, s.user_claim, s.admin_users) == ("eu-west-1", "email", frozenset({"a@x.test", "b@x.test"}))
    assert s.key_url == "https://public-keys.auth.elb.eu-west-1.amazonaws.com" and not s.key_url_is_test
    assert (s.admin_group_claim, s.admin_group) == ("cognito:groups", "admins")
    gov = SIGNER.replace("arn:aws:", "arn:aws-us-gov:").replace("eu-west-1", "us-gov-west-1")
    assert sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_SIGNER_ARN": gov}).key_url == \
        "https://s3-us-gov-west-1.amazonaws.com/aws-elb-public-keys-prod-us-gov-west-1"
    for url in ("http://127.0.0.1:8080/", "http://[::1]:9/keys", "http://localhost:1"):
        s = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": url})
        assert s.key_url == url.rstrip("/") and s.key_url_is_test


# --------------------------------------------------------------------------------------------
# the token check, in process, against the loopback key endpoint
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys():
    with AlbKeyEndpoint(slow_seconds=8) as endpoint:
        endpoint.kid = endpoint.new_key()
        yield endpoint


@pytest.fixture
def check(keys):
    settings = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": keys.url})
    cache = sso.KeyCache(settings.key_url)
    return lambda token: sso.verify(token, settings, cache)


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
    }


CASES = ["expired", "expired-in-header-only", "other-key", "forged-payload", "unsigned-alg-none", "wrong-signer",
         "no-signer", "wrong-issuer", "wrong-issuer-in-payload", "no-issuer", "no-exp", "unknown-kid",
         "kid-with-path", "not-a-jwt"]


def test_a_padded_token_signed_by_the_load_balancer_verifies(keys, check):
    token = keys.token(keys.kid, {"email": "ann@example.test", "groups": ["x"]}, signer=SIGNER, issuer=ISSUER)
    assert token.split(".")[2].endswith("=")  # padded, as the load balancer's
    claims = check(token)
    assert claims["email"] == "ann@example.test" and claims["iss"] == ISSUER


@pytest.mark.parametrize("case", CASES)
def test_the_token_check_refuses(keys, check, case):
    token, status, words = refusal_cases(keys)[case]
    with pytest.raises(sso.Refused) as e:
        check(token)
    assert (e.value.status, words in e.value.reason) == (status, True), e.value.reason


def test_a_key_endpoint_that_does_not_answer_is_503_not_a_hang_nor_a_pass(keys, check):
    token = keys.token(keys.slow_kid, {"email": "x@example.test"}, signer=SIGNER, issuer=ISSUER,
                       sign_with=keys.keys[keys.kid])
    with pytest.raises(sso.Refused) as e:
        check(token)
    assert e.value.status == 503 and "could not be reached" in e.value.reason, e.value.reason


def test_the_key_is_fetched_once_per_kid(keys, check):
    kid = keys.new_key()
    for i in range(5):
        check(keys.token(kid, {"email": f"k{i}@example.test"}, signer=SIGNER, issuer=ISSUER))
    assert keys.requests.count(f"/{kid}") == 1


def test_group_claim_and_list_make_admins():
    s = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_ADMIN_USERS": LIST_ADMIN,
                               "MLFLOW_SSO_ADMIN_GROUP_CLAIM": GROUP_CLAIM, "MLFLOW_SSO_ADMIN_GROUP": GROUP})
    assert sso.is_admin(LIST_ADMIN, {}, s)
    assert sso.is_admin("a@x", {GROUP_CLAIM: ["other", GROUP]}, s)
    assert sso.is_admin("a@x", {GROUP_CLAIM: GROUP}, s)
    assert not sso.is_admin("a@x", {GROUP_CLAIM: [f"{GROUP}-not"]}, s)
    assert not sso.is_admin("a@x", {GROUP_CLAIM: f"{GROUP} other"}, s)
    assert not sso.is_admin("a@x", {"other": [GROUP]}, s)


# --------------------------------------------------------------------------------------------
# the entrypoint: bad settings stop it with one line; the ini names the function only when on
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, words", [
    ({"MLFLOW_SSO_SIGNER_ARN": "my-load-balancer"}, ["MLFLOW_SSO_SIGNER_ARN", "loadbalancer/app"]),
    ({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": "https://keys.example.test"}, ["MLFLOW_SSO_KEY_URL", "tests only"]),
    ({**GOOD_ENV, "MLFLOW_SSO_ADMIN_GROUP_CLAIM": "groups"}, ["MLFLOW_SSO_ADMIN_GROUP"]),
], ids=["bad-arn", "key-url-not-loopback", "group-claim-alone"])
def test_the_entrypoint_refuses_bad_sso_settings_in_one_line(env, words):
    result = run_entrypoint({"MLFLOW_PORT": str(free_port()), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, **env},
                            timeout=60)
    assert result.returncode == 2, result.output
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert line.startswith("mlflow-entrypoint: error: "), line
    assert all(w in line for w in words), line
    assert ADMIN_PASSWORD not in result.output


# --------------------------------------------------------------------------------------------
# the server, for real
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def sso_server(db, keys, artifacts: Path):
    """The entrypoint with single sign-on on, on fresh databases of `db` prepared by the admin step."""
    name, auth_name, user = unique("sso"), unique("ssoa"), unique("ssou")[:30]
    prepare_databases(db, user, DB_PASSWORD, name, auth_name)
    env = {**database_env(db, user, DB_PASSWORD, name, auth_name), "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_AUTH_DEFAULT_PERMISSION": "READ",
           "MLFLOW_SSO_SIGNER_ARN": SIGNER, "MLFLOW_SSO_ISSUER": ISSUER,
           "MLFLOW_SSO_ADMIN_USERS": LIST_ADMIN, "MLFLOW_SSO_ADMIN_GROUP_CLAIM": GROUP_CLAIM,
           "MLFLOW_SSO_ADMIN_GROUP": GROUP, "MLFLOW_SSO_KEY_URL": keys.url}
    try:
        with Server(env) as srv:
            yield srv
    finally:
        for n in (name, auth_name):
            with contextlib.suppress(Exception):
                db.drop_database(n)
        with contextlib.suppress(Exception):
            drop_app_user(db, user)


@pytest.fixture(scope="module")
def maria(mariadb, keys, tmp_path_factory):
    with sso_server(mariadb, keys, tmp_path_factory.mktemp("sso-artifacts")) as srv:
        yield srv


@pytest.fixture(scope="module")
def pg(postgresql, keys, tmp_path_factory):
    with sso_server(postgresql, keys, tmp_path_factory.mktemp("sso-artifacts")) as srv:
        yield srv


def person(keys, email: str | None = None, **kw) -> tuple[str, dict]:
    email = email or f"p-{uuid.uuid4().hex[:8]}@example.test"
    return email, {HEADER: keys.token(keys.kid, {"email": email, **kw.pop("claims", {})}, signer=SIGNER,
                                      issuer=ISSUER, **kw)}


def get(srv, path, headers=None, auth=None, **kw):
    return requests.get(srv.url + path, headers=headers, auth=auth, timeout=60, **kw)


def admin_lookup(srv, username: str) -> requests.Response:
    return get(srv, "/api/2.0/mlflow/users/get", auth=(ADMIN, ADMIN_PASSWORD), params={"username": username})


def test_the_auth_ini_names_the_sso_function(maria):
    ini = (maria.spool / ".entrypoint" / "basic_auth.ini").read_text()
    assert "authorization_function = mlflow_auth_fastpath.sso:authenticate_request" in ini
    assert "single sign-on on" in maria.output()


@pytest.mark.parametrize("engine", ["maria", "pg"])
def test_a_valid_header_logs_the_person_in_and_creates_the_user(request, keys, engine):
    srv = request.getfixturevalue(engine)
    email, h = person(keys)
    assert admin_lookup(srv, email).status_code == 404  # not yet
    assert get(srv, "/").status_code == 401  # the UI without the header: basic auth, as before
    assert get(srv, "/", headers=h).status_code == 200  # the UI's page
    me = get(srv, "/ajax-api/2.0/mlflow/users/current", headers=h)
    assert me.status_code == 200, me.text
    assert me.json()["user"]["username"] == email and me.json()["user"]["is_admin"] is False
    assert me.json()["is_basic_auth"] is False
    looked_up = admin_lookup(srv, email)
    assert looked_up.status_code == 200 and looked_up.json()["user"]["is_admin"] is False
    # the default permission (READ) and nothing more: reads an experiment of the admin's, cannot rename it
    name = f"sso-{uuid.uuid4().hex[:8]}"
    created = requests.post(srv.url + "/api/2.0/mlflow/experiments/create", json={"name": name},
                            auth=(ADMIN, ADMIN_PASSWORD), timeout=60)
    assert created.status_code == 200, created.text
    exp_id = created.json()["experiment_id"]
    read = get(srv, "/ajax-api/2.0/mlflow/experiments/get", headers=h, params={"experiment_id": exp_id})
    assert read.status_code == 200, read.text
    rename = requests.post(srv.url + "/ajax-api/2.0/mlflow/experiments/update", headers=h, timeout=60,
                           json={"experiment_id": exp_id, "new_name": name + "-x"})
    assert rename.status_code == 403, rename.text
    # a second request: the same user, not a second one
    assert get(srv, "/ajax-api/2.0/mlflow/users/current", headers=h).json()["user"]["id"] == me.json()["user"]["id"]
    # nobody knows its password: basic auth as this user is refused
    assert get(srv, "/api/2.0/mlflow/users/current", auth=(email, "any-password-at-all")).status_code == 401


@pytest.mark.parametrize("case", CASES)
def test_a_bad_header_is_refused_on_ui_and_api_paths_without_fallback(maria, keys, case):
    token, status, _ = refusal_cases(keys)[case]
    for path in ("/ajax-api/2.0/mlflow/users/current", "/api/2.0/mlflow/experiments/search?max_results=1", "/"):
        r = get(maria, path, headers={HEADER: token})
        assert r.status_code == status, (path, r.status_code, r.text)
        # valid basic credentials do not rescue a bad header
        r = get(maria, path, headers={HEADER: token}, auth=(ADMIN, ADMIN_PASSWORD))
        assert r.status_code == status, (path, r.status_code, r.text)
    assert admin_lookup(maria, "eve@example.test").status_code == 404
    assert admin_lookup(maria, "admin@example.test").status_code == 404


def test_a_forged_header_on_an_api_request_is_401(maria, keys):
    """A programmatic path (/api/...) has no login at the load balancer: anyone can send the header
    there. Signed by another key (the forger's), a write must be refused, not trusted."""
    forger = ec.generate_private_key(ec.SECP256R1())
    token = keys.token(keys.kid, {"email": LIST_ADMIN}, signer=SIGNER, issuer=ISSUER, sign_with=forger)
    r = requests.post(maria.url + "/api/2.0/mlflow/experiments/create", headers={HEADER: token},
                      json={"name": f"forged-{uuid.uuid4().hex[:6]}"}, timeout=60)
    assert r.status_code == 401, r.text
    assert admin_lookup(maria, LIST_ADMIN).status_code in (200, 404)  # (another test may log in as the list admin)


def test_a_key_endpoint_that_does_not_answer_is_503(maria, keys):
    token = keys.token(keys.slow_kid, {"email": "slow@example.test"}, signer=SIGNER, issuer=ISSUER,
                       sign_with=keys.keys[keys.kid])
    r = get(maria, "/ajax-api/2.0/mlflow/users/current", headers={HEADER: token})
    assert r.status_code == 503, r.text
    assert get(maria, "/ajax-api/2.0/mlflow/users/current", headers=person(keys)[1]).status_code == 200


def test_the_basic_auth_admin_is_not_reachable_through_sso(maria, keys):
    token = keys.token(keys.kid, {"email": ADMIN, "groups": []}, signer=SIGNER, issuer=ISSUER)
    assert get(maria, "/ajax-api/2.0/mlflow/users/current", headers={HEADER: token}).status_code == 403
    assert admin_lookup(maria, ADMIN).json()["user"]["is_admin"] is True  # not demoted


def is_admin_now(srv, h) -> bool:
    me = get(srv, "/ajax-api/2.0/mlflow/users/current", headers=h)
    assert me.status_code == 200, me.text
    # an admin-only read: another user's record (a non-admin may read only its own)
    other = get(srv, "/ajax-api/2.0/mlflow/users/get", headers=h, params={"username": ADMIN})
    assert other.status_code == (200 if me.json()["user"]["is_admin"] else 403), other.text
    return me.json()["user"]["is_admin"]


def test_admin_by_group_claim_is_granted_and_revoked_with_the_claim(maria, keys):
    email = f"g-{uuid.uuid4().hex[:8]}@example.test"
    member = person(keys, email, claims={GROUP_CLAIM: ["staff", GROUP]})[1]
    not_member = person(keys, email, claims={GROUP_CLAIM: ["staff"]})[1]
    assert is_admin_now(maria, not_member) is False
    assert is_admin_now(maria, member) is True
    assert admin_lookup(maria, email).json()["user"]["is_admin"] is True
    assert is_admin_now(maria, not_member) is False  # revoked on the next request without the group
    assert admin_lookup(maria, email).json()["user"]["is_admin"] is False
    assert is_admin_now(maria, person(keys, email)[1]) is False  # no group claim at all


def test_admin_by_list(maria, keys):
    h = person(keys, LIST_ADMIN, claims={GROUP_CLAIM: ["staff"]})[1]
    assert is_admin_now(maria, h) is True
    # an admin made by hand is demoted at its next SSO request: the settings decide
    email, h2 = person(keys)
    assert is_admin_now(maria, h2) is False
    r = requests.patch(maria.url + "/api/2.0/mlflow/users/update-admin", auth=(ADMIN, ADMIN_PASSWORD), timeout=60,
                       json={"username": email, "is_admin": True})
    assert r.status_code == 200, r.text
    assert is_admin_now(maria, h2) is False


CLIENT = r"""
import sys, mlflow
from mlflow import MlflowClient
c = MlflowClient()
exp = c.create_experiment(sys.argv[1])
run = c.create_run(exp)
c.log_metric(run.info.run_id, "loss", 0.5, step=1)
with open(sys.argv[2], "w") as f:
    f.write("hello")
c.log_artifact(run.info.run_id, sys.argv[2])
back = c.download_artifacts(run.info.run_id, "a.txt", sys.argv[3])
print("METRIC", c.get_metric_history(run.info.run_id, "loss")[0].value, "ARTIFACT", open(back).read())
"""


def test_basic_auth_clients_keep_working(maria, tmp_path):
    """The MLflow client with a username and password, as training jobs use it: REST calls (Flask)
    and a proxied artifact upload and download (routes FastAPI serves itself)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=maria.url, MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD,
               NO_PROXY="127.0.0.1,localhost")
    (tmp_path / "back").mkdir()
    p = subprocess.run([sys.executable, "-c", CLIENT, f"basic-{uuid.uuid4().hex[:8]}", str(tmp_path / "a.txt"),
                        str(tmp_path / "back")], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "METRIC 0.5 ARTIFACT hello" in p.stdout
    seen = re.findall(r'"(GET|PUT) (/api/2\.0/mlflow-artifacts/artifacts/\S*) HTTP/1\.1" (\d+)', maria.output())
    assert {(m, s) for m, _, s in seen} >= {("PUT", "200"), ("GET", "200")}, seen
    # and a wrong password is still refused, on both kinds of route
    assert get(maria, "/api/2.0/mlflow/experiments/search?max_results=1", auth=(ADMIN, "wrong-password-123")).status_code == 401
    assert get(maria, "/api/2.0/mlflow-artifacts/artifacts/0/x/artifacts/a.txt",
               auth=(ADMIN, "wrong-password-123")).status_code == 401


def test_a_person_downloads_an_artifact_through_the_fastapi_route(maria, keys, tmp_path):
    """The UI's artifact download on a route FastAPI serves itself: the header is checked there
    too (MLflow's bridge), and a forged one is refused."""
    created = requests.post(maria.url + "/api/2.0/mlflow/experiments/create", auth=(ADMIN, ADMIN_PASSWORD),
                            json={"name": f"art-{uuid.uuid4().hex[:8]}"}, timeout=60).json()["experiment_id"]
    put = requests.put(f"{maria.url}/api/2.0/mlflow-artifacts/artifacts/{created}/r/artifacts/f.txt", data=b"bytes",
                       auth=(ADMIN, ADMIN_PASSWORD), timeout=60)
    assert put.status_code == 200, put.text
    path = f"/ajax-api/2.0/mlflow-artifacts/artifacts/{created}/r/artifacts/f.txt"
    r = get(maria, path, headers=person(keys)[1])
    assert (r.status_code, r.content) == (200, b"bytes"), r.text
    forged = keys.token(keys.kid, {"email": "eve@example.test"}, signer=SIGNER, issuer=ISSUER,
                        sign_with=ec.generate_private_key(ec.SECP256R1()))
    assert get(maria, path, headers={HEADER: forged}).status_code == 401
    assert get(maria, path).status_code == 401


def test_the_gateways_own_credential_header_still_works(maria):
    """On /gateway/ routes (served by FastAPI itself) MLflow takes basic credentials from
    X-MLflow-Authorization (the Authorization header carries a coding agent's provider key there).
    With single sign-on configured a request without x-amzn-oidc-data still gets that check
    (mlflow_auth_fastpath.sso.install), not only the Authorization header."""
    creds = base64.b64encode(f"{ADMIN}:{ADMIN_PASSWORD}".encode()).decode()
    r = get(maria, "/gateway/mlflow/v1/models", headers={"X-MLflow-Authorization": f"Basic {creds}"})
    assert r.status_code == 200, (r.status_code, r.text[:300])
    wrong = base64.b64encode(f"{ADMIN}:wrong-password-123".encode()).decode()
    assert get(maria, "/gateway/mlflow/v1/models", headers={"X-MLflow-Authorization": f"Basic {wrong}"}).status_code == 401
