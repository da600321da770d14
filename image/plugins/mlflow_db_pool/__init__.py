"""Database connection pools of MLflow's server processes, as this image configures them.

Three things MLflow 3.17.2 does not do by itself (``mlflow/store/db/utils.py``,
``create_sqlalchemy_engine``, the one place every MLflow store builds its SQLAlchemy engine):

1. **The configured pool, 0 included.** MLflow passes ``MLFLOW_SQLALCHEMYSTORE_POOL_SIZE`` and
   ``..._MAX_OVERFLOW`` to SQLAlchemy only when they are truthy (``if pool_max_overflow:``), so an
   overflow of 0 silently became SQLAlchemy's default of 10 (SQLAlchemy "Connection Pooling":
   QueuePool ``pool_size=5, max_overflow=10``). Here both are passed exactly as set.
2. **Idle release** (``MLFLOW_DB_IDLE_RELEASE_SECONDS``, default 300; 0 = never): when an
   engine has had no connection checked out for that long, its pooled connections are closed
   (``Engine.dispose()``; a request in flight keeps its connection, which is closed once it is
   back). Amazon Aurora User Guide, "Scaling to Zero ACUs with automatic pause and resume for
   Aurora Serverless v2": an instance pauses only when no user connection is open; pooled
   connections otherwise stay open until the server's ``wait_timeout`` (MySQL: 8 hours), and a
   0-ACU database never pauses while a task runs.
3. **Waiting for the database** (``MLFLOW_DB_RECONNECT_SECONDS``, default 60; 0 = fail at once):
   a new connection that is refused or times out because the server is not there (stopped,
   restarting, failing over, resuming from a pause: about 15 s, longer after a long pause) is
   tried again with backoff (0.5, 1, 2, 4, 5, 5, ... s) within that time. Only the request that
   needs the connection waits (MLflow's handlers run in worker threads); the event loop, the
   health check and requests on pooled connections go on. Pool pre-ping (always on in MLflow)
   turns a pooled connection the database dropped into such a new connection.

Where it hooks in: ``mlflow.store.db.utils`` reaches SQLAlchemy through its module global
``sqlalchemy``; that name is given an object that forwards everything to SQLAlchemy and adds the
pool arguments and the two behaviours to ``create_engine``. Other modules see SQLAlchemy
unchanged. The hook is installed when MLflow loads its plugins: the ``*.dist-info`` beside this
package declares a ``mlflow.default_experiment_provider`` entry point, a group MLflow loads in
every process at ``import mlflow`` (``mlflow/tracking/default_experiment/registry.py``), so the
``mlflow server`` process, every uvicorn worker and the job runner get it, whatever the app
(``basic-auth``, ``basic-auth-fastpath``). The provider itself is never "in context", so it
changes nothing about experiments. The image's entrypoint puts this directory on ``PYTHONPATH``.
SQLite engines are left as MLflow makes them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref

import mlflow_patch_hook  # beside this package (image/plugins): the import hook the plugins share

TARGET = "mlflow.store.db.utils"
IDLE_DEFAULT = 300
RECONNECT_DEFAULT = 60
BACKOFF_CAP = 5.0
PG_CONNECT_TIMEOUT = 10  # seconds per attempt when the URL sets none (libpq waits for TCP otherwise)
# PyMySQL: 2002/2003 cannot connect, 2006 gone away, 2013 lost during the handshake, 1053 shutdown in progress
MYSQL_NOT_THERE = frozenset({2002, 2003, 2006, 2013, 1053})
PG_NOT_THERE = ("connection refused", "could not connect", "timeout expired", "connection timed out",
                "server closed the connection unexpectedly", "the database system is starting up",
                "the database system is shutting down", "the database system is in recovery mode",
                "not yet accepting connections", "no route to host", "could not translate host name",
                "network is unreachable")
TLS_FAILURES = ("[ssl", "certificate", "does not support ssl", "does not match host name", "insecure transport")

_log = logging.getLogger("mlflow.store.db.pool")  # under MLflow's configured "mlflow" logger


# --------------------------------------------------------------------------------------------
# settings (the entrypoint validates them before the server starts; here a bad value is ignored)
# --------------------------------------------------------------------------------------------
def _env_int(name: str, default: int | None, lo: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        _log.warning("%s=%r is not an integer: ignored", name, raw)
        return default
    return value if value >= lo else default


def pool_arguments(kwargs: dict) -> dict:
    """``create_engine`` keyword arguments with the configured pool size and overflow (0 kept),
    for the default QueuePool only (a chosen ``poolclass`` such as NullPool is left alone)."""
    out = dict(kwargs)
    poolclass = out.get("poolclass")
    if poolclass is not None and getattr(poolclass, "__name__", "") != "QueuePool":
        return out
    size = _env_int("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", None, 1)  # 0 would mean "no limit" to SQLAlchemy
    overflow = _env_int("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", None, 0)
    if size is not None:
        out["pool_size"] = size
    if overflow is not None:
        out["max_overflow"] = overflow
    return out


# --------------------------------------------------------------------------------------------
# waiting for the database on connect
# --------------------------------------------------------------------------------------------
def not_there(exc: BaseException) -> bool:
    """True when a failed connect means "the server is not there (yet)", worth waiting for;
    False for everything waiting cannot fix (a refused login, a missing database, TLS: PyMySQL
    reports a certificate that does not verify as 2003 "Can't connect ... [SSL: ...]")."""
    args = getattr(exc, "args", ()) or ()
    text = " ".join(str(exc).split()).lower()
    if any(s in text for s in TLS_FAILURES):
        return False
    if args and isinstance(args[0], int):  # PyMySQL: (code, message)
        return args[0] in MYSQL_NOT_THERE
    return any(s in text for s in PG_NOT_THERE)


def connect_waiting(connect, wait: float, *, sleep=time.sleep, clock=time.monotonic):
    """connect() until it succeeds; a not_there() failure is retried with backoff while `wait`
    seconds last, anything else (or the last failure) is raised as is."""
    start = clock()
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            conn = connect()
        except Exception as e:
            left = start + wait - clock()
            if not not_there(e) or left <= 0:
                if attempt > 1:
                    _log.warning("database still not reachable after %.1f s and %d attempts: %s",
                                 clock() - start, attempt, " ".join(str(e).split())[:300])
                raise
            if attempt == 1:
                _log.warning("database not reachable (%s): this request waits up to %d s "
                             "(MLFLOW_DB_RECONNECT_SECONDS)", " ".join(str(e).split())[:200], wait)
            sleep(min(delay, left))
            delay = min(delay * 2, BACKOFF_CAP)
            continue
        if attempt > 1:
            _log.warning("database reachable again after %.1f s (%d attempts)", clock() - start, attempt)
        return conn


def _on_do_connect(wait: int):
    def do_connect(dialect, conn_rec, cargs, cparams):
        if dialect.name == "postgresql":
            cparams.setdefault("connect_timeout", PG_CONNECT_TIMEOUT)
        return connect_waiting(lambda: dialect.connect(*cargs, **cparams), wait)

    return do_connect


# --------------------------------------------------------------------------------------------
# idle release
# --------------------------------------------------------------------------------------------
class _Idle:
    """Last use of one engine's pool, and pools it replaced that may still hold a connection."""

    def __init__(self) -> None:
        self.last_used = time.monotonic()
        self.retired: list[tuple[object, float]] = []


