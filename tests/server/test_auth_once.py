"""One request, one credential check (issue 14 item 4): the auth fast path verifies a request's
basic-auth credentials once, however many times MLflow's permission code asks who the caller is.

MLflow 3.17.2's basic-auth app (mlflow/server/auth/__init__.py) calls ``authenticate_request()``
wherever it needs the caller's name: in ``_before_request`` itself, again in ``sender_is_admin``,
again in the route's validator (``_validate_can_update_run_and_models`` for log-metric,
``validate_can_create_experiment`` ...), and again in after-request handlers
(``set_can_manage_experiment_permission`` for experiments/create). Each call re-verifies the
password: with ``auth_cache_ttl_seconds = 0`` a scrypt hash each time (MLflow's own documented
setting, basic_auth.ini), otherwise a credential-cache lookup each time. Native FastAPI routes
(``fastapi_permission_middleware``, e.g. OTLP ``/v1/traces``) authenticate once already.

The test drives the ASGI app uvicorn serves (``_MLFLOW_SGI_NAME=uvicorn``: MLflow's FastAPI app,
its permission middleware, the WSGI bridge, Flask) in one process and counts, per request, the
fast path's credential checks (``VerifiedCredentials.check``) and werkzeug's
``check_password_hash`` (scrypt). It also checks that the verdict stays with its request: two
requests inside one pushed Flask app context (where ``flask.g`` outlives a request) with a good,
then a wrong password: the second is refused.
"""

from __future__ import annotations

import textwrap

from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.support.auth_in_process import run_in_process

_IN_PROCESS = textwrap.dedent("""
    import asyncio, base64, json, sys, time
    from werkzeug import security
    import mlflow.server.auth.sqlalchemy_store as sas

    counts = {"checks": 0, "scrypt": 0}
    real_hash_check = security.check_password_hash

    def counting_hash_check(pwhash, password):
        counts["scrypt"] += 1
        return real_hash_check(pwhash, password)

    security.check_password_hash = sas.check_password_hash = counting_hash_check

    from mlflow_auth_fastpath import credentials
    real_check = credentials.VerifiedCredentials.check

    def counting_check(self, *args, **kwargs):
        counts["checks"] += 1
        return real_check(self, *args, **kwargs)

    credentials.VerifiedCredentials.check = counting_check

    import mlflow_auth_fastpath
    from mlflow.server import auth

    app = mlflow_auth_fastpath.create_app()  # the FastAPI app (uvicorn), Flask mounted inside
    assert not hasattr(app, "test_client"), type(app)
    auth.store.create_user("erin", "erin-password-1")

    def header(name, password):
        return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()

    async def call(method, path, auth_header, body=None, headers=()):
        path, _, query = path.partition("?")
        data = json.dumps(body).encode() if body is not None else b""
        hdrs = [(b"host", b"127.0.0.1"), (b"authorization", auth_header.encode()),
                (b"content-length", str(len(data)).encode())]
        if body is not None:
            hdrs.append((b"content-type", b"application/json"))
        hdrs += [(k.encode(), v.encode()) for k, v in headers]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": query.encode(), "headers": hdrs, "client": ("127.0.0.1", 50000),
                 "server": ("127.0.0.1", 5000)}
        sent = []
        async def receive():
            if not sent:
                sent.append(True)
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.Event().wait()  # the client stays connected
        out = {"status": None, "body": b""}
        async def send(message):
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")
        await app(scope, receive, send)
        return out

    log = []

    def request(label, method, path, who, body=None, headers=()):
        before = dict(counts)
        out = asyncio.run(call(method, path, header(*who), body, headers))
        log.append([label, out["status"], counts["checks"] - before["checks"], counts["scrypt"] - before["scrypt"]])
        return json.loads(out["body"]) if out["body"][:1] == b"{" else None

    erin = ("erin", "erin-password-1")
    admin = (sys.argv[1], sys.argv[2])
    experiment_id = request("create experiment", "POST", "/api/2.0/mlflow/experiments/create", erin,
                            {"name": "auth-once"})["experiment_id"]
    run_id = request("create run", "POST", "/api/2.0/mlflow/runs/create", erin,
                     {"experiment_id": experiment_id, "start_time": 0})["run"]["info"]["run_id"]
    metric = {"run_id": run_id, "key": "m", "value": 1.0, "timestamp": int(time.time() * 1000), "step": 0}
    for _ in range(3):
        request("log_metric", "POST", "/api/2.0/mlflow/runs/log-metric", erin, metric)
    request("get experiment", "GET", f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}", erin)
    request("wrong password", "POST", "/api/2.0/mlflow/runs/log-metric", ("erin", "not-her-password"), metric)
    request("admin log_metric", "POST", "/api/2.0/mlflow/runs/log-metric", admin, metric)
    request("otlp /v1/traces (native FastAPI)", "POST", "/v1/traces", erin, None,
            [("content-type", "application/x-protobuf"), ("x-mlflow-experiment-id", experiment_id)])

    # flask.g lives as long as the app context; a pushed one spans requests (Flask reuses it)
    flask_app = auth.app
    client = flask_app.test_client()
    path = f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    with flask_app.app_context():
        same_context = [client.get(path, headers={"Authorization": header(*erin)}).status_code,
                        client.get(path, headers={"Authorization": header("erin", "wrong")}).status_code,
                        client.get(path).status_code]
    print("RESULT " + json.dumps({"requests": log, "one app context": same_context}))
""")


