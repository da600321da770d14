"""Credentials are checked correctly and cheaply (issue 14 item 1): a password change, a user's
deletion and an admin demotion apply to the very next request on every worker of every task,
and a repeated valid credential does not pay scrypt again.

MLflow 3.17.2's own credential cache (``auth_cache_ttl_seconds``, ``_USER_AUTH_CACHE`` in
mlflow/server/auth/__init__.py; its shipped basic_auth.ini says "Other workers in a multi-worker
deployment may continue to accept the old credential until the TTL expires") keeps the ``User``
row read when a credential was first verified, and forgets it only on the worker that handled the
change. The fast path (image/plugins/mlflow_auth_fastpath/credentials.py) keeps only the scrypt
verdict, keyed by the stored hash it was checked against, and reads the user's row every request.

The cluster tests use the session's stack: two entrypoint processes ("tasks", two workers each)
on one database per engine; changes go through one, requests through the other.
"""

from __future__ import annotations

import textwrap
import uuid

import requests

from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.support.auth_in_process import run_in_process
from tests.support.auth_pair import shared_env
from tests.support.server import ENTRYPOINT, Server

API = "/api/2.0/mlflow"
ADMIN_AUTH = (ADMIN, ADMIN_PASSWORD)
REPEAT = 30


def new_user(server, admin: bool = False) -> tuple[str, str]:
    creds = (f"cc-{uuid.uuid4().hex[:10]}", f"old-password-{uuid.uuid4().hex[:10]}")
    r = requests.post(server.url + API + "/users/create", json={"username": creds[0], "password": creds[1]},
                      auth=ADMIN_AUTH, timeout=30)
    assert r.status_code == 200, r.text
    if admin:
        set_admin(server, creds[0], True)
    return creds


def set_admin(server, username: str, is_admin: bool) -> None:
    r = requests.patch(server.url + API + "/users/update-admin", json={"username": username, "is_admin": is_admin},
                       auth=ADMIN_AUTH, timeout=30)
    assert r.status_code == 200, r.text


def read(server, auth) -> int:
    """An authenticated Flask route any user may call (the Default experiment, READ by default)."""
    return requests.get(server.url + API + "/experiments/get", params={"experiment_id": "0"}, auth=auth,
                        timeout=30).status_code


def traces(server, auth) -> int:
    """A native FastAPI route (OTLP ingestion; MLflow's FastAPI permission middleware): an admin
    skips its validator (then 400: the body is empty), anyone else needs EDIT on the experiment
    (READ by default: 403)."""
    return requests.post(server.url + "/v1/traces", data=b"", auth=auth, timeout=30,
                         headers={"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": "0"}).status_code


def admin_only(server, auth) -> int:
    """users/delete is for admins only (validate_can_delete_user denies everyone else); an admin
    deleting a user that does not exist gets 404, anyone else 403."""
    return requests.delete(server.url + API + "/users/delete", json={"username": f"nobody-{uuid.uuid4().hex}"},
                           auth=auth, timeout=30).status_code


def warm(server, auth, call=read, want: int = 200) -> None:
    """Enough requests that both workers of the process have verified (and cached) the credential."""
    assert [call(server, auth) for _ in range(8)] == [want] * 8


def test_a_password_change_applies_at_once_on_the_other_task(stack):
    a, b = stack.a, stack.b
    user, old = new_user(a)
    warm(b, (user, old))
    warm(b, (user, old), traces, 403)
    new = f"new-password-{uuid.uuid4().hex[:10]}"
    r = requests.patch(a.url + API + "/users/update-password", json={"username": user, "password": new},
                       auth=ADMIN_AUTH, timeout=30)
    assert r.status_code == 200, r.text
    flask_codes = [read(b, (user, old)) for _ in range(REPEAT)]
    fastapi_codes = [traces(b, (user, old)) for _ in range(REPEAT)]
    assert (flask_codes.count(200), fastapi_codes.count(403)) == (0, 0), (flask_codes, fastapi_codes)
    assert flask_codes == [401] * REPEAT and fastapi_codes == [401] * REPEAT
    assert [read(a, (user, old)) for _ in range(4)] == [401] * 4
    assert [read(s, (user, new)) for s in (a, b, b, b)] == [200] * 4
    assert traces(b, (user, new)) == 403


