"""image/plugins/mlflow_stream_download: a proxied download from S3 streams from S3's GetObject to the
client, never through the server's artifact spool, and answers as MLflow 3.17.2 does otherwise.

Two entrypoint processes (embedded mode, auth on, default permission NO_PERMISSIONS, one worker)
proxy artifacts to the same moto bucket: ``stream`` as the image runs it, ``mlflow`` with
``MLFLOW_STREAM_DOWNLOADS=false`` (the plugin leaves MLflow's route alone: MLflow's own
``download_artifact`` of mlflow/server/artifact_router.py, which downloads the object whole into
TMPDIR first). The route is the one MLflow's client uses for a proxied download with
``MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false`` (mlflow/store/artifact/http_artifact_repo.py:
``GET /api/2.0/mlflow-artifacts/artifacts/<path>``) and the web UI's ``/ajax-api/2.0/...`` twin.
Objects are put into the bucket straight (AWS, Amazon S3 API Reference, "PutObject"), under the
key MLflow's S3 repository gives ``<exp>/<run>/artifacts/<name>``. What S3 was asked is read from
moto's request log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import sys
import threading
import uuid
from pathlib import Path

import pytest
import requests

from tests.support.server import Server, client_env, s3_env

MiB = 1024 * 1024
PASSWORD = "Adm1n-pa55word-for-streams"
BIG = 96 * MiB
PREFIX = "artifacts"
PLUGINS = Path(__file__).resolve().parents[2] / "image" / "plugins"


def _plugin():
    sys.path.insert(0, str(PLUGINS))
    try:
        import mlflow_stream_download
    finally:
        sys.path.remove(str(PLUGINS))
    return mlflow_stream_download


def _server(s3, bucket: str, **extra) -> Server:
    env = {**s3_env(s3, bucket, PREFIX), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD, "MLFLOW_WORKERS": "1",
           "MLFLOW_AUTH_DEFAULT_PERMISSION": "NO_PERMISSIONS", **extra}
    return Server(env=env)


@pytest.fixture(scope="module")
def servers(s3):
    bucket = s3.create_bucket(f"stream-{uuid.uuid4().hex[:10]}")
    made = {"stream": _server(s3, bucket), "mlflow": _server(s3, bucket, MLFLOW_STREAM_DOWNLOADS="false")}
    try:
        for srv in made.values():
            srv.start()
        yield made, s3, bucket
    finally:
        for srv in made.values():
            srv.close()


def _run(srv: Server) -> tuple[str, str]:
    """A new run of the admin's in experiment 0: (experiment_id, run_id)."""
    r = requests.post(srv.url + "/api/2.0/mlflow/runs/create", json={"experiment_id": "0"},
                      auth=("admin", PASSWORD), timeout=30)
    assert r.status_code == 200, r.text
    info = r.json()["run"]["info"]
    return info["experiment_id"], info["run_id"]


def _put(s3, bucket: str, path: str, data: bytes) -> None:
    s3.client().put_object(Bucket=bucket, Key=f"{PREFIX}/{path}", Body=data)


def _get(srv: Server, path: str, auth=("admin", PASSWORD), api: str = "api") -> requests.Response:
    return requests.get(f"{srv.url}/{api}/2.0/mlflow-artifacts/artifacts/{path}", auth=auth, timeout=120)


def _spool_bytes(srv: Server) -> int:
    """Bytes of the files in the server's spool (TMPDIR), but the entrypoint's own (auth ini)."""
    total = 0
    for f in srv.spool.rglob("*"):
        try:
            if f.is_file() and ".entrypoint" not in f.parts:
                total += f.stat().st_size
        except OSError:  # removed while we looked
            pass
    return total


