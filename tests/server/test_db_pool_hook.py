"""image/plugins/mlflow_db_pool in-process, without a server: what counts as "the database is not
there" (worth waiting for), the bounded wait with backoff, and the idle sweep on a real pool.

The waits follow Amazon Aurora User Guide, "Scaling to Zero ACUs with automatic pause and resume
for Aurora Serverless v2" (a paused instance resumes when a connection request arrives, in about
15 s) and the refusals a stopped MySQL/PostgreSQL server gives (PyMySQL error 2003 "Can't connect",
libpq "Connection refused", "the database system is starting up"). Errors waiting cannot fix (a
wrong password, a missing database) fail at once, as MLflow would.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest

from tests.support.server import ROOT

PLUGIN = ROOT / "image" / "plugins" / "mlflow_db_pool" / "__init__.py"


@pytest.fixture(scope="module")
def hook():
    """The module loaded by path, not installed (install() is what MLflow's plugin loading calls); its
    directory on sys.path while it loads, as the server's PYTHONPATH has it (the import hook it shares
    with mlflow_spool_guard, image/plugins/mlflow_patch_hook.py, is imported from there)."""
    plugins = str(PLUGIN.parents[1])
    sys.path.insert(0, plugins)
    try:
        spec = importlib.util.spec_from_file_location("mlflow_db_pool_under_test", PLUGIN)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(plugins)
    return module


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def refused_mysql():
    import pymysql

    return pymysql.err.OperationalError(2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)")


def test_what_is_worth_waiting_for(hook):
    import psycopg2
    import pymysql

    assert hook.not_there(refused_mysql())
    assert hook.not_there(pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query"))
    assert hook.not_there(psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: '
                                                    'Connection refused\n\tIs the server running on that host?'))
    assert hook.not_there(psycopg2.OperationalError("FATAL:  the database system is starting up"))
    assert not hook.not_there(pymysql.err.OperationalError(1045, "Access denied for user 'u'@'127.0.0.1'"))
    assert not hook.not_there(pymysql.err.OperationalError(1049, "Unknown database 'mlflow'"))
    assert not hook.not_there(psycopg2.OperationalError('FATAL:  password authentication failed for user "u"'))
    # TLS failures do not get better by waiting (PyMySQL reports a bad certificate as 2003)
    assert not hook.not_there(pymysql.err.OperationalError(
        2003, "Can't connect to MySQL server on 'db' ([SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed)"))
    assert not hook.not_there(psycopg2.OperationalError('connection to server at "db", port 5432 failed: '
                                                        'root certificate file "/x.pem" does not exist'))


def test_a_refused_connect_is_retried_with_backoff_until_it_works(hook):
    fake, calls = FakeClock(), []

    def connect():
        calls.append(fake.now)
        if fake.now < 20:  # the database comes back 20 s later
            raise refused_mysql()
        return "connection"

    assert hook.connect_waiting(connect, 60, sleep=fake.sleep, clock=fake.clock) == "connection"
    assert fake.sleeps[:5] == [0.5, 1, 2, 4, 5] and max(fake.sleeps) == 5
    assert 20 <= fake.now <= 25


def test_the_wait_is_bounded_and_the_last_error_is_raised(hook):
    fake = FakeClock()

    def connect():
        raise refused_mysql()

    with pytest.raises(Exception, match="Connection refused"):
        hook.connect_waiting(connect, 30, sleep=fake.sleep, clock=fake.clock)
    assert fake.now == pytest.approx(30)


def test_a_wrong_password_is_not_waited_for(hook):
    import pymysql

    fake = FakeClock()

    def connect():
        raise pymysql.err.OperationalError(1045, "Access denied")

    with pytest.raises(pymysql.err.OperationalError):
        hook.connect_waiting(connect, 60, sleep=fake.sleep, clock=fake.clock)
    assert fake.sleeps == []


def test_pool_arguments_keep_zero_and_leave_a_chosen_poolclass_alone(hook, monkeypatch):
    from sqlalchemy.pool import NullPool

    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "10")
    monkeypatch.setenv("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "0")
    assert hook.pool_arguments({"pool_size": 10, "pool_recycle": 280}) == {
        "pool_size": 10, "max_overflow": 0, "pool_recycle": 280}
    assert hook.pool_arguments({"poolclass": NullPool}) == {"poolclass": NullPool}


def test_the_sweep_closes_a_pool_idle_long_enough_and_only_then(hook, tmp_path):
    """A real QueuePool (SQLite file, so nothing to start): connections checked in and idle for
    the limit are closed by Engine.dispose(); a pool with a connection checked out is left alone."""
    import sqlalchemy
    from sqlalchemy.pool import QueuePool

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'x.db'}", poolclass=QueuePool, pool_size=3, max_overflow=0)
    reaper = hook.IdleReaper.__new__(hook.IdleReaper)  # no thread: sweep() is called by hand
    reaper.idle, reaper.tick = 0.2, 0.05
    reaper.engines, reaper.lock = hook.weakref.WeakKeyDictionary(), hook.threading.Lock()
    reaper.watch(engine)
    with engine.connect() as a, engine.connect() as b:
        a.exec_driver_sql("SELECT 1")
        b.exec_driver_sql("SELECT 1")
        time.sleep(0.3)
        assert reaper.sweep() == 0  # both checked out: nothing to close
    assert engine.pool.checkedin() == 2
    assert reaper.sweep() == 0  # just checked in: not idle yet
    time.sleep(0.3)
    assert reaper.sweep() == 2
    assert engine.pool.checkedin() == 0
    with engine.connect() as c:  # and the engine works on, with a new connection
        assert c.exec_driver_sql("SELECT 1").scalar() == 1