def test_mlflows_own_app_keeps_no_stale_credential_with_its_cache_off(stack):
    """With MLFLOW_AUTH_FASTPATH=false (MLflow's `basic-auth` app) MLflow's own credential cache keeps
    the user record and may accept a changed password on other workers until its TTL ends (MLflow's
    basic_auth.ini says so); the start-up line says it. With MLFLOW_AUTH_CACHE_TTL_SECONDS=0 it is off:
    one scrypt hash per request, never stale."""
    env = shared_env(stack.a) | {"MLFLOW_AUTH_FASTPATH": "false"}
    with Server(env) as stock:
        assert ("credential cache 60 s, MLflow's own: other workers and tasks may accept a changed password "
                "for up to 60 s") in stock.output()
    with Server(env | {"MLFLOW_AUTH_CACHE_TTL_SECONDS": "0"}) as stock:
        assert "auth on (basic-auth; default permission READ, credential cache off)" in stock.output()
        user, old = new_user(stack.a)
        warm(stock, (user, old))
        new = f"new-password-{uuid.uuid4().hex[:10]}"
        r = requests.patch(stack.a.url + API + "/users/update-password", json={"username": user, "password": new},
                           auth=ADMIN_AUTH, timeout=30)
        assert r.status_code == 200, r.text
        assert [read(stock, (user, old)) for _ in range(10)] == [401] * 10
        assert read(stock, (user, new)) == 200


def test_a_deleted_user_is_refused_at_once_on_the_other_task(stack):
    a, b = stack.a, stack.b
    user, password = new_user(a)
    warm(b, (user, password))
    warm(b, (user, password), traces, 403)
    r = requests.delete(a.url + API + "/users/delete", json={"username": user}, auth=ADMIN_AUTH, timeout=30)
    assert r.status_code == 200, r.text
    assert [read(b, (user, password)) for _ in range(REPEAT)] == [401] * REPEAT
    assert [traces(b, (user, password)) for _ in range(REPEAT)] == [401] * REPEAT


def test_a_demoted_admin_is_refused_at_once_on_the_other_task(stack):
    a, b = stack.a, stack.b
    user, password = new_user(a, admin=True)
    warm(b, (user, password), admin_only, 404)
    warm(b, (user, password), traces, 400)  # an admin skips the trace validator: MLflow refuses the empty export
    set_admin(a, user, False)
    assert [admin_only(b, (user, password)) for _ in range(REPEAT)] == [403] * REPEAT
    assert [traces(b, (user, password)) for _ in range(REPEAT)] == [403] * REPEAT
    assert read(b, (user, password)) == 200  # still a user, no longer an admin
    set_admin(a, user, True)  # and back: the flag is read again, not a cached refusal
    assert [admin_only(b, (user, password)) for _ in range(4)] == [404] * 4