def _run(tmp_path, ttl: int) -> dict:
    work = tmp_path / f"ttl{ttl}"
    work.mkdir()
    return run_in_process(_IN_PROCESS, work, ttl, ADMIN, ADMIN_PASSWORD, extra_env={"_MLFLOW_SGI_NAME": "uvicorn"})


EXPECTED_STATUS = {"create experiment": 200, "create run": 200, "log_metric": 200, "get experiment": 200,
                   "wrong password": 401, "admin log_metric": 200,
                   "otlp /v1/traces (native FastAPI)": 400}  # validator passes (MANAGE); the empty body is refused


def test_each_request_checks_its_credentials_once_scrypt_each_time_with_the_cache_off(tmp_path):
    """auth_cache_ttl_seconds = 0: one scrypt hash per request (MLflow's basic-auth app: one per
    authenticate_request() call, 3 for a regular user's log_metric, 4 for experiments/create)."""
    out = _run(tmp_path, ttl=0)
    # [label, status, the fast path's credential checks, scrypt hashes] per request
    assert [[label, status] for label, status, _, _ in out["requests"]] == \
        [[label, EXPECTED_STATUS[label]] for label, _, _, _ in out["requests"]], out
    assert [[label, checks, scrypt] for label, _, checks, scrypt in out["requests"]] == \
        [[label, 1, 1] for label, _, _, _ in out["requests"]], out
    assert out["one app context"] == [200, 401, 401], out


def test_each_request_checks_its_credentials_once_with_the_cache_on(tmp_path):
    """auth_cache_ttl_seconds = 60 (the image's default): one credential check (one HMAC) per
    request; scrypt only for a credential's first request (and every wrong password)."""
    out = _run(tmp_path, ttl=60)
    assert [[label, status] for label, status, _, _ in out["requests"]] == \
        [[label, EXPECTED_STATUS[label]] for label, _, _, _ in out["requests"]], out
    assert [[label, checks] for label, _, checks, _ in out["requests"]] == \
        [[label, 1] for label, _, _, _ in out["requests"]], out
    scrypt = {label: s for label, _, _, s in out["requests"] if label in ("create experiment", "wrong password",
                                                                           "admin log_metric")}
    assert scrypt == {"create experiment": 1, "wrong password": 1, "admin log_metric": 1}, out
    assert sum(s for label, _, _, s in out["requests"]) == 3, out  # every other request: 0
    assert out["one app context"] == [200, 401, 401], out