class IdleReaper:
    """One daemon thread per process: every `tick` s, an engine whose pool has had nothing
    checked out for `idle` s and keeps connections gets ``Engine.dispose()``."""

    def __init__(self, idle: float) -> None:
        self.idle = idle
        self.tick = max(0.5, min(idle / 10, 15.0))
        self.engines: "weakref.WeakKeyDictionary[object, _Idle]" = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name="mlflow-db-idle-release", daemon=True)
        self.thread.start()

    def watch(self, engine) -> None:
        from sqlalchemy import event

        state = _Idle()
        with self.lock:
            self.engines[engine] = state

        def used(*_args) -> None:
            state.last_used = time.monotonic()

        event.listen(engine, "checkout", used)  # pool events on the engine follow dispose()'s new pool
        event.listen(engine, "checkin", used)

    def sweep(self) -> int:
        """One pass; returns how many pooled connections it closed."""
        with self.lock:
            engines = list(self.engines.items())
        closed, now = 0, time.monotonic()
        for engine, state in engines:
            for old, since in list(state.retired):  # a dispose() raced with a checkout: close it once returned
                if old.checkedout() == 0 and now - since >= 2 * self.tick:
                    closed += old.checkedin()
                    old.dispose()
                    state.retired.remove((old, since))
            pool = engine.pool
            if now - state.last_used < self.idle or pool.checkedout() or not pool.checkedin():
                continue
            kept = pool.checkedin()
            engine.dispose()  # closes every checked-in connection; a new pool takes over
            state.retired.append((pool, now))
            closed += kept
            _log.info("closed %d idle database connection(s) of %s after %d s without a request "
                      "(MLFLOW_DB_IDLE_RELEASE_SECONDS); the next request reconnects", kept,
                      engine.url.database, self.idle)
        return closed

    def _run(self) -> None:
        while True:
            time.sleep(self.tick)
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - never let the thread die; try again next tick
                _log.exception("idle release sweep failed")


