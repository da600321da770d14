"""A database server that is not there yet is waited for (bounded); a wrong login is not.

AWS documents three situations in which a server task starts before its database answers:

* Aurora, "Creating an Amazon Aurora DB cluster" and "Cluster endpoints for Amazon Aurora": the
  cluster (and its cluster endpoint name) exists while the writer DB instance is still being
  created; connections to the endpoint fail until the instance is available, minutes later.
* Aurora, "Scaling to Zero ACUs with automatic pause and resume for Aurora Serverless v2": a
  paused (0 ACU) instance resumes when a connection request arrives; the resume takes about
  15 seconds, during which that connection waits or fails.
* Amazon ECS, "How the Amazon ECS deployment circuit breaker detects failures": a deployment
  whose tasks keep failing to start is moved to FAILED after a few failures (minimum threshold
  3) and ECS stops launching tasks for it; it does not try again later.

So a task must wait for an unreachable database (bounded, logged) instead of exiting at once,
and still fail fast on what waiting cannot fix (a wrong password, a database it may not create).
The local stand-ins are as strict: a database server whose port refuses connections for 40 s,
and a listener that accepts TCP connections and never sends a byte.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import threading
import time
from urllib.parse import quote

import pytest

from tests.server.conftest import ADMIN_PASSWORD, DB_PASSWORD, SECRET_KEY
from tests.support.dbadmin import prepare_databases
from tests.support.peers import LOOPBACK, free_port
from tests.support.server import Server, database_env, run_entrypoint

SECRETS = [DB_PASSWORD, quote(DB_PASSWORD, safe=""), ADMIN_PASSWORD, SECRET_KEY]
WAIT_LINE = re.compile(r"^mlflow-entrypoint: database not ready: (?P<what>.+); attempt (?P<attempt>\d+), "
                       r"next try in (?P<wait>\d+) s, (?P<left>\d+) s left of MLFLOW_DB_WAIT_SECONDS=(?P<limit>\d+)$",
                       re.MULTILINE)
LATE_BY = 40  # seconds between the server process's start and the database's


def wait_lines(output: str) -> list[re.Match]:
    return list(WAIT_LINE.finditer(output))


def assert_no_secret(output: str) -> None:
    for s in SECRETS:
        assert s not in output, f"secret printed:\n{output}"


@pytest.fixture
def late_database(database, tmp_path):
    """A database server of the test's engine on a fixed port, prepared by the admin step (databases,
    application user, schemas: `pulumi up` runs it before any server task), but stopped: nothing
    listens on its port until the test starts it."""
    peer = type(database)(port=free_port())
    try:
        peer.start()
        prepare_databases(peer, "mlflow_app", DB_PASSWORD)
        peer.stop()
        yield peer
    finally:
        peer.close()


def test_database_that_starts_40_s_late_is_waited_for(late_database, tmp_path):
    """The entrypoint starts first; the database server starts on its port 40 s later. The
    server must reach /health on the default wait, with each wait logged on stdout."""
    env = {**database_env(late_database, "mlflow_app", DB_PASSWORD), "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}
    srv = Server(env, startup_timeout=240)
    try:
        srv.spawn()
        t0 = time.monotonic()
        while time.monotonic() - t0 < LATE_BY:
            assert srv.proc.poll() is None, (f"the entrypoint gave up (exit {srv.proc.returncode}) while the "
                                             f"database was not there yet:\n{srv.output_tail()}")
            time.sleep(0.5)
        late_database.start()
        srv.wait_healthy()
        out = srv.output()
        waits = wait_lines(out)
        assert len(waits) >= 3, f"no wait logged:\n{out}"
        where = f"{LOOPBACK}:{late_database.port}"
        assert all(where in w["what"] for w in waits), out
        assert [int(w["attempt"]) for w in waits] == list(range(1, len(waits) + 1))
        delays = [int(w["wait"]) for w in waits]
        assert delays[:3] == [1, 2, 4] and max(delays) <= 15, delays  # backoff, capped
        assert all(w["limit"] == "300" for w in waits)  # the default
        assert_no_secret(out)
    finally:
        srv.close()


class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte (a server stuck before its
    handshake, or something else on the database's port)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def __enter__(self) -> "SilentListener":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()


@pytest.mark.parametrize("engine", ["mysql", "postgresql"])
def test_server_that_accepts_but_never_answers_is_a_bounded_failure(engine, tmp_path):
    """PyMySQL's connect_timeout covers the TCP connect only (the handshake then reads with
    read_timeout, None by default: forever); libpq's connect_timeout covers the whole connection
    start. Either way the entrypoint must retry until MLFLOW_DB_WAIT_SECONDS, then exit 2 with
    one line naming host:port."""
    with SilentListener() as listener:
        env = {"MLFLOW_DB_ENGINE": engine, "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(listener.port),
               "MLFLOW_DB_USER": "mlflow_app", "MLFLOW_DB_PASSWORD": DB_PASSWORD,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
               "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"), "MLFLOW_DB_WAIT_SECONDS": "20",
               "MLFLOW_PORT": str(free_port())}
        try:
            result = run_entrypoint(env, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the entrypoint was still running after 120 s against a server on port {listener.port} "
                        f"that never answers (MLFLOW_DB_WAIT_SECONDS=20)")
        attempts = len(listener.accepted)
    assert result.returncode == 2, result.output
    assert len(result.error_lines) == 1, f"stderr must be one line:\n{result.stderr}"
    line = result.error_lines[0]
    assert line.startswith("mlflow-entrypoint: error: ") and f"{LOOPBACK}:{listener.port}" in line, line
    assert "did not answer" in line and "MLFLOW_DB_WAIT_SECONDS=20" in line, line
    assert wait_lines(result.stdout), f"no wait logged:\n{result.stdout}"
    assert attempts >= 2, f"connected {attempts} time(s): not retried"
    assert_no_secret(result.output)


WRONG_PASSWORD = "Wr0ng@:/?#%&+password"


@pytest.mark.parametrize("case", ["wrong password", "database it may not create"])
def test_what_waiting_cannot_fix_fails_at_once(case, fresh, tmp_path):
    """A refused login or a missing database the user may not create is not retried, whatever
    MLFLOW_DB_WAIT_SECONDS says: exit 2 and one line, no wait logged."""
    if case == "wrong password":
        f = fresh()
        env, words = {**f.env(), "MLFLOW_DB_PASSWORD": WRONG_PASSWORD}, ("refused the login", f.user)
    else:
        f = fresh(create_any=False)
        env, words = f.env(), (f"'{f.auth_name}' does not exist", "may not create it")
    env.update({"MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"), "MLFLOW_DB_WAIT_SECONDS": "3600",
                "MLFLOW_PORT": str(free_port())})
    result = run_entrypoint(env, timeout=120)
    assert result.returncode == 2, result.output
    assert len(result.error_lines) == 1, f"stderr must be one line:\n{result.stderr}"
    for word in words:
        assert word in result.error_lines[0], result.error_lines[0]
    assert wait_lines(result.stdout) == [], f"retried what waiting cannot fix:\n{result.stdout}"
    for s in (*SECRETS, WRONG_PASSWORD, quote(WRONG_PASSWORD, safe="")):
        assert s not in result.output


@pytest.mark.parametrize("value", ["-1", "3601", "5m"])
def test_wait_setting_is_checked(value, tmp_path):
    env = {"MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(free_port()),
           "MLFLOW_DB_USER": "u", "MLFLOW_DB_PASSWORD": DB_PASSWORD, "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
           "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"), "MLFLOW_DB_WAIT_SECONDS": value,
           "MLFLOW_PORT": str(free_port())}
    result = run_entrypoint(env, timeout=60)
    assert result.returncode == 2 and len(result.error_lines) == 1, result.output
    assert "MLFLOW_DB_WAIT_SECONDS" in result.error_lines[0] and "0..3600" in result.error_lines[0]


# --- db_wait in-process: what is waited for, and the schedule ------------------------------------
def _db_wait():
    from tests.support.server import load_entrypoint

    load_entrypoint()  # puts image/ on sys.path
    import db_wait

    return db_wait


@pytest.mark.parametrize("kind,error,category,words", [
    ("mysql", (2003, "Can't connect to MySQL server on 'db.example' ([Errno -2] Name or service not known)"),
     "unreachable", ("cannot reach", "host name does not resolve")),
    ("mysql", (2013, "Lost connection to MySQL server during query (timed out)"), "unreachable",
     ("accepted the connection but did not answer",)),
    ("mysql", (1040, "Too many connections"), "unreachable", ("does not take connections now",)),
    ("mysql", (1045, "Access denied for user 'u'@'10.0.0.5' (using password: YES)"), "login", ("refused the login",)),
    ("postgresql", 'could not translate host name "db.example" to address: Name or service not known',
     "unreachable", ("cannot reach", "host name does not resolve")),
    ("postgresql", 'connection to server at "10.0.0.9", port 5432 failed: FATAL:  the database system is starting up',
     "unreachable", ("does not take connections now", "starting up")),
    ("postgresql", 'connection to server at "10.0.0.9", port 5432 failed: FATAL:  password authentication failed '
     'for user "u"', "login", ("refused the login",)),
], ids=["mysql-dns", "mysql-silent", "mysql-full", "mysql-login", "pg-dns", "pg-starting", "pg-login"])
def test_classification(kind, error, category, words):
    """Name not resolving (a new cluster endpoint), a server starting up or full: waited for; a
    refused login: not. (Driver errors as PyMySQL 1.1 and libpq 16 word them.)"""
    import psycopg2
    import pymysql
    from sqlalchemy.engine import make_url

    db_wait = _db_wait()
    exc = pymysql.err.OperationalError(*error) if kind == "mysql" else psycopg2.OperationalError(error)
    url = make_url(f"{'mysql+pymysql' if kind == 'mysql' else 'postgresql+psycopg2'}://u:pw@db.example:3306/mlflow")
    got, line = db_wait.classify(kind, url, exc)
    assert got == category, line
    assert "db.example:3306" in line and all(w in line for w in words), line


def test_backoff_schedule_and_deadline():
    """1, 2, 4, 8, 15, 15, ... s, never past the deadline; one log line per wait; GaveUp at the end."""
    db_wait = _db_wait()
    now = [0.0]
    logged: list[str] = []

    def attempt():
        now[0] += 0.5  # each attempt takes half a second
        raise db_wait.NotReady("cannot reach the MySQL server at h:3306 (connection refused)")

    with pytest.raises(db_wait.GaveUp) as gave_up:
        db_wait.retry(attempt, 60, logged.append, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    waits = [int(m["wait"]) for m in WAIT_LINE.finditer("\n".join(f"mlflow-entrypoint: {x}" for x in logged))]
    assert waits[:6] == [1, 2, 4, 8, 15, 15] and len(waits) == len(logged)
    assert "MLFLOW_DB_WAIT_SECONDS=60" in str(gave_up.value) and "h:3306" in str(gave_up.value)
    assert now[0] <= 60 + 0.5


def test_other_errors_are_not_retried():
    db_wait = _db_wait()
    calls = []

    def attempt():
        calls.append(1)
        raise RuntimeError("refused the login")

    with pytest.raises(RuntimeError):
        db_wait.retry(attempt, 300, lambda line: None, sleep=lambda s: None)
    assert len(calls) == 1