# ---------------------------------------------------------------------------------------------
# In one server process (a subprocess: MLflow's auth module reads its configuration at import),
# MLflow's basic-auth app through Flask's test client.
# MLflow's basic-auth app with the fast path installed, counting werkzeug's check_password_hash
# (what SqlAlchemyStore.authenticate_user calls) and the reads of the user's row
# (SqlAlchemyStore._get_user, under authenticate_user and get_user alike).
_IN_PROCESS = textwrap.dedent("""
    import base64, json, sys
    from werkzeug import security
    import mlflow.server.auth.sqlalchemy_store as sas

    counts = {"pbkdf2": 0, "user_reads": 0}
    check, get_user_row = security.check_password_hash, sas.SqlAlchemyStore._get_user

    def counting_check(pwhash, password):
        counts["pbkdf2"] += 1
        return check(pwhash, password)

    def counting_read(*args, **kwargs):
        counts["user_reads"] += 1
        return get_user_row(*args, **kwargs)

    security.check_password_hash = sas.check_password_hash = counting_check
    sas.SqlAlchemyStore._get_user = staticmethod(counting_read)

    import mlflow_auth_fastpath
    from mlflow.server import auth

    client = mlflow_auth_fastpath.create_app().test_client()
    auth.store.create_user("carol", "carol-password-1")
    out = {}

    def calls(name, password, n=3, path="/api/2.0/mlflow/experiments/get?experiment_id=0"):
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        got = []
        for _ in range(n):
            before = dict(counts)
            status = client.get(path, headers={"Authorization": "Basic " + token}).status_code
            got.append([status, counts["pbkdf2"] - before["pbkdf2"], counts["user_reads"] - before["user_reads"]])
        return got

    out["carol"] = calls("carol", "carol-password-1")
    out["wrong password"] = calls("carol", "not-her-password", n=2)
    auth.store.update_user("carol", password="carol-password-2")  # as another task would: not through this process
    out["old password after change"] = calls("carol", "carol-password-1", n=2)
    out["new password"] = calls("carol", "carol-password-2")
    before = counts["pbkdf2"]
    fastapi_path = [bool(auth._authenticate_cached("carol", "carol-password-2")) for _ in range(3)]
    out["fastapi path"] = [fastapi_path, counts["pbkdf2"] - before]
    kept = getattr(auth, "_mlflow_auth_fastpath_credentials", None)  # digest -> time verified, nothing else
    out["hmac keys only"] = bool(kept is not None and len(kept) and all(
        type(k) is bytes and len(k) == 32 and type(v) is float for k, v in kept._entries.items()))
    print("RESULT " + json.dumps(out))
""")


def test_a_repeated_valid_credential_is_verified_once(tmp_path):
    """scrypt (werkzeug's check_password_hash) runs once per credential, then not again while its
    stored hash is unchanged; each request reads the user's row once (the read the permission
    check makes anyway); a new stored hash is verified again."""
    out = run_in_process(_IN_PROCESS, tmp_path, 60)
    # [status, scrypt runs, reads of the user's row] per request
    assert out["carol"] == [[200, 1, 1], [200, 0, 1], [200, 0, 1]], out
    assert out["wrong password"] == [[401, 1, 1], [401, 1, 1]], out
    assert out["old password after change"] == [[401, 1, 1], [401, 1, 1]], out
    assert out["new password"] == [[200, 1, 1], [200, 0, 1], [200, 0, 1]], out
    assert out["fastapi path"] == [[True, True, True], 0], out
    assert out["hmac keys only"] is True, out


