"""The write downtime of a schema upgrade: `entrypoint.py admin --upgrade` on a database an older MLflow made.

    .venv/bin/python -m bench.upgrade                       # both engines, both source versions
    .venv/bin/python -m bench.upgrade --engines mysql --versions 2.22.5 --runs 1000 --metrics 100000

An upgrade runs with the writers stopped (`pulumi up` scales the service to 0, snapshots, runs
`admin --upgrade`, then deploys the new image), so the write downtime is at least the admin step's
run. For each engine (a local MariaDB / PostgreSQL, tests/support/peers.py) and each older MLflow
(tests/support/old_mlflow.py, installed from PyPI on first use):
 1. the old MLflow creates the tracking schema at its head as its server does on an empty database
    (`_initialize_tables`: the initial tables, then its migrations), and its auth store
    is created as the image of that time did (image/auth_schema.py, with the old MLflow);
 2. one experiment, RUNS runs (2 params, 2 tags each) and METRICS metric rows (10 keys per run, the
    steps 0.. of each key) go in by bulk INSERT as the master, with latest_metrics consistent (the
    last step of each key);
 3. plain `admin` (the read-only gate, exit 3) and `admin --upgrade` run as the ECS admin task runs
    them; timed end to end (process start to exit: MLflow import, wait, user, grants, both
    migrations), with the migrations' own times from the step's log.
Writes bench/upgrade.json and bench/UPGRADE.md. Not a test: nothing is asserted beyond exit codes.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from tests.support import old_mlflow
from tests.support.dbadmin import admin_env, drop_app_user, ensure_master, run_admin_step
from tests.support.peers import MariaDB, PostgreSQL

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VERSIONS = ("2.22.5", "3.1.4")
APP_PASSWORD = "bench-upgrade-app-pa55word"
KEYS = 10  # metric keys per run
BATCH = 20_000


def connect(db, database: str):
    user, password = ensure_master(db)
    if db.engine == "mysql":
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=db.port, user=user, password=password, database=database,
                               autocommit=False)
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=db.port, user=user, password=password, dbname=database)


def create_databases(db, names: tuple[str, str]) -> None:
    user, password = ensure_master(db)
    conn = connect(db, "postgres" if db.engine == "postgresql" else None)
    if db.engine == "postgresql":
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction (MySQL commits DDL itself)
    with conn.cursor() as cur:
        for n in names:
            cur.execute(f"CREATE DATABASE {n}")
    conn.close()


def old_schema(db, python, name: str, auth: str) -> None:
    """The old MLflow's tracking schema (`mlflow db upgrade`) and auth store, as the master."""
    user, password = ensure_master(db)
    env = old_mlflow.clean_env()
    # what the old `mlflow server` does on an empty database (mlflow/store/db/utils.py): `mlflow db
    # upgrade` alone fails there (its migrations start from MLflow 1.0's tables)
    old_mlflow.run(python, "-c", "import sys, sqlalchemy; from mlflow.store.db.utils import _initialize_tables; "
                   "_initialize_tables(sqlalchemy.create_engine(sys.argv[1]))", db.url(user, password, name),
                   env=env, timeout=1800)
    old_mlflow.run(python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import auth_schema, sqlalchemy; "
                   "auth_schema.migrate(sqlalchemy.create_engine(sys.argv[2]))", str(ROOT / "image"),
                   db.url(user, password, auth), env=env)


def fill(db, name: str, runs: int, metrics: int) -> dict:
    """Bulk INSERT: one experiment, `runs` runs, `metrics` metric rows, consistent latest_metrics."""
    per_key = max(1, metrics // (runs * KEYS))
    q = "`" if db.engine == "mysql" else '"'
    conn = connect(db, name)
    t0 = time.monotonic()
    try:
        return _fill(db, conn, per_key, q, runs, t0)
    finally:
        conn.close()  # an open transaction would block the DROP DATABASE of the clean-up


def _fill(db, conn, per_key: int, q: str, runs: int, t0: float) -> dict:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO experiments (name, artifact_location, lifecycle_stage) "
                    "VALUES ('bench-upgrade', 'mlflow-artifacts:/bench', 'active')")
        cur.execute("SELECT experiment_id FROM experiments WHERE name = 'bench-upgrade'")
        exp = cur.fetchone()[0]
        base = 1_700_000_000_000
        run_rows, params, tags, latest, batch = [], [], [], [], []
        insert_metrics = (f"INSERT INTO metrics ({q}key{q}, value, timestamp, step, is_nan, run_uuid) "
                          "VALUES (%s, %s, %s, %s, %s, %s)")

        def flush(rows, statement):
            if db.engine == "mysql":
                cur.executemany(statement, rows)  # PyMySQL sends one multi-row INSERT per call
            else:
                from psycopg2.extras import execute_values

                execute_values(cur, statement.split("VALUES")[0] + "VALUES %s", rows, page_size=5000)

        for i in range(runs):
            rid = uuid.UUID(int=i + 1).hex
            start = base + i * 1000
            run_rows.append((rid, f"run-{i}", "LOCAL", "bench", "", "bench", "FINISHED", start, start + 60_000, "",
                             "active", f"mlflow-artifacts:/bench/{rid}/artifacts", exp))
            params += [("lr", "0.01", rid), ("batch_size", str(32 << (i % 3)), rid)]
            tags += [("mlflow.runName", f"run-{i}", rid), ("team", "vision", rid)]
        flush(run_rows, "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, "
                        "status, start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")  # before their metrics (FK)
        for i in range(runs):
            rid = uuid.UUID(int=i + 1).hex
            start = base + i * 1000
            for k in range(KEYS):
                for step in range(per_key):
                    batch.append((f"m{k}", (i + k + step) * 1e-3, start + step, step, False, rid))
                latest.append((f"m{k}", (i + k + per_key - 1) * 1e-3, start + per_key - 1, per_key - 1, False, rid))
            if len(batch) >= BATCH:
                flush(batch, insert_metrics)
                batch = []
        flush(batch, insert_metrics)
        flush(latest, f"INSERT INTO latest_metrics ({q}key{q}, value, timestamp, step, is_nan, run_uuid) "
                      "VALUES (%s, %s, %s, %s, %s, %s)")
        flush(params, f"INSERT INTO params ({q}key{q}, value, run_uuid) VALUES (%s, %s, %s)")
        flush(tags, f"INSERT INTO tags ({q}key{q}, value, run_uuid) VALUES (%s, %s, %s)")
        conn.commit()
        counts = {}
        for table in ("runs", "metrics", "latest_metrics", "params", "tags"):
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            counts[table] = cur.fetchone()[0]
        cur.execute("SELECT version_num FROM alembic_version")
        counts["revision"] = cur.fetchone()[0]
    counts["fill_s"] = round(time.monotonic() - t0, 1)
    return counts


