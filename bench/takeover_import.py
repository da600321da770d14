"""How fast the admin step imports a takeover dump (image/admin_import.py): MB/s and rows/s, per engine.

    .venv/bin/python -m bench.takeover_import [rows]      # default 1,000,000 metric rows

A tracking database made by the admin step on a local MariaDB / PostgreSQL peer, filled by the master
with one experiment, one run and `rows` metric rows (SQL, not the client: the point is the load),
dumped with this machine's mariadb-dump / pg_dump (gzip), then imported by `entrypoint.py admin` into
a new, empty database. Prints one line per engine; nothing is asserted (measurements, not tests).
"""

from __future__ import annotations

import contextlib
import gzip
import sys
import tempfile
import time
from pathlib import Path

from tests.server.conftest import DB_PASSWORD, Fresh, unique
from tests.support.dbadmin import drop_app_user, prepare_databases, run_admin_step
from tests.support.peers import MariaDB, PostgreSQL
from tests.support.takeover import dump_database, tables_of


def fill(db, f: Fresh, rows: int) -> None:
    """One run and `rows` metric rows in f's tracking database, as the peer's superuser."""
    if db.engine == "mysql":
        import pymysql

        conn = pymysql.connect(unix_socket=str(db.socket), user="root", password="", database=f.name, autocommit=True)
        q, false = "`", "0"
    else:
        import psycopg2

        conn = psycopg2.connect(host=str(db.root), port=db.port, user="postgres", dbname=f.name)
        conn.autocommit = True
        q, false = '"', "false"
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO experiments (name, artifact_location, lifecycle_stage) "
                        "VALUES ('bench', 'mlflow-artifacts:/bench', 'active')")
            cur.execute("SELECT experiment_id FROM experiments WHERE name = 'bench'")
            experiment = cur.fetchone()[0]
            cur.execute("INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                        "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                        "VALUES ('r0', 'bench', 'LOCAL', '', '', 'u', 'FINISHED', 0, 1, '', 'active', "
                        f"'mlflow-artifacts:/bench/r0/artifacts', {experiment})")
            for start in range(0, rows, 10_000):
                values = ",".join(f"('loss', {i * 0.001}, {i}, 'r0', {i}, {false})"
                                  for i in range(start, min(rows, start + 10_000)))
                cur.execute(f"INSERT INTO metrics ({q}key{q}, value, {q}timestamp{q}, run_uuid, step, is_nan) "
                            f"VALUES {values}")
    finally:
        conn.close()


def measure(db, rows: int) -> str:
    made = []
    try:
        source = Fresh(db, unique("t"), unique("a"), unique("u")[:30], DB_PASSWORD)
        made.append(source)
        prepare_databases(db, source.user, DB_PASSWORD, source.name, source.auth_name)
        fill(db, source, rows)
        sql = dump_database(db, source.name)
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "mlflow.sql.gz"
            dump.write_bytes(gzip.compress(sql, compresslevel=1))
            target = Fresh(db, unique("t"), unique("a"), unique("u")[:30], DB_PASSWORD)
            made.append(target)
            t0 = time.monotonic()
            result = run_admin_step(target.admin_env(MLFLOW_IMPORT_TRACKING_DUMP=str(dump)), timeout=3600)
            seconds = time.monotonic() - t0
        assert result.returncode == 0, result.output[-2000:]
        loaded = [ln for ln in result.stdout.splitlines() if "dump loaded" in ln][0]
        copied = tables_of(db, target.name, "SELECT COUNT(*) FROM metrics")[0][0]
        assert copied == rows
        mib, gz = len(sql) / 2**20, len(gzip.compress(sql, compresslevel=1)) / 2**20
        return (f"{db.name}: {rows} metric rows, dump {mib:.0f} MiB ({gz:.0f} MiB gzip): admin step {seconds:.0f} s "
                f"in all, {mib / seconds:.1f} MiB/s, {rows / seconds:,.0f} rows/s; {loaded.split(': import: ', 1)[1]}")
    finally:
        for f in made:
            for name in (f.name, f.auth_name):
                with contextlib.suppress(Exception):
                    db.drop_database(name)
            with contextlib.suppress(Exception):
                drop_app_user(db, f.user)


def main(argv: list[str]) -> None:
    rows = int(argv[0]) if argv else 1_000_000
    for peer in (MariaDB, PostgreSQL):
        with peer() as db:
            print(measure(db, rows), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
