"""Real peers on 127.0.0.1 for the server tests and the benchmarks.

Each class starts a real server from Debian's packages (MariaDB, PostgreSQL) or from PyPI
(moto's S3-compatible server) under a temporary directory of its own, on a free loopback port,
and stops it again. Nothing here listens on or connects to anything but 127.0.0.1 and unix
sockets inside the temporary directory.

    with MariaDB() as db:
        db.create_database("mlflow")
        db.create_user("mlflow", "s3cr3t", databases=["mlflow"])
        uri = db.url("mlflow", "s3cr3t", "mlflow")

The pieces, one job each: tests/support/peer_process.py (ports, processes, a peer's life cycle),
tests/support/database_peers.py (MariaDB, PostgreSQL), tests/support/s3_peer.py (moto's S3 server).
Import them from here.
"""

from __future__ import annotations

from tests.support.database_peers import MariaDB, PostgreSQL
from tests.support.peer_process import LOOPBACK, PeerError, free_port, stop_process, wait_for_port
from tests.support.s3_peer import S3_TEST_CREDENTIALS, S3Server

__all__ = ["LOOPBACK", "S3_TEST_CREDENTIALS", "MariaDB", "PeerError", "PostgreSQL", "S3Server", "free_port",
           "stop_process", "wait_for_port"]
