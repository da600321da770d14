"""What the admin step tests (tests/server/test_database_admin*.py) share: a :class:`Target` (the
names of a tracking database, an auth database and an application user on a peer, with the admin
step's and the server's environments for them), the `target` fixture (new names, dropped after the
test), and checks: no secret printed, one error line, the tables of a database, a snapshot of what
an upgrade would change.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from urllib.parse import quote

import psycopg2
import pymysql
import pytest

from tests.server.conftest import ADMIN_PASSWORD, SECRET_KEY, unique
from tests.support.dbadmin import MASTER_PASSWORD, admin_env, drop_app_user, ensure_master
from tests.support.peers import LOOPBACK, free_port
from tests.support.server import database_env

APP_PASSWORD = "App@:/?#%25&+pa55word"
RUN_ADMIN = "run the admin step (python3 /app/entrypoint.py admin) with the master credentials first"
SECRETS = [APP_PASSWORD, quote(APP_PASSWORD, safe=""), MASTER_PASSWORD, quote(MASTER_PASSWORD, safe="")]
CHANGES = ("created", "migrated", "upgraded", "set the password", "revoked", "stored")


@dataclass
class Target:
    """Names of a tracking database, an auth database and an application user on a peer."""

    db: object
    name: str
    auth: str
    user: str

    def admin_env(self, password: str | None = APP_PASSWORD, **extra) -> dict[str, str]:
        return {**admin_env(self.db, self.user, password, self.name, self.auth), **extra}

    def server_env(self, tmp_path, password: str = APP_PASSWORD) -> dict[str, str]:
        return {**database_env(self.db, self.user, password, self.name, self.auth),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"), "MLFLOW_PORT": str(free_port())}

    def connect(self, database: str | None, user: str | None = None, password: str = APP_PASSWORD):
        """A driver connection over TCP (autocommit), as the application user by default; database
        None: none (MySQL), `postgres` (PostgreSQL)."""
        user = user or self.user
        if self.db.engine == "mysql":
            return pymysql.connect(host=LOOPBACK, port=self.db.port, user=user, password=password,
                                   database=database, autocommit=True)
        conn = psycopg2.connect(host=LOOPBACK, port=self.db.port, user=user, password=password,
                                dbname=database or "postgres")
        conn.autocommit = True
        return conn

    def drop(self) -> None:
        for name in (self.name, self.auth):
            with contextlib.suppress(Exception):
                self.db.drop_database(name)
        with contextlib.suppress(Exception):
            drop_app_user(self.db, self.user)


def make_target(db) -> Target:
    return Target(db, unique("t"), unique("a"), unique("app")[:30])


@pytest.fixture
def target(database):
    t = make_target(database)
    yield t
    t.drop()


def assert_no_secret(text: str, *more: str) -> None:
    for s in (*SECRETS, *more):
        assert s not in text, f"secret printed:\n{text}"


def one_error_line(result) -> str:
    assert result.returncode == 2, result.output
    assert len(result.error_lines) == 1, f"stderr must be one line:\n{result.stderr}"
    line = result.error_lines[0]
    assert line.startswith("mlflow-entrypoint: error: "), line
    return line


def tables(t: Target, database: str) -> set[str]:
    with contextlib.closing(t.connect(database, *ensure_master(t.db))) as conn, conn.cursor() as cur:
        if t.db.engine == "mysql":
            cur.execute("SHOW TABLES")
        else:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in cur.fetchall()}


def snapshot(t: Target) -> dict:
    """What an upgrade would change: every revision, table and row count, and the users, as the master."""
    master = ensure_master(t.db)
    state = {}
    for database in (t.name, t.auth):
        try:
            conn = t.connect(database, *master)
        except (pymysql.err.OperationalError, psycopg2.OperationalError):
            state[database] = "missing"
            continue
        with contextlib.closing(conn), conn.cursor() as cur:
            counts = {}
            for table in sorted(tables(t, database)):
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                counts[table] = cur.fetchone()[0]
            if "alembic_version" in counts:
                cur.execute("SELECT version_num FROM alembic_version")
                counts["revision"] = [r[0] for r in cur.fetchall()]
            state[database] = counts
    with contextlib.closing(t.connect(None, *master)) as conn, conn.cursor() as cur:
        if t.db.engine == "mysql":
            cur.execute("SELECT COUNT(*) FROM mysql.user WHERE User = %s", (t.user,))
        else:
            cur.execute("SELECT COUNT(*) FROM pg_roles WHERE rolname = %s", (t.user,))
        state["app user"] = cur.fetchone()[0]
    return state

