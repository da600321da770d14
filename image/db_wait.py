"""Waiting for a database server that is not there yet, with every connection bounded.

On AWS a task can start before its database answers: a new Aurora cluster's endpoint exists
minutes before its writer instance accepts connections, and a paused Aurora Serverless v2
instance (0 ACU) takes about 15 s to resume. A task that exits at once is counted as a failed
start by ECS's deployment circuit breaker, which stops the deployment for good after a few. So
the entrypoint retries what waiting can fix, with backoff (1, 2, 4, 8, 15, 15, ... s) up to
MLFLOW_DB_WAIT_SECONDS, logging each wait on one line, and fails at once (one line, exit 2) on
what it cannot fix: a refused login, a database the user may not create.

Every connection made before the server starts is bounded, handshake included:
 - PyMySQL: `connect_timeout` covers the TCP connect only; after it, the handshake and every reply
   are read with `read_timeout`, which is None (wait forever) unless given (pymysql/connections.py,
   Connection.connect: `sock.settimeout(self._read_timeout)` before `_get_server_information()`).
   A server that accepts and never answers then fails with error 2013 "... (timed out)".
 - libpq (psycopg2): `connect_timeout` covers the whole connection start, SSL negotiation, startup
   and authentication included ("timeout expired"); measured with a listener that never answers.
   Later replies are bounded by `statement_timeout` (server side) and by TCP keepalives and
   `tcp_user_timeout` (a server that went away).
The limits travel in the URL's query string (SQLAlchemy passes it to the driver, converting
PyMySQL's timeouts to int), so that engines MLflow builds from the URL text are bounded too.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

import db_tls

WAIT_DEFAULT = 300  # seconds: more than a writer instance's start and an auto-pause resume
WAIT_MAX = 3600
BACKOFF_FIRST = 1
BACKOFF_CAP = 15
CONNECT_TIMEOUT = 5  # seconds for the TCP connect (PyMySQL)
ANSWER_TIMEOUT = 10  # seconds for the handshake and each reply of the checks (libpq: the whole connection start)
WORK_TIMEOUT = 3600  # seconds for each reply during the schema lock wait (up to 900 s) and migrations

T = TypeVar("T")


class NotReady(Exception):
    """The database server cannot be reached or does not answer yet: worth waiting for."""


class GaveUp(Exception):
    """Still not ready when MLFLOW_DB_WAIT_SECONDS ran out (one line, no secret)."""


def connect_args(url, work: bool = False) -> dict:
    """Driver arguments that bound a connection's start and its replies (see module doc)."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    reply = WORK_TIMEOUT if work else ANSWER_TIMEOUT
    if backend in ("mysql", "mariadb"):
        if driver in ("pymysql", "mysqldb"):
            return {"connect_timeout": CONNECT_TIMEOUT, "read_timeout": reply, "write_timeout": reply}
        return {"connect_timeout": CONNECT_TIMEOUT}
    if backend == "postgresql":
        if driver in ("psycopg2", "psycopg"):
            return {"connect_timeout": ANSWER_TIMEOUT, "options": f"-c statement_timeout={reply * 1000}",
                    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
                    "tcp_user_timeout": 60_000}
        return {"connect_timeout": ANSWER_TIMEOUT}
    return {}


def bounded_url(url, work: bool = False):
    """`url` with connect_args() in its query string: engines that MLflow's own migrations build
    from the URL text (the auth store's alembic env.py does) are bounded as well."""
    args = connect_args(url, work)
    return url.update_query_dict({k: str(v) for k, v in args.items()}) if args else url


def _reason(text: str) -> str:
    """A short cause for the common network failures; the driver's own text otherwise."""
    low = text.lower()
    for needle, short in (("connection refused", "connection refused"),
                          ("could not translate host name", "host name does not resolve"),
                          ("name or service not known", "host name does not resolve"),
                          ("temporary failure in name resolution", "host name does not resolve"),
                          ("no route to host", "no route to host"),
                          ("network is unreachable", "network is unreachable")):
        if needle in low:
            return short
    return text


