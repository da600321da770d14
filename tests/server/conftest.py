"""Fixtures of the server process tests: fresh databases and users, clients, a shared stack.

`stack` (one per engine, for the whole session): the admin step (`entrypoint.py admin`, with the
peer's RDS-like master user, tests/support/dbadmin.py) prepares one tracking database, one auth
database and the application user, then two entrypoint processes ("tasks") serve them as that
user, artifacts proxied to a moto bucket, the application user's password full of URL-special
characters. Tests that need other databases or a broken environment make their own with `fresh`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from dataclasses import dataclass

import pytest

from tests.support.dbadmin import admin_env, drop_app_user, prepare_databases
from tests.support.server import Server, database_env, s3_env

ADMIN = "admin"
ADMIN_PASSWORD = "Adm1n-pa55word-for-tests"
SECRET_KEY = "flask-secret-key-for-the-tests-0123456789"
# every character that breaks a naive URL, plus a literal "%25" that a double decode would eat
DB_PASSWORD = "Pa@ss:w/o?r#d%25&+x"

_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"


@dataclass
class Fresh:
    """A new tracking database name, auth database name and application user on a peer; dropped afterwards."""

    db: object
    name: str
    auth_name: str
    user: str
    password: str

    def env(self, **extra) -> dict[str, str]:
        """The server's environment: the application user only, never the master's credentials."""
        return {**database_env(self.db, self.user, self.password, self.name, self.auth_name),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                **extra}

    def admin_env(self, **extra) -> dict[str, str]:
        """The admin step's environment for these names (master credentials, MLFLOW_DB_PASSWORD)."""
        return {**admin_env(self.db, self.user, self.password, self.name, self.auth_name), **extra}


@pytest.fixture
def fresh(database):
    """fresh() -> Fresh: new databases, schemas and application user, made by the admin step, as a
    deployment has them before a server starts.
    fresh(prepare=False): the names only, nothing made (the test runs the admin step itself).
    fresh(create_any=False): only the tracking database exists (empty, made by hand) and the user
    may use only it; the auth database is missing (a server must refuse, not create it)."""
    made: list[Fresh] = []

    def make(create_any: bool = True, prepare: bool = True, password: str = DB_PASSWORD) -> Fresh:
        f = Fresh(database, unique("t"), unique("a"), unique("u")[:30], password)
        made.append(f)
        if not create_any:
            database.create_database(f.name)
            database.create_user(f.user, password, [f.name])
        elif prepare:
            prepare_databases(database, f.user, password, f.name, f.auth_name)
        return f

    yield make
    for f in made:
        for name in (f.name, f.auth_name):
            with contextlib.suppress(Exception):
                database.drop_database(name)
        with contextlib.suppress(Exception):
            drop_app_user(database, f.user)


@dataclass
class Stack:
    engine: str
    db: object
    s3: object
    bucket: str
    a: Server
    b: Server

    @property
    def admin_env(self) -> dict[str, str]:
        return self.a.client_env(ADMIN, ADMIN_PASSWORD)


@pytest.fixture(scope="session")
def stack(database, s3):
    name, auth_name, user = "mlflow", "mlflow_auth", "mlflow_app"
    prepare_databases(database, user, DB_PASSWORD, name, auth_name)  # as `pulumi up` runs it first
    bucket = s3.create_bucket(f"artifacts-{database.name}")
    env = {**database_env(database, user, DB_PASSWORD, name, auth_name), **s3_env(s3, bucket),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
    a, b = Server(env), Server(env)
    try:
        a.start()  # both find the databases prepared by the admin step
        b.start()
        yield Stack(database.name, database, s3, bucket, a, b)
    finally:
        a.close()
        b.close()
