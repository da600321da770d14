"""image/plugins/mlflow_spool_guard without Docker: the ASGI middleware on stand-in apps that fail the
way MLflow 3.17.2's artifact handlers fail on a full spool (mlflow/server/artifact_router.py:
`upload_artifact` lets the OSError ENOSPC of `f.write` escape; `download_artifact` and the Flask
`_send_artifact` return a JSON 500 whose message carries "[Errno 28] No space left on device",
mlflow/store/artifact/artifact_repo.py, download_artifacts). The real thing, with a real ENOSPC, is
tests/container/test_spool_full.py."""

from __future__ import annotations

import asyncio
import errno
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "image" / "plugins"))
import mlflow_spool_guard as guard  # noqa: E402

UPLOAD = "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.bin"


def call(app, method="PUT", path=UPLOAD, headers=(), body=b"x" * 10) -> tuple[list[dict], BaseException | None]:
    sent: list[dict] = []
    chunks = [body]

    async def receive():
        return {"type": "http.request", "body": chunks.pop() if chunks else b"", "more_body": False}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
    try:
        asyncio.run(guard.SpoolGuard(app)(scope, receive, send))
    except BaseException as e:  # noqa: BLE001 - returned for the test to inspect
        return sent, e
    return sent, None


def answer(sent: list[dict]) -> tuple[int, dict | bytes]:
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def assert_507(sent, what):
    status, body = answer(sent)
    assert status == 507, (status, body)
    assert body["error_code"] == "RESOURCE_EXHAUSTED"
    assert f"proxied {what}" in body["message"] and "ephemeralStorageGib" in body["message"], body


def test_an_enospc_escaping_the_upload_handler_is_a_507():
    async def app(scope, receive, send):
        await receive()
        raise OSError(errno.ENOSPC, "No space left on device")

    sent, exc = call(app)
    assert exc is None
    assert_507(sent, "upload")


def test_an_enospc_inside_an_exception_group_is_a_507():
    async def app(scope, receive, send):
        raise ExceptionGroup("task group", [OSError(errno.ENOSPC, "No space left on device")])

    sent, exc = call(app)
    assert exc is None
    assert_507(sent, "upload")


def test_mlflows_json_500_for_a_full_spool_on_download_is_a_507():
    body = json.dumps({"error_code": "INTERNAL_ERROR", "message": "The following failures occurred while downloading "
                       "one or more artifacts from s3://b/artifacts:\n##### File x #####\n[Errno 28] No space left on "
                       "device"}).encode()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    sent, exc = call(app, method="GET", path="/get-artifact")
    assert exc is None
    assert_507(sent, "download")


def test_other_errors_and_answers_pass_unchanged():
    async def other_500(scope, receive, send):
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"Internal", "more_body": True})
        await send({"type": "http.response.body", "body": b" Server Error"})

    sent, exc = call(other_500)
    assert exc is None and answer(sent) == (500, b"Internal Server Error")

    async def ok(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    assert answer(call(ok)[0]) == (200, b"ok")

    async def broken(scope, receive, send):
        raise OSError(errno.EACCES, "Permission denied")

    sent, exc = call(broken)
    assert isinstance(exc, PermissionError) and sent == []


def test_an_enospc_after_the_response_started_is_not_answered_twice():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise OSError(errno.ENOSPC, "No space left on device")

    sent, exc = call(app, method="GET")
    assert isinstance(exc, OSError) and [m["status"] for m in sent if "status" in m] == [200]


@pytest.mark.parametrize("length,free,refused", [(100, 10 * 2**20, True), (100, guard.RESERVE + 100, False),
                                                  (None, 10, False)])
def test_an_announced_length_larger_than_the_free_spool_is_refused_on_the_first_read(monkeypatch, length, free,
                                                                                     refused):
    monkeypatch.setattr(guard, "free_bytes", lambda: free - guard.RESERVE if refused else free)
    read = []

    async def app(scope, receive, send):
        read.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    headers = [(b"content-length", str(length).encode())] if length is not None else []
    sent, exc = call(app, headers=headers)
    assert exc is None
    if refused:
        assert read == []
        status, body = answer(sent)
        assert status == 507 and "upload of 100 B" in body["message"], body
    else:
        assert answer(sent)[0] == 200 and len(read) == 1


def test_only_uploads_are_checked_before_reading(monkeypatch):
    monkeypatch.setattr(guard, "free_bytes", lambda: 0)

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent, _ = call(app, method="POST", path="/api/2.0/mlflow/runs/log-batch", headers=[(b"content-length", b"999")])
    assert answer(sent)[0] == 200


def test_installed_by_its_entry_point_in_every_mlflow_process():
    """The dist-info beside the package declares the mlflow.default_experiment_provider entry point
    (loaded at `import mlflow`); loading it wraps create_fastapi_app, whose apps carry the guard."""
    import subprocess

    plugins = Path(guard.__file__).resolve().parents[1]
    code = ("import mlflow, mlflow.server.fastapi_app as f, mlflow_spool_guard as g; assert g.installed(f); "
            "from flask import Flask; app = f.create_fastapi_app(Flask('x')); "
            "assert any(m.cls is g.SpoolGuard for m in app.user_middleware), app.user_middleware; print('ok')")
    p = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env={"PYTHONPATH": str(plugins), "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=120)
    assert p.stdout.strip().endswith("ok"), p.stderr[-2000:]


def test_a_database_out_of_space_is_not_called_a_full_spool():
    """A database out of storage also says "No space left on device" (PostgreSQL's DiskFull: "could
    not extend file ...: No space left on device"), which MLflow's ManagedSessionMaker answers as a
    503 TEMPORARILY_UNAVAILABLE (retried by the client; mlflow/utils/request_utils.py). On a
    tracking route, or as a 503 on a download route, it passes unchanged: only a proxied
    download's 500 can be the spool's."""
    body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "(psycopg2.errors.DiskFull) could "
                       "not extend file \"base/16384/16400\": No space left on device"}).encode()

    def answering(status):
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
        return app

    for method, path, status in (("POST", "/api/2.0/mlflow/runs/log-metric", 503),
                                 ("POST", "/api/2.0/mlflow/runs/log-metric", 500),
                                 ("GET", "/api/2.0/mlflow/runs/search", 500),
                                 ("GET", "/get-artifact", 503),
                                 ("GET", "/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/x", 503)):
        sent, exc = call(answering(status), method=method, path=path)
        assert exc is None and answer(sent) == (status, json.loads(body)), (method, path, status)
    for path in ("/model-versions/get-artifact", "/ajax-api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/x"):
        sent, exc = call(answering(500), method="GET", path=path)
        assert exc is None and answer(sent)[0] == 507, path