def test_large_forced_proxy_download_streams_without_the_spool(servers, tmp_path):
    made, s3, bucket = servers
    srv = made["stream"]
    exp, run = _run(srv)
    data = os.urandom(BIG)
    _put(s3, bucket, f"{exp}/{run}/artifacts/big.bin", data)
    expected = hashlib.sha256(data).hexdigest()
    del data
    seen = {"max": 0, "samples": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            seen["max"] = max(seen["max"], _spool_bytes(srv))
            seen["samples"] += 1
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    env = {**srv.client_env("admin", PASSWORD), "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
           "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false", "NO_PROXY": "127.0.0.1,localhost",
           "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "MLFLOW_S3_ENDPOINT_URL": None}
    sampler.start()
    try:
        with client_env(env):
            from mlflow import MlflowClient

            local = MlflowClient().download_artifacts(run, "big.bin", str(tmp_path))
    finally:
        done.set()
        sampler.join(timeout=10)
    h = hashlib.sha256()
    with open(local, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    assert h.hexdigest() == expected
    assert os.path.getsize(local) == BIG
    # the client took the proxied route (no presigned URL), answered 200
    calls = re.findall(r'"GET (/\S*mlflow-artifacts/\S*) HTTP/1\.1" (\d+)', srv.output())
    assert (f"/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/big.bin", "200") in calls, calls
    assert not [c for c in calls if "/presigned/" in c[0]], calls
    # the object never sat in the spool (MLflow's own route holds all of it there before the first byte)
    assert seen["samples"] > 10, seen
    assert seen["max"] < BIG // 4, f"the spool held {seen['max']} bytes of a {BIG}-byte download"


def test_missing_artifact_is_a_404_not_mlflows_retried_500(servers):
    """MLflow 3.17.2 answers a missing object on this route with a JSON 500 INTERNAL_ERROR (its
    download_artifacts wraps S3's HeadObject 404), which HTTP clients retry (the MLflow client's
    _TRANSIENT_FAILURE_RESPONSE_CODES; its own download_artifacts lists the path first and fails
    before asking); the plugin answers 404 RESOURCE_DOES_NOT_EXIST, on both paths, once S3 says
    there is neither the key nor anything below it."""
    made, _, _ = servers
    answers = {}
    path = f"0/{uuid.uuid4().hex}/artifacts/missing.bin"
    for name, srv in made.items():
        for api in ("api", "ajax-api"):
            r = _get(srv, path, api=api)
            answers[name, api] = (r.status_code, r.text)
    status, text = answers["mlflow", "api"]
    assert (status, json.loads(text)["error_code"]) == (500, "INTERNAL_ERROR"), text
    assert "HeadObject operation: Not Found" in text, text
    for api in ("api", "ajax-api"):
        status, text = answers["stream", api]
        assert (status, json.loads(text)["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST"), text


def test_unsafe_path_is_answered_as_mlflow_does(servers):
    made, _, _ = servers
    answers = {name: _get(srv, "0/..%2F..%2Fetc/passwd") for name, srv in made.items()}
    assert answers["stream"].status_code == answers["mlflow"].status_code != 200
    assert answers["stream"].text == answers["mlflow"].text


@pytest.mark.parametrize("api", ["api", "ajax-api"])
def test_reader_without_permission_is_refused_and_s3_is_not_asked(servers, api):
    made, s3, bucket = servers
    answers = {}
    for name, srv in made.items():
        user, pw = f"nobody-{uuid.uuid4().hex[:8]}", "N0body-pa55word-x"
        r = requests.post(srv.url + "/api/2.0/mlflow/users/create", json={"username": user, "password": pw},
                          auth=("admin", PASSWORD), timeout=30)
        assert r.status_code == 200, r.text
        exp, run = _run(srv)
        key = f"{exp}/{run}/artifacts/secret-{name}.txt"
        _put(s3, bucket, key, b"not for nobody\n")
        before = s3.log_path.read_text(errors="replace")
        refused = _get(srv, key, auth=(user, pw), api=api)
        s3_seen = s3.log_path.read_text(errors="replace")[len(before):]
        answers[name] = (refused.status_code, refused.text)
        assert f"secret-{name}.txt" not in s3_seen, s3_seen
        # the same path for the admin: 200, and moto's log shows that request (the check above can see one)
        ok = _get(srv, key, api=api)
        assert ok.status_code == 200 and ok.content == b"not for nobody\n", ok.text
        assert f"secret-{name}.txt" in s3.log_path.read_text(errors="replace")[len(before):]
    assert answers["stream"][0] == 403, answers
    assert answers["stream"] == answers["mlflow"], answers


@pytest.mark.parametrize("name", ["metrics.txt", "model.pkl", "MLmodel", "r\u00e9sum\u00e9 \"v1\".json", "empty.csv"])
@pytest.mark.parametrize("api", ["api", "ajax-api"])
def test_headers_and_body_are_mlflows(servers, name, api):
    made, s3, bucket = servers
    exp, run = _run(made["stream"])
    data = b"" if name == "empty.csv" else (b"a,b\n1,2\n" * 1000)
    _put(s3, bucket, f"{exp}/{run}/artifacts/{name}", data)
    path = requests.utils.quote(f"{exp}/{run}/artifacts/{name}")
    got = {}
    for srv_name, srv in made.items():
        r = _get(srv, path, api=api)
        assert r.status_code == 200, r.text
        assert r.content == data
        got[srv_name] = {k.lower(): v for k, v in r.headers.items() if k.lower() != "date"}
    stream, mlflow = got["stream"], got["mlflow"]
    # one difference, on purpose: the object's size instead of MLflow's chunked stream of its spooled copy
    assert stream.pop("content-length") == str(len(data))
    assert mlflow.pop("transfer-encoding") == "chunked"
    assert stream == mlflow
    assert mlflow["content-type"] and mlflow["content-disposition"].startswith("attachment")


class _EndlessBody:
    """Stands in for botocore's StreamingBody (read(amt) -> bytes, close()); records who read."""

    def __init__(self) -> None:
        self.reads, self.closed, self.threads = 0, False, set()

    def read(self, amt: int) -> bytes:
        assert not self.closed, "read after close"
        self.reads += 1
        self.threads.add(threading.get_ident())
        return b"x" * amt

    def close(self) -> None:
        self.closed = True


async def _serve(response, spec: str, leave_after: int) -> list[int]:
    """Run ``response`` as an ASGI server would for a client that leaves after ``leave_after`` body
    chunks: ASGI 2.3, the server reports ``http.disconnect``; ASGI 2.4, a later send also raises
    ``OSError`` (Starlette then raises ``ClientDisconnect``). Returns the chunk sizes sent."""
    from starlette.requests import ClientDisconnect

    chunks: list[int] = []
    gone = asyncio.Event()

    async def receive():
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(msg):
        if msg["type"] == "http.response.body":
            if spec == "2.4" and gone.is_set():
                raise OSError("client gone")
            chunks.append(len(msg["body"]))
            if len(chunks) >= leave_after:
                gone.set()
        await asyncio.sleep(0)

    with contextlib.suppress(ClientDisconnect):
        await response({"type": "http", "asgi": {"version": "3.0", "spec_version": spec}}, receive, send)
    return chunks


def _endless_response(body):
    return _plugin().response_class()(body, {"Content-Type": "application/octet-stream",
                                             "Content-Length": str(10**12)})


@pytest.mark.parametrize("spec", ["2.3", "2.4"])
def test_s3_body_is_read_off_the_event_loop_and_closed_when_the_client_goes_away(spec):
    """ASGI 2.3: the server reports ``http.disconnect`` (Starlette cancels the stream); ASGI 2.4: the
    send raises ``OSError`` (Starlette raises ``ClientDisconnect``). Either way the body is closed."""
    body = _EndlessBody()

    async def main():
        return threading.get_ident(), await _serve(_endless_response(body), spec, leave_after=1)

    loop_thread, chunks = asyncio.run(main())
    assert body.closed
    assert chunks and chunks[0] == 1024 * 1024
    assert body.reads < 1000  # stopped reading S3 soon after the client left (the body is endless)
    assert loop_thread not in body.threads and body.threads  # every read in Starlette's threadpool


def test_s3_reads_do_not_wait_for_the_request_threadpool():
    """anyio's default limiter (40 threads) is what MLflow's Flask routes and sync endpoints run under;
    with every one of its tokens taken (40 requests stuck), a download still reads S3: its reads
    have their own limiter. Under the default limiter this stream would never start (bounded here)."""
    import anyio
    import anyio.to_thread

    body = _EndlessBody()

    async def main():
        busy = anyio.to_thread.current_default_thread_limiter()
        borrowers = [object() for _ in range(int(busy.total_tokens))]
        for b in borrowers:
            await busy.acquire_on_behalf_of(b)
        try:
            return await asyncio.wait_for(_serve(_endless_response(body), "2.3", leave_after=2), timeout=30)
        finally:
            for b in borrowers:
                busy.release_on_behalf_of(b)

    chunks = asyncio.run(main())
    assert len(chunks) >= 2 and body.closed