def test_the_verified_credentials_are_a_bounded_lru_with_a_max_age(monkeypatch):
    """credentials.VerifiedCredentials on its own: at most max_size entries (least recently used
    out first), an entry verified again after max_age seconds, a rejected password never kept,
    0 = keep nothing (werkzeug's check_password_hash on every call, as MLflow with its cache off)."""
    import importlib

    from werkzeug.security import generate_password_hash

    monkeypatch.syspath_prepend(str(ENTRYPOINT.parent / "plugins"))
    credentials = importlib.import_module("mlflow_auth_fastpath.credentials")
    runs: list[str] = []
    real = credentials.security.check_password_hash
    monkeypatch.setattr(credentials.security, "check_password_hash",
                        lambda pwhash, password: runs.append(password) or real(pwhash, password))
    hashes = {p: generate_password_hash(p, method="pbkdf2:sha256:1000") for p in ("p1", "p2", "p3")}
    now = [0.0]
    kept = credentials.VerifiedCredentials(max_size=2, max_age=60, clock=lambda: now[0])

    assert [kept.check("u", p, hashes[p]) for p in ("p1", "p2", "p1", "p2")] == [True] * 4
    assert runs == ["p1", "p2"] and len(kept) == 2
    assert kept.check("u", "p3", hashes["p3"]) and len(kept) == 2  # p1 (least recently used) goes
    assert kept.check("u", "p2", hashes["p2"]) and runs == ["p1", "p2", "p3"]
    assert kept.check("u", "p1", hashes["p1"]) and runs[-1] == "p1"
    assert not kept.check("u", "wrong", hashes["p1"]) and not kept.check("u", "wrong", hashes["p1"])
    assert runs[-2:] == ["wrong", "wrong"]
    assert not kept.check("u", "p1", hashes["p2"]) and runs[-1] == "p1"  # a kept password, another stored hash
    before = len(runs)
    assert kept.check("v", "p1", hashes["p1"]) and len(runs) == before + 1  # another user: verified for itself
    now[0] = 61.0
    runs.clear()
    assert kept.check("u", "p1", hashes["p1"]) and runs == ["p1"]  # older than max_age: verified again
    off = credentials.VerifiedCredentials(max_size=10, max_age=0)
    runs.clear()
    assert [off.check("u", "p1", hashes["p1"]) for _ in range(3)] == [True] * 3 and runs == ["p1"] * 3
    assert len(off) == 0
    assert all(type(k) is bytes and len(k) == 32 for k in kept._entries)  # HMAC-SHA256 digests, no password


# The user store's database fails the way a paused or unreachable one does: SQLAlchemy raises
# OperationalError in the user lookup, and MLflow's ManagedSessionMaker
# (mlflow/store/db/utils.py, _get_managed_session_maker) turns it into MlflowException
# TEMPORARILY_UNAVAILABLE (HTTP 503, which the MLflow client retries).
_DB_DOWN = textwrap.dedent("""
    import base64, json, sys
    import sqlalchemy
    import mlflow.server.auth.sqlalchemy_store as sas

    app_name = sys.argv[1]
    if app_name == "basic-auth-fastpath":
        import mlflow_auth_fastpath
        app = mlflow_auth_fastpath.create_app()
    else:
        from mlflow.server.auth import create_app
        from mlflow.server import app as flask_app
        app = create_app(flask_app)
    from mlflow.server import auth

    auth.store.create_user("dave", "dave-password-1")
    client = app.test_client()

    def status(name, password):
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        return client.get("/api/2.0/mlflow/experiments/get?experiment_id=0",
                          headers={"Authorization": "Basic " + token}).status_code

    out = {"up": status("dave", "dave-password-1"), "no such user": status("nobody", "x")}
    get_user_row = sas.SqlAlchemyStore._get_user

    def down(*args, **kwargs):
        raise sqlalchemy.exc.OperationalError("SELECT users", {}, Exception("server has gone away"))

    sas.SqlAlchemyStore._get_user = staticmethod(down)
    out["down"] = status("dave", "dave-password-1")
    sas.SqlAlchemyStore._get_user = staticmethod(get_user_row)
    out["up again"] = status("dave", "dave-password-1")
    print("RESULT " + json.dumps(out))
""")


def test_a_database_outage_is_503_not_a_failed_login(tmp_path):
    """A user store that cannot be read is a 503 (MLflow's TEMPORARILY_UNAVAILABLE, retried by the
    client), as with MLflow's own basic-auth app and its cache off (SqlAlchemyStore.authenticate_user
    answers False only for the lookup's own errors: no such user); never a 401 that sends a
    browser to the login prompt and makes the client give up. A missing user stays 401."""
    got = {}
    for app_name in ("basic-auth", "basic-auth-fastpath"):
        work = tmp_path / app_name
        work.mkdir()
        got[app_name] = run_in_process(_DB_DOWN, work, 0, app_name)
    assert got["basic-auth"] == {"up": 200, "no such user": 401, "down": 503, "up again": 200}, got
    assert got["basic-auth-fastpath"] == got["basic-auth"], got
