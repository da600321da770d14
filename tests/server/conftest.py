"""Fixtures of the server process tests: fresh databases and users, clients, a shared stack.

`stack` (one per engine, for the whole session): two entrypoint processes ("tasks") on one
tracking database and one auth database on the engine's peer, artifacts proxied to a moto
bucket, the database user's password full of URL-special characters. Tests that need an
empty database or a broken environment make their own with `fresh`.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import uuid
from dataclasses import dataclass

import pytest

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
    """A new tracking database name, auth database name and user on a peer; dropped afterwards."""

    db: object
    name: str
    auth_name: str
    user: str
    password: str

    def env(self, **extra) -> dict[str, str]:
        return {**database_env(self.db, self.user, self.password, self.name, self.auth_name),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                **extra}


@pytest.fixture
def fresh(database):
    """fresh(create_any=True, create=True) -> Fresh: an empty tracking database and its user."""
    made: list[Fresh] = []

    def make(create_any: bool = True, create: bool = True, password: str = DB_PASSWORD) -> Fresh:
        f = Fresh(database, unique("t"), unique("a"), unique("u")[:30], password)
        if create:
            database.create_database(f.name)
        database.create_user(f.user, password, [f.name] if create else [], create_any=create_any)
        made.append(f)
        return f

    yield make
    for f in made:
        for name in (f.name, f.auth_name):
            with contextlib.suppress(Exception):
                database.drop_database(name)


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
    database.create_database(name)
    database.create_user(user, DB_PASSWORD, [name], create_any=True)
    bucket = s3.create_bucket(f"artifacts-{database.name}")
    env = {**database_env(database, user, DB_PASSWORD, name, auth_name), **s3_env(s3, bucket),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
    a, b = Server(env), Server(env)
    try:
        a.start()  # the first task migrates; the second one then finds everything in place
        b.start()
        yield Stack(database.name, database, s3, bucket, a, b)
    finally:
        a.close()
        b.close()
