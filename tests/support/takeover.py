"""Dumps of a peer's database as an operator makes them for a takeover (docs/takeover.md), and reads.

    sql = dump_database(db, "mlflow")        # bytes: the real mariadb-dump / pg_dump of this machine
    tables_of(db, "mlflow")                  # the database's table names (sorted)
    tables_of(db, "mlflow", "SELECT ...")    # rows of a query in that database

The dump is made over TCP by the RDS-like master user (tests/support/dbadmin.py), with the options
the docs give: MySQL `--single-transaction --no-tablespaces`, PostgreSQL `--no-owner
--no-privileges`; the
password is passed in the client's environment (MYSQL_PWD / PGPASSWORD), never on the command line.
"""

from __future__ import annotations

import shutil
import subprocess

from tests.support.dbadmin import ensure_master
from tests.support.peers import LOOPBACK

DUMP_TIMEOUT = 120


def dump_database(db, name: str) -> bytes:
    user, password = ensure_master(db)
    if db.engine == "mysql":
        binary = shutil.which("mariadb-dump") or shutil.which("mysqldump")
        argv = [binary, "--no-defaults", f"--host={LOOPBACK}", f"--port={db.port}", f"--user={user}",
                "--single-transaction", "--no-tablespaces", "--hex-blob", name]
        env = {"MYSQL_PWD": password}
    else:
        argv = [db._bin("pg_dump"), "--no-owner", "--no-privileges", "-h", LOOPBACK, "-p", str(db.port), "-U", user,
                "-d", name]
        env = {"PGPASSWORD": password}
    p = subprocess.run(argv, env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, timeout=DUMP_TIMEOUT)
    if p.returncode != 0:
        raise AssertionError(f"{argv[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout


def tables_of(db, name: str, query: str | None = None) -> list:
    """Table names of database `name`, or the rows of `query` run in it (as the peer's superuser)."""
    if db.engine == "mysql":
        import pymysql

        conn = pymysql.connect(unix_socket=str(db.socket), user="root", password="", database=name, autocommit=True)
        default = f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{name}' ORDER BY 1"
    else:
        import psycopg2

        conn = psycopg2.connect(host=str(db.root), port=db.port, user="postgres", dbname=name)
        conn.autocommit = True
        default = ("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') ORDER BY 1")
    try:
        with conn.cursor() as cur:
            cur.execute(query or default)
            rows = [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()
    return [r[0] for r in rows] if query is None else rows
