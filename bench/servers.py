"""The contenders: stock `mlflow server` (with and without basic-auth) and the project's entrypoint.

Both run on 127.0.0.1 under `taskset -c <cpus>` (the same CPU budget), in a session of their
own (so the whole process tree can be measured and stopped), with TMPDIR / MLFLOW_SPOOL_DIR in a
temporary directory of their own (the artifact spool, sampled during transfers).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.proc import session_pids
from tests.support.dbadmin import prepare_databases
from tests.support.peers import LOOPBACK, free_port
from tests.support.server import ENTRYPOINT, PYTHON, Server, database_env, health, s3_env

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_BIN = str(Path(PYTHON).parent / "mlflow")
ADMIN = "admin"
ADMIN_PASSWORD = "bench-Adm1n-pa55word"
SECRET_KEY = "bench-flask-secret-key-0123456789abcdef"


class BenchServerError(RuntimeError):
    pass


def _clean_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _kill_session(sid: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the leader, wait, then SIGKILL whatever of the session is still alive."""
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 5
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in session_pids(sid):  # only processes of the session this harness started
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


# What uvicorn runs with after `pip install mlflow` (or `mlflow[auth]`): MLflow depends on plain
# `uvicorn`, not `uvicorn[standard]`, so neither uvloop nor httptools is installed and uvicorn's
# `--loop auto --http auto` pick asyncio and h11. This venv has both (the image installs them), and
# uvicorn would pick them up on its own, so the stock contender names the stock choice explicitly.
STOCK_UVICORN = "--loop asyncio --http h11"


class StockServer:
    """`mlflow server --backend-store-uri … --artifacts-destination … --host … --port …
    --uvicorn-opts "--loop asyncio --http h11"` (what a plain `pip install mlflow` runs, see
    STOCK_UVICORN; `uvicorn_opts=None` lets uvicorn pick uvloop/httptools) and, with `auth`,
    `--app-name basic-auth` (its defaults: SQLite user store in the working directory, no
    credential cache). Only environment needed to run at all is added: the local S3 endpoint and
    test credentials, TMPDIR, and for basic-auth the admin password and Flask key (MLflow 3.17
    ships neither)."""

    def __init__(self, backend_uri: str, destination: str, s3, auth: bool, cpus: str,
                 uvicorn_opts: str | None = STOCK_UVICORN, extra: dict[str, str] | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mlflow-bench-stock-"))
        self.spool = self.tmp / "tmp"
        self.spool.mkdir()
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.auth = (ADMIN, ADMIN_PASSWORD) if auth else None
        argv = [MLFLOW_BIN, "server", "--backend-store-uri", backend_uri, "--artifacts-destination", destination,
                "--host", LOOPBACK, "--port", str(self.port)]
        if uvicorn_opts:
            argv += ["--uvicorn-opts", uvicorn_opts]
        if auth:
            argv += ["--app-name", "basic-auth"]
        self.argv = ["taskset", "-c", cpus, *argv]
        self.env = {**_clean_env(), **s3.env, "HOME": str(self.tmp), "TMPDIR": str(self.spool)}
        if auth:
            self.env.update(MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY=SECRET_KEY)
        self.env.update(extra or {})  # e.g. MLFLOW_WORKERS (mlflow server reads it)
        self.proc: subprocess.Popen | None = None
        self.started_in: float | None = None
        self.log_path = self.tmp / "server.log"

    @property
    def sid(self) -> int:
        return self.proc.pid

    def start(self, timeout: float = 180) -> "StockServer":
        log = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise BenchServerError(f"stock server exited {self.proc.returncode}:\n{self.log_tail()}")
            if health(self.url, timeout=1.0) == 200:
                self.started_in = time.monotonic() - t0
                return self
            time.sleep(0.1)
        self.stop()
        raise BenchServerError(f"stock server: no /health within {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None:
            _kill_session(self.proc.pid, proc=self.proc)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""


class ProjectServer:
    """The project's entrypoint (image/entrypoint.py) through tests/support/server.Server,
    configured by environment as on AWS (the README's container contract), auth on; `extra` are the variant's
    settings (e.g. MLFLOW_WORKERS). As on AWS, the admin step (`entrypoint.py admin`, master credentials)
    prepares the databases before the first start, and the server connects as the application user
    `<user>_app` (read/write rows only), not as `user`."""

    def __init__(self, db, user: str, password: str, name: str, auth_name: str, s3, bucket: str, prefix: str,
                 cpus: str, extra: dict[str, str] | None = None) -> None:
        self.prepare = lambda: prepare_databases(db, f"{user}_app", password, name, auth_name)
        self.prepared = False
        env = {**database_env(db, f"{user}_app", password, name, auth_name), **s3_env(s3, bucket, prefix),
               "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
               "AWS_REGION": "us-east-1", **(extra or {})}
        self.server = Server(env=env, argv=["taskset", "-c", cpus, PYTHON, str(ENTRYPOINT)], startup_timeout=180)
        self.spool = self.server.spool
        self.url = self.server.url
        self.auth = (ADMIN, ADMIN_PASSWORD)
        self.started_in: float | None = None

    @property
    def sid(self) -> int:
        return self.server.proc.pid

    def start(self) -> "ProjectServer":
        try:
            if not self.prepared:
                self.prepare()  # not part of the measured start-up: on AWS it runs before any task starts
                self.prepared = True
            self.server.start()
        except Exception as e:
            raise BenchServerError(str(e)) from None
        self.started_in = self.server.started_in
        return self

    def stop(self) -> None:
        if self.server.proc is not None:
            sid = self.server.proc.pid
            self.server.stop()
            _kill_session(sid)

    def close(self) -> None:
        self.stop()
        self.server.close()

    def log_tail(self, n: int = 30) -> str:
        return self.server.output_tail(n)
