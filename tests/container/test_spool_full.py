"""Large artifacts at the edge of the spool: the image run with its spool on a small tmpfs (a real
ENOSPC when it fills up), as the task's ephemeral storage fills up on Fargate.

MLflow 3.17.2 stages a proxied upload whole in the server's TMPDIR (mlflow/server/artifact_router.py,
`upload_artifact`: S3 is no StreamUploadMixin, so the body goes to a TemporaryDirectory and only
the complete file is uploaded) and a download through the Flask `get-artifact` route whole before its
first byte (the REST download route streams from S3: image/plugins/mlflow_stream_download). A full spool used to be `500 Internal Server Error` (text/plain) with a
traceback in the log, and the MLflow client retries a 500 (mlflow/utils/request_utils.py,
_TRANSIENT_FAILURE_RESPONSE_CODES), re-sending the whole file each time. The image's spool guard
(image/plugins/mlflow_spool_guard) answers 507 Insufficient Storage (RFC 4918 section 11.5; not
retried) with one line of MLflow-style JSON naming the spool and `ephemeralStorageGib`.

The spool is `--tmpfs /var/spool/mlflow:size=64m,uid=10001,gid=10001,mode=0700`: what the image's
VOLUME gives a fresh Fargate mount (owned by 10001, 0700; tests/container/conftest.py,
fargate_spool), with a hard size limit (Docker run reference, "--tmpfs"; tmpfs(5): size, uid, gid,
mode). The container is otherwise run as the `container` fixture runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

from components.service import SPOOL_PATH
from tests.container.conftest import UID, Running, docker, inspect, run_admin_container
from tests.support.dbadmin import ADMIN_VARIABLES, drop_app_user, ensure_master
from tests.support.peers import LOOPBACK, free_port
from tests.support.server import health

MiB = 1024 * 1024
SPOOL_MIB = 64
BIG = 96 * MiB  # more than the whole spool


@pytest.fixture(scope="module")
def tight(image, mariadb, s3):
    """The image's server with a 64 MiB tmpfs spool (else as the `container` fixture runs it)."""
    tag = uuid.uuid4().hex[:8]
    name = f"mlflow-spool-test-{os.getpid()}-{tag}"
    db_name, auth_name, user = f"sp_{tag}", f"sp_{tag}_auth", f"sp_{tag}"
    db_password, admin_password = f"spdb{secrets.token_hex(12)}", f"spadm{secrets.token_hex(12)}"
    flask_key = f"spkey{secrets.token_hex(16)}"
    bucket = s3.create_bucket(f"sp-{tag}")
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="mlflow-spool-"))
    env = {
        "MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(mariadb.port),
        "MLFLOW_DB_NAME": db_name, "MLFLOW_DB_USER": user, "MLFLOW_DB_PASSWORD": db_password,
        "MLFLOW_AUTH_DB_NAME": auth_name, "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key, "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/artifacts",
        "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "2", "MLFLOW_DB_TLS_CA": "",
        **{k: v for k, v in s3.env.items() if k != "NO_PROXY"},
    }
    env_file = tmp / "server.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    running = None
    try:
        run_admin_container(image.tag, tmp, {
            **{k: v for k, v in env.items() if k.startswith("MLFLOW_DB_") or k == "MLFLOW_AUTH_DB_NAME"},
            **dict(zip(ADMIN_VARIABLES, ensure_master(mariadb)))}, secrets=[db_password, admin_password, flask_key])
        docker("run", "-d", "--name", name, "--user", f"{UID}:{UID}", "--read-only",
               "--tmpfs", f"{SPOOL_PATH}:rw,size={SPOOL_MIB}m,uid={UID},gid={UID},mode=0700",
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "host",
               "--env-file", str(env_file), image.tag)
        url = f"http://{LOOPBACK}:{port}"
        t0 = time.monotonic()
        while health(url, timeout=1.0) != 200:
            state = inspect(name)["State"]
            if not state["Running"] or time.monotonic() - t0 > 180:
                pytest.fail(f"no /health 200 (running={state['Running']}); logs:\n"
                            f"{docker('logs', name, check=False).stderr[-4000:]}", pytrace=False)
            time.sleep(0.2)
        running = Running(name, image, port, url, None, bucket, s3, mariadb, db_name, {}, admin_password,
                          time.monotonic() - t0)
        yield running
    finally:
        if running is None or os.environ.get("CONTAINER_TEST_SHOW_LOGS"):
            print(docker("logs", name, check=False).stderr[-4000:])
        docker("rm", "-f", "-v", name, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        for db in (db_name, auth_name):
            with contextlib.suppress(Exception):
                mariadb.drop_database(db)
        with contextlib.suppress(Exception):
            drop_app_user(mariadb, user)


@pytest.fixture(scope="module")
def run_path(tight) -> str:
    """`<experiment>/<run>/artifacts`: a run's artifact folder, made through the API as the admin."""
    s = requests.Session()
    s.auth = ("admin", tight.admin_password)
    exp = s.post(f"{tight.url}/api/2.0/mlflow/experiments/create", json={"name": f"spool-{uuid.uuid4().hex[:6]}"},
                 timeout=30)
    assert exp.status_code == 200, exp.text
    exp_id = exp.json()["experiment_id"]
    run = s.post(f"{tight.url}/api/2.0/mlflow/runs/create", json={"experiment_id": exp_id}, timeout=30)
    assert run.status_code == 200, run.text
    return f"{exp_id}/{run.json()['run']['info']['run_id']}/artifacts"


def artifact_url(tight, run_path: str, name: str) -> str:
    return f"{tight.url}/api/2.0/mlflow-artifacts/artifacts/{run_path}/{name}"


def keys(tight) -> list[str]:
    c = tight.s3.client()
    return [o["Key"] for o in c.list_objects_v2(Bucket=tight.bucket, Prefix="artifacts/").get("Contents", [])]


def spooled(tight) -> list[str]:
    """Files in the spool other than the entrypoint's own config dir (auth ini, HOME)."""
    return [f for f in tight.spool_files() if not f.startswith(".entrypoint/")]


def assert_spool_full_answer(r: requests.Response, what: str) -> None:
    """507 with one line of MLflow-style JSON naming the spool and the stack setting."""
    got = f"HTTP {r.status_code} {r.headers.get('content-type')!r}: {r.text[:300]!r}"
    assert r.status_code == 507, f"the client got {got}"
    assert r.headers.get("content-type", "").startswith("application/json"), got
    assert "\n" not in r.text.strip(), got
    body = r.json()
    assert body["error_code"] == "RESOURCE_EXHAUSTED", got
    assert f"proxied {what}" in body["message"] and SPOOL_PATH in body["message"], got
    assert "ephemeralStorageGib" in body["message"], got


def test_the_spool_is_the_small_tmpfs(tight):
    p = tight.exec("df", "-k", "--output=size,target", SPOOL_PATH, check=True)
    size_kib = int(p.stdout.split()[-2])
    assert size_kib == SPOOL_MIB * 1024, p.stdout
    st = tight.exec("stat", "-c", "%u:%g %a", SPOOL_PATH, check=True).stdout.split()
    assert st == [f"{UID}:{UID}", "700"], st


def test_an_upload_larger_than_the_spool_is_a_507_while_others_are_served(tight, run_path):
    """A chunked upload (no Content-Length: the server learns it does not fit only when the spool
    fills up) of more than the whole spool; while it is stalled half-way, another client's small
    upload, a read and /health succeed."""
    auth = ("admin", tight.admin_password)
    halfway, go_on = threading.Event(), threading.Event()

    def body():
        chunk = os.urandom(MiB)
        for i in range(BIG // MiB):
            if i == 32:  # half the spool is taken by this upload: let the other client in
                halfway.set()
                go_on.wait(120)
            yield chunk

    result: dict = {}

    def big_upload():
        try:
            result["r"] = requests.put(artifact_url(tight, run_path, "big.bin"), data=body(), auth=auth, timeout=300)
        except requests.RequestException as e:  # what a client sees when the server drops it
            result["error"] = repr(e)
        finally:
            halfway.set()

    t = threading.Thread(target=big_upload, daemon=True)
    t.start()
    try:
        assert halfway.wait(120), "the big upload never got half-way"
        # during the big upload: another client is served, and the big upload is staged in the spool
        assert any(f.endswith("/big.bin") for f in spooled(tight)), spooled(tight)
        small = requests.put(artifact_url(tight, run_path, "during.txt"), data=b"during", auth=auth, timeout=60)
        assert small.status_code == 200, small.text
        assert requests.get(artifact_url(tight, run_path, "during.txt"), auth=auth, timeout=60).content == b"during"
        assert health(tight.url) == 200
    finally:
        go_on.set()
        t.join(300)
    assert not t.is_alive(), "the big upload hangs"
    assert "r" in result, f"the client got no HTTP answer: {result.get('error')}"
    assert_spool_full_answer(result["r"], "upload")

    # nothing of it stored, nothing left in the spool; the server goes on serving
    assert not [k for k in keys(tight) if k.endswith("/big.bin")], keys(tight)
    assert spooled(tight) == []
    assert health(tight.url) == 200
    after = requests.put(artifact_url(tight, run_path, "after.txt"), data=b"after", auth=auth, timeout=60)
    assert after.status_code == 200, after.text
    assert any(k.endswith(f"{run_path}/after.txt") for k in keys(tight)), keys(tight)
    logs = tight.logs()
    assert "Traceback" not in logs, logs[-3000:]
    assert "mlflow-spool-guard: PUT" in logs and "-> 507" in logs, logs[-3000:]


def test_an_announced_upload_larger_than_the_free_spool_is_refused_before_it_is_spooled(tight, run_path):
    """Content-Length larger than the spool's free space: refused when the handler first reads the
    body (after authentication), without writing a byte; the rest of the body is discarded by
    uvicorn, so the connection stays usable (the same session's next request succeeds)."""
    s = requests.Session()
    s.auth = ("admin", tight.admin_password)
    r = s.put(artifact_url(tight, run_path, "announced.bin"), data=os.urandom(BIG), timeout=300)
    assert_spool_full_answer(r, f"upload of {BIG / MiB:.1f} MiB")
    assert spooled(tight) == [] and not [k for k in keys(tight) if k.endswith("/announced.bin")]
    again = s.put(artifact_url(tight, run_path, "same-connection.txt"), data=b"ok", timeout=60)
    assert again.status_code == 200, again.text
    # an anonymous client still gets 401, not a hint about the spool
    anon = requests.put(artifact_url(tight, run_path, "anon.bin"), data=os.urandom(BIG), timeout=300)
    assert anon.status_code == 401, (anon.status_code, anon.text[:200])


def test_the_mlflow_client_gets_the_507_at_once_instead_of_retrying(tight, run_path, tmp_path):
    """MLflow's own client, forced onto the proxy, default retry settings: one HTTPError naming the
    spool, not minutes of re-sending the file to a 500 (the subprocess would time out)."""
    src = tmp_path / "model.bin"
    with open(src, "wb") as f:
        f.truncate(BIG)  # sparse: the client's side needs no disk
    run_id = run_path.split("/")[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=tight.url, MLFLOW_TRACKING_USERNAME="admin",
               MLFLOW_TRACKING_PASSWORD=tight.admin_password, MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="false",
               NO_PROXY="127.0.0.1,localhost")
    code = "import sys; from mlflow import MlflowClient; MlflowClient().log_artifact(sys.argv[1], sys.argv[2])"
    try:
        p = subprocess.run([sys.executable, "-c", code, run_id, str(src)], env=env, capture_output=True, text=True,
                           timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("the MLflow client was still retrying the upload after 180 s", pytrace=False)
    last = (p.stderr.strip().splitlines() or [""])[-1]
    assert p.returncode != 0, p.stdout
    assert "507" in last and "artifact spool full" in last and "ephemeralStorageGib" in last, last
    assert spooled(tight) == [] and not [k for k in keys(tight) if k.endswith("/model.bin")]


def test_a_proxied_download_larger_than_the_spool_streams_past_it(tight, run_path):
    """The REST download route (what the MLflow client uses on the proxy) streams an S3 object to the
    client (image/plugins/mlflow_stream_download): one larger than the whole spool arrives whole and
    the spool stays empty."""
    key = f"artifacts/{run_path}/huge.bin"
    body = os.urandom(BIG)
    tight.s3.client().put_object(Bucket=tight.bucket, Key=key, Body=body)
    r = requests.get(artifact_url(tight, run_path, "huge.bin"), auth=("admin", tight.admin_password), timeout=300)
    assert r.status_code == 200 and r.headers["content-length"] == str(BIG), r.text[:300]
    assert r.content == body
    assert spooled(tight) == []


def test_a_spooled_download_larger_than_the_spool_is_a_507(tight, run_path):
    """The Flask `get-artifact` route (the web UI's preview) still fetches the whole object into the
    spool before the first byte (MLflow's handlers.py `get_artifact_handler`); one larger than the spool
    (put straight into the bucket) is a 507, and nothing stays in the spool."""
    key = f"artifacts/{run_path}/huge2.bin"
    tight.s3.client().put_object(Bucket=tight.bucket, Key=key, Body=os.urandom(BIG))
    run_id = run_path.split("/")[1]
    r = requests.get(f"{tight.url}/get-artifact", params={"path": "huge2.bin", "run_uuid": run_id},
                     auth=("admin", tight.admin_password), timeout=300)
    assert_spool_full_answer(r, "download")
    assert spooled(tight) == []
    small = requests.get(artifact_url(tight, run_path, "after.txt"), auth=("admin", tight.admin_password), timeout=60)
    assert small.status_code == 200 and small.content == b"after"
