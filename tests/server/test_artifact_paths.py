"""Which path MLflow 3.17.2's own client takes for artifacts by default, observed on the wire.

The client decides per file (mlflow/store/artifact/mlflow_artifacts_repo.py,
MlflowArtifactsRepository): with `MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD` / `..._DOWNLOAD` *unset*
(their False default in mlflow/environment_variables.py is never read for `mlflow-artifacts:` URIs,
only `is_set()` is), it asks the server's unauthenticated `GET /api/3.0/mlflow/server-info`, which
advertises multipart uploads and downloads when the proxied destination supports them (S3 does;
handlers.py, build_server_info_payload). Then:

* uploads of at least MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE (500 MiB) go to S3 through
  presigned part URLs (`POST /api/2.0/mlflow-artifacts/mpu/create` and `.../complete` on the
  server, the parts straight to S3); smaller ones are one proxied `PUT` (spooled whole);
* every download, whatever its size, gets a presigned URL (`GET /api/2.0/mlflow-artifacts/presigned/...`)
  and reads straight from S3 (ranged GETs of 100 MiB chunks, 206): nothing is spooled.

The test runs the real client in a subprocess (no AWS credentials, only a route to the S3 server) with
the upload threshold lowered to 12 MiB, so the large path is taken by a 12 MiB file, and asserts
MLflow's default threshold separately. It reads what the server saw from uvicorn's access log and
what S3 saw from the S3 server's log. A future MLflow that changes the default fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support.peers import S3Server
from tests.support.server import Server, s3_env

MiB = 1024 * 1024
PASSWORD = "Adm1n-pa55word-for-paths"
LOW_THRESHOLD = 12 * MiB

CLIENT = r"""
import os, sys
from mlflow import MlflowClient
c = MlflowClient()
run = c.create_run("0")
for src in sys.argv[2:]:
    c.log_artifact(run.info.run_id, src)
    print("MARK uploaded", os.path.basename(src), flush=True)
for src in sys.argv[2:]:
    p = c.download_artifacts(run.info.run_id, os.path.basename(src), sys.argv[1])
    assert open(p, "rb").read() == open(src, "rb").read()
    print("MARK downloaded", os.path.basename(src), flush=True)
print("RUN", run.info.experiment_id, run.info.run_id)
"""


@pytest.fixture(scope="module")
def served():
    with S3Server() as s3:
        s3.create_bucket("paths-bucket")
        env = {**s3_env(s3, "paths-bucket"), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD, "MLFLOW_WORKERS": "1"}
        with Server(env=env) as srv:  # embedded mode (SQLite), artifacts proxied to the S3 bucket
            yield srv, s3


def test_mlflow_defaults_are_what_the_docs_say():
    from mlflow.environment_variables import (MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD,
                                              MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD,
                                              MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE)

    for var in (MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD, MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD,
                MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE):
        assert var.name not in os.environ, f"{var.name} is set in the test's environment"
    assert not MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD.is_set() and not MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD.is_set()
    assert MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE.get() == 500 * MiB


def test_default_client_proxies_small_uploads_and_presigns_large_uploads_and_all_downloads(served, tmp_path):
    srv, s3 = served
    small, large = tmp_path / "small.bin", tmp_path / "large.bin"
    small.write_bytes(os.urandom(1 * MiB))
    large.write_bytes(os.urandom(LOW_THRESHOLD))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=srv.url, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=PASSWORD,
               MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE=str(LOW_THRESHOLD), NO_PROXY="127.0.0.1,localhost")
    s3_before = s3.log_path.read_text(errors="replace")
    p = subprocess.run([sys.executable, "-c", CLIENT, str(tmp_path / "back"), str(small), str(large)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    exp_id, run_id = p.stdout.split("RUN ")[1].split()
    prefix = f"{exp_id}/{run_id}/artifacts"
    # what the server saw (uvicorn's access log): method, path, status
    seen = re.findall(r'"(GET|PUT|POST|DELETE) (/\S*) HTTP/1\.1" (\d+)', srv.output())
    artifact_calls = [(m, path.split("?")[0], st) for m, path, st in seen
                      if "mlflow-artifacts" in path or "server-info" in path]
    assert ("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{prefix}/small.bin", "200") in artifact_calls, artifact_calls
    assert ("GET", "/api/3.0/mlflow/server-info", "200") in artifact_calls, artifact_calls
    assert ("POST", f"/api/2.0/mlflow-artifacts/mpu/create/{prefix}", "200") in artifact_calls, artifact_calls
    assert ("POST", f"/api/2.0/mlflow-artifacts/mpu/complete/{prefix}", "200") in artifact_calls, artifact_calls
    for name in ("small.bin", "large.bin"):
        assert ("GET", f"/api/2.0/mlflow-artifacts/presigned/{prefix}/{name}", "200") in artifact_calls, artifact_calls
    # never through the proxy: the large upload's bytes, and any download
    proxied = [c for c in artifact_calls if c[1].startswith("/api/2.0/mlflow-artifacts/artifacts/")]
    assert proxied == [("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{prefix}/small.bin", "200")], proxied
    # what S3 saw straight from the client: the large file's part uploads and both downloads
    s3_log = s3.log_path.read_text(errors="replace")[len(s3_before):]
    key = f"/paths-bucket/artifacts/{prefix}"
    assert re.search(rf'"PUT {re.escape(key)}/large\.bin\?partNumber=[^\n]*X-Amz-Signature=', s3_log), s3_log[-3000:]
    for name in ("small.bin", "large.bin"):
        assert re.search(rf'GET {re.escape(key)}/{name}\?[^\n]*X-Amz-Signature=[^\n]*" 206', s3_log), s3_log[-3000:]
    # and nothing of either transfer is in the server's spool
    left = [f for f in srv.spool.rglob("*") if f.is_file() and ".entrypoint" not in f.parts]
    assert left == [], left