def seconds(pattern: str, text: str) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def one(db, version: str, runs: int, metrics: int) -> dict:
    python = old_mlflow.venv(version)
    tag = uuid.uuid4().hex[:6]
    name, auth, user = f"up_{tag}", f"upa_{tag}", f"upapp_{tag}"
    create_databases(db, (name, auth))
    try:
        old_schema(db, python, name, auth)
        data = fill(db, name, runs, metrics)
        env = admin_env(db, user, APP_PASSWORD, name, auth)
        t0 = time.monotonic()
        gate = run_admin_step(env, timeout=600)
        gate_s = time.monotonic() - t0
        t0 = time.monotonic()
        up = run_admin_step(env, timeout=7200, upgrade=True)
        total = time.monotonic() - t0
        if gate.returncode != 3 or up.returncode != 0:
            raise RuntimeError(f"admin exited {gate.returncode} / --upgrade {up.returncode}:\n{up.output[-3000:]}")
        tracking = seconds(r"tracking schema: upgraded from revision \w+ to \w+ in ([\d.]+) s", up.stdout)
        auth_s = seconds(r"auth schema: migrated from \S+ to \w+ in ([\d.]+) s", up.stdout)
        return {"engine": db.engine, "from": version, "from_revision": data.pop("revision"), "rows": data,
                "gate_exit3_s": round(gate_s, 1), "upgrade_total_s": round(total, 1),
                "tracking_migration_s": tracking, "auth_migration_s": auth_s}
    finally:
        for n in (name, auth):
            try:
                db.drop_database(n)
            except Exception:
                pass
        try:
            drop_app_user(db, user)
        except Exception:
            pass


def render(results: list[dict], meta: dict) -> str:
    lines = ["# Upgrade downtime (`admin --upgrade`)", "",
             f"{meta['when']}, {meta['machine']}; image MLflow {meta['mlflow']}; {meta['runs']:,} runs, "
             f"{meta['metrics']:,} metric rows (bulk INSERT into the old schema), `python -m bench.upgrade`.", "",
             "| Engine | From MLflow (revision) | Plain `admin` (gate, exit 3) | Tracking migration | Auth migration "
             "| `admin --upgrade` total |", "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['engine']} | {r['from']} ({r['from_revision']}) | {r['gate_exit3_s']} s | "
                     f"{r['tracking_migration_s']} s | {r['auth_migration_s']} s | {r['upgrade_total_s']} s |")
    lines += ["", "Total = process start to exit (MLflow import, database wait, user and grants, both migrations "
              "under the schema lock). The write downtime of a `pulumi up` upgrade is this plus scaling the "
              "service to 0, the snapshot and the new tasks' start. Measured on a shared machine (other test "
              "processes ran at the same time): read the numbers as an order of magnitude."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.upgrade", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engines", default="mysql,postgresql")
    ap.add_argument("--versions", default=",".join(VERSIONS))
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--metrics", type=int, default=1_000_000)
    ap.add_argument("--out", default="upgrade", help="writes bench/<OUT>.json and bench/<OUT>.md")
    args = ap.parse_args(argv)
    from importlib.metadata import version

    meta = {"when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs (shared)",
            "mlflow": version("mlflow"), "runs": args.runs, "metrics": args.metrics}
    results = []
    peers = {"mysql": MariaDB, "postgresql": PostgreSQL}
    for engine in args.engines.split(","):
        with peers[engine]() as db:
            for v in args.versions.split(","):
                print(f"[upgrade] {engine} from MLflow {v} ...", flush=True)
                r = one(db, v, args.runs, args.metrics)
                print(f"[upgrade] {json.dumps(r)}", flush=True)
                results.append(r)
    (BENCH / f"{args.out}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    (BENCH / f"{args.out}.md").write_text(render(results, meta))
    print(render(results, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
