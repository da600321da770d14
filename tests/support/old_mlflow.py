"""An older MLflow, installed from PyPI into a throwaway venv, for upgrade rehearsals and the upgrade bench.

    python = old_mlflow.venv("2.22.5")          # built on first use, then reused
    old_mlflow.run(python, "script.py", ...)     # run a script with that MLflow

The venv lives under ~/.cache/mlflow-tracking-tests/venvs/<version> and is used only once its
completion marker exists (an interrupted build is rebuilt from scratch). Builds are serialized by a
file lock, so two test processes never build the same venv at once. pip runs with bounded timeouts
and retries; when PyPI cannot be reached the build fails with one line (OldMlflowError), it is not
skipped: a rehearsal that silently does not run proves nothing.

What is installed: `mlflow==<version>` with its dependencies as PyPI declares them (the server's
Flask/FastAPI app, SQLAlchemy, alembic) plus the two database drivers the image uses (PyMySQL,
psycopg2-binary) and PINS (an upper bound where a dependency released after that MLflow breaks it);
nothing of this project.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("MLFLOW_TESTS_CACHE", Path.home() / ".cache" / "mlflow-tracking-tests")) / "venvs"
MARKER = ".complete"
DRIVERS = ("pymysql", "psycopg2-binary")
# what the old release was used with, where today's newest breaks it: MLflow before 3.x's later releases
# imports sqlalchemy.pool.FallbackAsyncAdaptedQueuePool, which SQLAlchemy 2.1 removed
PINS = ("sqlalchemy<2.1",)
PIP_TIMEOUT = 60          # seconds per network operation (pip --timeout)
PIP_RETRIES = 3
BUILD_TIMEOUT = 1800      # seconds for the whole install


class OldMlflowError(RuntimeError):
    """The old MLflow could not be installed (one line: which version, why)."""


def venv(version: str) -> Path:
    """The python of a venv with mlflow==`version` and the drivers, built on first use."""
    root = CACHE / version
    python = root / "bin" / "python"
    if _complete(root, version):
        return python
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{version}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _complete(root, version):  # another process built it while we waited
                return python
            shutil.rmtree(root, ignore_errors=True)
            _build(version, root)
            (root / MARKER).write_text(" ".join(requirements(version)) + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python


def requirements(version: str) -> list[str]:
    return [f"mlflow[auth]=={version}", *DRIVERS, *PINS]  # [auth]: Flask-WTF, for --app-name basic-auth


def _complete(root: Path, version: str) -> bool:
    """Built to completion with today's requirement list (a changed list rebuilds it)."""
    try:
        return (root / MARKER).read_text().split() == requirements(version)
    except OSError:
        return False


def _build(version: str, root: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, capture_output=True, timeout=300)
    cmd = [str(root / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "--timeout", str(PIP_TIMEOUT), "--retries", str(PIP_RETRIES), *requirements(version)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        shutil.rmtree(root, ignore_errors=True)
        raise OldMlflowError(f"installing mlflow=={version} from PyPI took longer than {BUILD_TIMEOUT} s") from None
    if p.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        tail = [line for line in (p.stderr or p.stdout).splitlines() if line.strip()][-1:] or ["(no output)"]
        raise OldMlflowError(f"cannot install mlflow=={version} from PyPI (needed for the upgrade rehearsal; "
                             f"is PyPI reachable?): {tail[0][:300]}")


def clean_env(**extra: str) -> dict[str, str]:
    """A minimal environment for the old MLflow's processes (no MLFLOW_*/AWS_* of the caller)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "HOME")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra)
    return env


def run(python: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600,
        cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """Run `python args...` to completion (text output captured); raises on a non-zero exit."""
    p = subprocess.run([str(python), *args], env=env or clean_env(), cwd=cwd, capture_output=True, text=True,
                       timeout=timeout, start_new_session=True)
    if p.returncode != 0:
        raise OldMlflowError(f"{Path(python).parent.parent.name}: {' '.join(args[:2])} exited {p.returncode}:\n"
                             f"{(p.stdout + p.stderr)[-3000:]}")
    return p


@contextlib.contextmanager
def bin_path(python: Path):
    """The venv's bin directory first on PATH (for `mlflow` console scripts)."""
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(python).parent}:{saved}"
    try:
        yield
    finally:
        os.environ["PATH"] = saved


class OldServer:
    """`mlflow server --app-name basic-auth` of an old MLflow venv on 127.0.0.1, as a deployment of that
    time ran it: tracking store and basic-auth store on a database server, artifacts proxied to a local
    directory, one worker. The URIs travel in the environment (MLFLOW_BACKEND_STORE_URI, the auth ini).

        with OldServer(python, backend_uri, auth_uri, admin_password, secret_key) as srv:
            srv.url
    """

    def __init__(self, python: Path, backend_uri: str, auth_uri: str, admin_password: str, secret_key: str,
                 startup_timeout: float = 180) -> None:
        import tempfile

        from tests.support.peers import free_port

        self.python = Path(python)
        self.tmp = Path(tempfile.mkdtemp(prefix="mlflow-old-server-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = startup_timeout
        ini = self.tmp / "basic_auth.ini"
        # configparser interpolates '%': a URL-encoded password needs '%%'
        ini.write_text("[mlflow]\ndefault_permission = READ\n"
                       f"database_uri = {auth_uri.replace('%', '%%')}\n"
                       f"admin_username = admin\nadmin_password = {admin_password.replace('%', '%%')}\n"
                       "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        self.env = clean_env(MLFLOW_BACKEND_STORE_URI=backend_uri, MLFLOW_AUTH_CONFIG_PATH=str(ini),
                             MLFLOW_FLASK_SERVER_SECRET_KEY=secret_key, HOME=str(self.tmp), TMPDIR=str(self.tmp))
        self.proc: subprocess.Popen | None = None
        self.log = self.tmp / "server.log"

    def start(self) -> "OldServer":
        import time
        import urllib.request

        cmd = [str(self.python.parent / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1", "--artifacts-destination", str(self.tmp / "artifacts")]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise OldMlflowError(f"the old mlflow server exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            time.sleep(0.5)
        self.stop()
        raise OldMlflowError(f"the old mlflow server did not answer /health within {self.timeout:.0f} s:\n"
                             f"{self.output()[-3000:]}")

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        import signal

        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers share the session
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def __enter__(self) -> "OldServer":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
