"""Single sign-on through the load balancer (issue 15, items 3 and 4), the server for real: the
entrypoint with single sign-on on a MariaDB (user creation on PostgreSQL too), driven over HTTP as
the UI and the MLflow client drive it. It trusts `x-amzn-oidc-data` only when the load balancer
signed it, and basic auth stays as it was. The settings and the token check in process:
tests/server/test_sso_tokens.py.

The stand-in (tests/support/alb_keys.py) follows the Elastic Load Balancing User Guide,
"Authenticate users using an Application Load Balancer", "User claims encoding and signature
verification"; the public key of a kid is served on a loopback endpoint named by
MLFLOW_SSO_KEY_URL (tests only: the server refuses any other host). Not here: a real load
balancer, its key endpoint and a real identity provider's token.
"""

from __future__ import annotations

import base64
import contextlib
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
from tests.support.alb_keys import AlbKeyEndpoint
from tests.support.dbadmin import drop_app_user, prepare_databases
from tests.support.peers import free_port
from tests.support.server import Server, database_env, run_entrypoint
from tests.support.sso_cases import CASES, GOOD_ENV, GROUP, GROUP_CLAIM, HEADER, ISSUER, LIST_ADMIN, SIGNER, refusal_cases


@pytest.fixture(scope="module")
def keys():
    with AlbKeyEndpoint(slow_seconds=8) as endpoint:
        endpoint.kid = endpoint.new_key()
        yield endpoint


NO_DESTINATION = {"MLFLOW_BACKEND_STORE_URI": "mysql+pymysql://mlflow:not-used-1@127.0.0.1:9/mlflow"}


# --------------------------------------------------------------------------------------------
# the entrypoint: bad settings stop it with one line; the ini names the function only when on
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, words", [
    ({"MLFLOW_SSO_SIGNER_ARN": "my-load-balancer"}, ["MLFLOW_SSO_SIGNER_ARN", "loadbalancer/app"]),
    ({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": "https://keys.example.test"}, ["MLFLOW_SSO_KEY_URL", "tests only"]),
    ({**GOOD_ENV, "MLFLOW_SSO_ADMIN_GROUP_CLAIM": "groups"}, ["MLFLOW_SSO_ADMIN_GROUP"]),
    # single sign-on runs only in the fast path's app (its create_app installs it for FastAPI's routes);
    # a database server without an artifacts destination: were this not checked, that would be the line
    ({**GOOD_ENV, **NO_DESTINATION, "MLFLOW_AUTH_FASTPATH": "false"},
     ["MLFLOW_AUTH_FASTPATH=false", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "single sign-on"]),
    ({**GOOD_ENV, **NO_DESTINATION, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"},
     ["MLFLOW_AUTH_FASTPATH", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true", "single sign-on"]),
], ids=["bad-arn", "key-url-not-loopback", "group-claim-alone", "without-fast-path", "with-job-runner"])
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
    if db.engine == "mysql":  # the test peer's collation is utf8mb4_bin; MySQL's and MariaDB's defaults
        # (utf8mb4_0900_ai_ci, utf8mb4_general_ci) ignore case: user names as a default database compares them
        db.execute(f"ALTER TABLE `{auth_name}`.users CONVERT TO CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
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


def test_a_claim_naming_an_existing_user_in_other_letters_is_403(maria, keys):
    """MariaDB's default collation ignores case: get_user('ADMIN') finds the row 'admin'. The claim
    must not reach (nor demote) the basic-auth admin, nor take over another person's user."""
    for name in (ADMIN.upper(), ADMIN.capitalize()):
        token = keys.token(keys.kid, {"email": name, "groups": []}, signer=SIGNER, issuer=ISSUER)
        r = get(maria, "/ajax-api/2.0/mlflow/users/current", headers={HEADER: token})
        assert r.status_code == 403, (name, r.status_code, r.text)
    assert admin_lookup(maria, ADMIN).json()["user"]["is_admin"] is True  # not demoted
    email, h = person(keys, f"Case-{uuid.uuid4().hex[:8]}@example.test")
    assert get(maria, "/ajax-api/2.0/mlflow/users/current", headers=h).status_code == 200
    other = person(keys, email.lower(), claims={GROUP_CLAIM: [GROUP]})[1]  # and an admin by the group
    r = get(maria, "/ajax-api/2.0/mlflow/users/current", headers=other)
    assert r.status_code == 403, (r.status_code, r.text)
    assert admin_lookup(maria, email).json()["user"]["is_admin"] is False


def test_the_header_with_an_authorization_header_is_401(maria, keys):
    """MLflow's job handlers (mlflow/server/handlers.py, the job runner) take a job's user from the
    Authorization header, whatever the authorization function decided: a signed-in person must not
    name another user there. On Flask's routes and FastAPI's own (MLflow's bridge) alike."""
    h = person(keys)[1]
    for password in ("x", ADMIN_PASSWORD):
        basic = "Basic " + base64.b64encode(f"{ADMIN}:{password}".encode()).decode()
        for path in ("/ajax-api/2.0/mlflow/users/current", "/api/2.0/mlflow/experiments/search?max_results=1",
                     "/ajax-api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/none.txt", "/gateway/mlflow/v1/models"):
            r = get(maria, path, headers={**h, "Authorization": basic})
            assert r.status_code == 401, (path, r.status_code, r.text[:300])
            assert "Authorization" in r.text, (path, r.text[:300])
    assert get(maria, "/ajax-api/2.0/mlflow/users/current", headers=h).status_code == 200


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