def classify(kind: str, url, exc: Exception) -> tuple[str, str]:
    """(category, one-line description) of a connection error. Categories: unreachable (worth
    waiting for), login, nodb, denied, tls, other. A TLS failure (db_tls.classify: a certificate
    the bundle does not verify, another host name, TLS required by one side only) is never
    "unreachable": PyMySQL reports it as error 2003 "Can't connect", which waiting cannot fix."""
    tls = db_tls.classify(kind, url, exc)
    if tls:
        return tls
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    where = f"{url.host}:{url.port}"
    if kind == "mysql":
        args = getattr(orig, "args", ()) or ()
        code = args[0] if args and isinstance(args[0], int) else None
        message = " ".join(str(args[1]).split()) if len(args) > 1 else text
        if code in (2003, 2013) and "timed out" in message:
            if code == 2013:  # TCP connected, then no handshake within read_timeout
                return "unreachable", (f"the MySQL server at {where} accepted the connection but did not answer "
                                       f"within {ANSWER_TIMEOUT} s")
            return "unreachable", f"the MySQL server at {where} did not answer the TCP connect within {CONNECT_TIMEOUT} s"
        if code in (2002, 2003, 2005, 2006, 2013):
            return "unreachable", f"cannot reach the MySQL server at {where} ({_reason(message)})"
        if code in (1040, 1053, 1203):  # too many connections, shutdown in progress, user's connection limit
            return "unreachable", f"the MySQL server at {where} does not take connections now ({message})"
        if code == 1045:
            return "login", f"the MySQL server at {where} refused the login of user {url.username!r} (wrong password?)"
        if code == 1049:
            return "nodb", f"database {url.database!r} does not exist on {where}"
        if code == 1044:
            return "denied", f"user {url.username!r} may not use database {url.database!r} on {where} ({message})"
    else:
        low = text.lower()
        if "password authentication failed" in low or "no password supplied" in low or "no pg_hba.conf" in low:
            return "login", (f"the PostgreSQL server at {where} refused the login of user "
                             f"{url.username!r} (wrong password?)")
        if f'database "{url.database}" does not exist'.lower() in low:
            return "nodb", f"database {url.database!r} does not exist on {where}"
        if "timeout expired" in low:
            return "unreachable", (f"the PostgreSQL server at {where} did not answer within {ANSWER_TIMEOUT} s "
                                   f"(no TCP connection, or no reply to the handshake)")
        if any(s in low for s in ("the database system is starting up", "the database system is shutting down",
                                  "the database system is in recovery mode", "not yet accepting connections",
                                  "too many clients already", "remaining connection slots are reserved")):
            first = text.split(" FATAL: ")[-1] if " FATAL: " in text else text
            return "unreachable", f"the PostgreSQL server at {where} does not take connections now ({first})"
        if any(s in low for s in ("connection refused", "could not translate host", "could not connect",
                                  "no route to host", "name or service not known", "network is unreachable",
                                  "connection timed out", "server closed the connection unexpectedly")):
            return "unreachable", f"cannot reach the PostgreSQL server at {where} ({_reason(text)})"
        if "permission denied" in low:
            return "denied", f"user {url.username!r} may not use database {url.database!r} on {where} ({text})"
    return "other", f"cannot connect to the {kind} database {url.database!r} at {where}: {type(orig).__name__}: {text}"


def backoff(first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP):
    """1, 2, 4, 8, 15, 15, ... (seconds)."""
    delay = first
    while True:
        yield min(delay, cap)
        delay = min(delay * 2, cap)


def retry(attempt: Callable[[], T], limit: int, log: Callable[[str], None], *,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """attempt() until it returns; a NotReady is retried with backoff while `limit` seconds last,
    each wait logged as one line; any other exception goes through. GaveUp when time runs out."""
    start = clock()
    deadline = start + limit
    delays = backoff()
    number = 0
    while True:
        number += 1
        try:
            return attempt()
        except NotReady as e:
            left = deadline - clock()
            if left <= 0:
                if limit == 0:
                    raise GaveUp(f"{e} (MLFLOW_DB_WAIT_SECONDS=0: not waiting)") from None
                raise GaveUp(f"{e}; still not ready after {number} attempts in {clock() - start:.0f} s "
                             f"(MLFLOW_DB_WAIT_SECONDS={limit})") from None
            wait = min(next(delays), left)
            log(f"database not ready: {e}; attempt {number}, next try in {wait:.0f} s, {left:.0f} s left of "
                f"MLFLOW_DB_WAIT_SECONDS={limit}")
            sleep(wait)