_reaper: IdleReaper | None = None
_reaper_lock = threading.Lock()


def _reaper_for(idle: int) -> IdleReaper:
    global _reaper
    with _reaper_lock:
        if _reaper is None or _reaper.pid != os.getpid():  # a forked child starts its own
            _reaper = IdleReaper(idle)
        return _reaper


# --------------------------------------------------------------------------------------------
# the hook
# --------------------------------------------------------------------------------------------
class SqlalchemyForMlflow:
    """``sqlalchemy`` as ``mlflow.store.db.utils`` sees it: everything forwarded, and
    ``create_engine`` builds the configured pool with idle release and waiting connects."""

    _mlflow_db_pool = True

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def create_engine(self, url, *args, **kwargs):
        real = self._real
        backend = real.engine.make_url(url).get_backend_name()
        if backend == "sqlite":
            return real.create_engine(url, *args, **kwargs)
        kwargs = pool_arguments(kwargs)
        engine = real.create_engine(url, *args, **kwargs)
        reconnect = _env_int("MLFLOW_DB_RECONNECT_SECONDS", RECONNECT_DEFAULT, 0)
        idle = _env_int("MLFLOW_DB_IDLE_RELEASE_SECONDS", IDLE_DEFAULT, 0)
        if reconnect:
            real.event.listen(engine, "do_connect", _on_do_connect(reconnect))
        pooled = isinstance(engine.pool, real.pool.QueuePool)
        if idle and pooled:
            _reaper_for(idle).watch(engine)
        _log.info("database engine for %r: %s; idle connections closed after %s; a connect to a database "
                  "that is not there waits up to %d s", engine.url.database,
                  f"pool {engine.pool.size()} + overflow {kwargs.get('max_overflow', 10)}" if pooled
                  else type(engine.pool).__name__, f"{idle} s" if idle and pooled else "never", reconnect)
        return engine


def installed(utils) -> bool:
    return getattr(getattr(utils, "sqlalchemy", None), "_mlflow_db_pool", False)


def patch(utils) -> None:
    """Give `utils` (mlflow.store.db.utils) the hooked ``sqlalchemy`` (idempotent)."""
    if not installed(utils):
        utils.sqlalchemy = SqlalchemyForMlflow(utils.sqlalchemy)


def install() -> None:
    """Patch now if MLflow's db utils are loaded, else right after they are first imported (not before:
    importing them while ``import mlflow`` is still loading its plugins would be a circular import)."""
    mlflow_patch_hook.install(TARGET, patch)


class PoolHook(mlflow_patch_hook.EntryPointHook):
    """The ``mlflow.default_experiment_provider`` entry point: loading it installs the hooked ``sqlalchemy``."""

    target = TARGET
    patch = staticmethod(patch)
