"""Session-wide real peers on 127.0.0.1 (tests/support/peers.py), started on first use only.

    mariadb, postgresql  -- one database server each for the whole session
    database             -- parametrized over both (ids "mariadb" and "postgresql")
    s3                   -- moto's S3 server
"""

from __future__ import annotations

import pytest

from tests.support.peers import MariaDB, PostgreSQL, S3Server

ENGINES = ("mariadb", "postgresql")


@pytest.fixture(scope="session")
def mariadb():
    with MariaDB() as db:
        yield db


@pytest.fixture(scope="session")
def postgresql():
    with PostgreSQL() as db:
        yield db


@pytest.fixture(scope="session", params=ENGINES)
def database(request):
    """The MariaDB or the PostgreSQL peer: tests using it run once per engine."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def s3():
    with S3Server() as server:
        yield server
