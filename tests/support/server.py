"""Start the image's entrypoint (image/entrypoint.py) as a real process on 127.0.0.1.

    from tests.support.server import Server

    with Server(env={"MLFLOW_DB_ENGINE": "mysql", ...}) as srv:    # waits for /health
        srv.url                     # http://127.0.0.1:<port>
        srv.client_env("admin", pw) # env for an MLflow client (tracking URI + credentials)
        srv.output()                # everything the process printed so far (stdout+stderr)

    # a process that is expected to fail (or --healthcheck):
    result = run_entrypoint(env, timeout=60)  # -> Finished(returncode, stdout, stderr)

    env = {**database_env(mariadb, "mlflow", pw), **s3_env(s3, "bucket"),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "...", "MLFLOW_AUTH_ADMIN_PASSWORD": "..."}

A value of None in `env` removes that variable (e.g. MLFLOW_STATE_DIR=None to test the default).

A server on a database server (MariaDB, PostgreSQL) refuses databases that the admin step has not
prepared: run it first, as a deployment does (tests/support/dbadmin.py, `prepare_databases`), and
give the server the application user only.

The process is started in its own session with a clean environment: only PATH, LANG, HOME,
MLFLOW_HOST=127.0.0.1, MLFLOW_STATE_DIR=<tmp>/state, MLFLOW_SPOOL_DIR=<tmp>/spool (the caller's
`env` overrides any of these) and MLFLOW_PORT=<free port> (or `port`/env's). It
never inherits the caller's AWS_* or MLFLOW_* variables, so a test sees exactly what it sets.
`stop()` sends SIGTERM (the entrypoint exec's `mlflow server`, so the signal reaches it), waits,
then SIGKILLs the whole process group if it must; `close()` also removes the temporary dir.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.peers import LOOPBACK, free_port

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "image" / "entrypoint.py"
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def load_entrypoint():
    """image/entrypoint.py as a module (for tests of its functions in-process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("image_entrypoint", ENTRYPOINT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ServerError(RuntimeError):
    """The server process did not become healthy (the message carries the tail of its output)."""


def _base_env() -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYENV_VERSION")
    return {k: os.environ[k] for k in keep if k in os.environ}


def _merge(base: dict, env: dict) -> dict[str, str]:
    """`base` updated with `env`; a value of None in `env` removes the variable."""
    out = dict(base)
    for k, v in env.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = str(v)
    return out


def database_env(db, user: str, password: str, name: str = "mlflow", auth_name: str = "mlflow_auth") -> dict[str, str]:
    """MLFLOW_DB_* variables (the README's container contract) for a peer from tests.support.peers."""
    return {"MLFLOW_DB_ENGINE": db.engine, "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(db.port),
            "MLFLOW_DB_NAME": name, "MLFLOW_DB_USER": user, "MLFLOW_DB_PASSWORD": password,
            "MLFLOW_AUTH_DB_NAME": auth_name}


def s3_env(s3, bucket: str, prefix: str = "artifacts") -> dict[str, str]:
    """Artifact destination in a bucket of an S3Server peer, with its endpoint and test credentials."""
    return {**s3.env, "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/{prefix}"}


def health(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of GET <url>/health, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def error_lines(self) -> list[str]:
        """Non-empty lines on stderr (the entrypoint's contract: exactly one on a bad environment)."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_entrypoint(env: dict[str, str], args: tuple[str, ...] = (), timeout: float = 120,
                   cwd: str | os.PathLike | None = None) -> Finished:
    """Run the entrypoint to completion (for cases that must fail fast, or --healthcheck).

    Runs in a temporary directory (its embedded state, spool and HOME go there unless `env`
    says otherwise), removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="mlflow-entrypoint-") as tmp:
        full = _merge({**_base_env(), "HOME": tmp, "MLFLOW_HOST": LOOPBACK, "MLFLOW_STATE_DIR": f"{tmp}/state",
                       "MLFLOW_SPOOL_DIR": f"{tmp}/spool"}, env)
        p = subprocess.run([PYTHON, str(ENTRYPOINT), *args], env=full, cwd=cwd or tmp, capture_output=True,
                           timeout=timeout, start_new_session=True)
    return Finished(p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


class Server:
    """One entrypoint process. `env` is added to a clean environment (see module doc)."""

    def __init__(self, env: dict[str, str] | None = None, port: int | None = None,
                 cwd: str | os.PathLike | None = None, argv: list[str] | None = None,
                 startup_timeout: float = 120.0) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mlflow-server-"))
        self.port = port or int((env or {}).get("MLFLOW_PORT") or free_port())
        self.env = _merge({**_base_env(), "HOME": str(self.tmp), "MLFLOW_HOST": LOOPBACK,
                           "MLFLOW_STATE_DIR": str(self.tmp / "state"), "MLFLOW_SPOOL_DIR": str(self.tmp / "spool")},
                          {**(env or {}), "MLFLOW_PORT": str(self.port)})
        self.cwd = cwd or self.tmp
        self.argv = argv or [PYTHON, str(ENTRYPOINT)]
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.started_in: float | None = None  # seconds from spawn to /health 200
        self._out: list[bytes] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    @property
    def spool(self) -> Path:
        return Path(self.env["MLFLOW_SPOOL_DIR"])

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # --- life cycle -------------------------------------------------------------------------
    def spawn(self) -> "Server":
        """Start the process without waiting (use `wait_healthy()`); for simultaneous starts."""
        self._out = []
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._t0 = time.monotonic()
        self._reader = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _pump(self, proc: subprocess.Popen) -> None:
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            with self._lock:
                self._out.append(chunk)

    def wait_healthy(self, timeout: float | None = None) -> "Server":
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._join_reader()
                raise ServerError(f"entrypoint exited with {self.proc.returncode} before /health; output:\n"
                                  f"{self.output_tail()}")
            if health(self.url, timeout=1.0) == 200:
                self.started_in = time.monotonic() - self._t0
                return self
            time.sleep(0.2)
        out = self.output_tail()
        self.stop()
        raise ServerError(f"no /health 200 on {self.url} within {timeout or self.startup_timeout:.0f} s; output:\n{out}")

    def start(self) -> "Server":
        return self.spawn().wait_healthy()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait `timeout`, then SIGKILL the process group. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # uvicorn workers share the session; make sure none outlives the master
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._join_reader()
        return proc.returncode

    def restart(self) -> "Server":
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> "Server":
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    # --- output and clients -----------------------------------------------------------------
    def output(self) -> str:
        with self._lock:
            return b"".join(self._out).decode(errors="replace")

    def output_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def client_env(self, username: str | None = None, password: str | None = None) -> dict[str, str]:
        """Variables for an MLflow client talking to this server (add S3 vars for presigned mode)."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        if username is not None:
            env["MLFLOW_TRACKING_USERNAME"] = username
            env["MLFLOW_TRACKING_PASSWORD"] = password or ""
        return env

    def pids(self) -> list[int]:
        """Every process of the server (its own session: mlflow server, uvicorn, workers)."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        out = subprocess.run(["ps", "-o", "pid=", "--sid", str(self.proc.pid)], capture_output=True, text=True)
        return sorted(int(x) for x in out.stdout.split())

    def cmdlines(self) -> dict[int, list[str]]:
        """argv of every process of the server."""
        found = {}
        for pid in self.pids():
            with contextlib.suppress(OSError):
                found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        return found

    def pss_kib(self) -> int:
        """Proportional set size of all its processes (KiB, from /proc/<pid>/smaps_rollup)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        return total


@contextlib.contextmanager
def client_env(env: dict[str, str | None]):
    """Set (None: unset) environment variables of this process for MLflow client calls; restore after."""
    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
