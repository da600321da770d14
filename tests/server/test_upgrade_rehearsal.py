"""Rehearsed upgrades: a database written by an OLDER MLflow server is upgraded by the admin step and
reads back identical through the image's server, on MariaDB and PostgreSQL.

For each source version (OLD_VERSIONS: the newest MLflow 2.22 and an MLflow 3.1, whose tracking and
auth schema heads both differ from the image's 3.17.2) and each engine:
 1. the old MLflow is installed from PyPI in a throwaway venv (tests/support/old_mlflow.py; cached,
    a failed install is an error, not a skip);
 2. its own `mlflow server --app-name basic-auth`, connected as the master as deployments before
    the admin step were, creates both schemas and serves its own client, which writes a data set
    and dumps what it reads back (tests/support/mlflow_roundtrip.py: experiments, runs with params,
    metric histories, tags, a registered model with versions, stages and aliases, users, their
    logins and permissions);
 3. the image's plain admin step refuses the old schemas (exit 3, one line) and changes nothing;
    `admin --upgrade`, as `pulumi up` runs it with the writers stopped, upgrades both;
 4. the image's server, as the application user, serves the same data to the image's client: the
    two dumps are equal.
Documents: MLflow "Backend Stores" (`mlflow db upgrade`: schema migrations are required when a new
MLflow version changes the schema; back the database up first), MLflow "Basic HTTP Authentication"
(the permission REST API and the auth config file).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest
import sqlalchemy

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, SECRET_KEY, unique
from tests.support import old_mlflow
from tests.support.dbadmin import admin_env, drop_app_user, ensure_master, run_admin_step
from tests.support.server import PYTHON, ROOT, Server, client_env, database_env

OLD_VERSIONS = ("2.22.5", "3.1.4")  # tracking heads 0584bdc529eb / bda7b8c39065, auth 8606fa83a998 (both)
APP_PASSWORD = "Rehearsal@:/?#%25&+app"
ROUNDTRIP = Path(__file__).resolve().parents[1] / "support" / "mlflow_roundtrip.py"


def master_engine(db, database: str | None):
    user, password = ensure_master(db)
    if database is None:
        database = "postgres" if db.engine == "postgresql" else ""
    return sqlalchemy.create_engine(db.url(user, password, database), poolclass=sqlalchemy.pool.NullPool)


def revisions(db, name: str, auth: str) -> tuple[list[str], list[str], int, int]:
    """(tracking revisions, auth revisions, runs, metric rows), as the master."""
    found = []
    for database, table in ((name, "alembic_version"), (auth, "alembic_version_auth")):
        engine = master_engine(db, database)
        if table not in sqlalchemy.inspect(engine).get_table_names():
            table = "alembic_version"  # an auth store of MLflow < 3.6 (see image/db_schema.py)
        with engine.connect() as conn:
            found.append([r[0] for r in conn.execute(sqlalchemy.text(f"SELECT version_num FROM {table}"))])
            if database == name:
                counts = [conn.execute(sqlalchemy.text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in ("runs", "metrics")]
        engine.dispose()
    return found[0], found[1], counts[0], counts[1]


def roundtrip(python, mode: str, url: str) -> dict | None:
    env = old_mlflow.clean_env(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=ADMIN_PASSWORD)
    p = subprocess.run([str(python), str(ROUNDTRIP), mode, url], env=env, capture_output=True, text=True,
                       timeout=600, start_new_session=True)
    assert p.returncode == 0, f"{python} {mode} exited {p.returncode}:\n{(p.stdout + p.stderr)[-4000:]}"
    return json.loads(p.stdout) if mode == "dump" else None


@pytest.fixture(params=OLD_VERSIONS)
def old_python(request):
    """The python of a venv with the old MLflow (built on first use: minutes; then cached)."""
    return request.param, old_mlflow.venv(request.param)


@pytest.fixture
def names(database):
    name, auth, user = unique("old"), unique("olda"), unique("app")[:30]
    engine = master_engine(database, None)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        q = '"' if database.engine == "postgresql" else "`"
        for n in (name, auth):  # made by the master, as the stack before the admin step had them
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {q}{n}{q}"))
    engine.dispose()
    yield name, auth, user
    for n in (name, auth):
        with contextlib.suppress(Exception):
            database.drop_database(n)
    with contextlib.suppress(Exception):
        drop_app_user(database, user)


def test_an_old_mlflows_database_is_upgraded_and_reads_back_identical(database, old_python, names, tmp_path):
    from mlflow.store.db.utils import _get_latest_schema_revision

    version, python = old_python
    name, auth, user = names
    master, master_password = ensure_master(database)
    backend, auth_uri = (database.url(master, master_password, n) for n in (name, auth))
    if database.engine == "mysql":
        # MLflow's own first auth revision fails on MySQL/MariaDB (mlflow issues 9642/10964): an older
        # image of this project created it with image/auth_schema.py's fix, with the old MLflow, as here
        old_mlflow.run(python, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import auth_schema, sqlalchemy; "
                       "auth_schema.migrate(sqlalchemy.create_engine(sys.argv[2]))", str(ROOT / "image"), auth_uri)
    with old_mlflow.OldServer(python, backend, auth_uri, ADMIN_PASSWORD, SECRET_KEY) as old:
        roundtrip(python, "fill", old.url)
        before = roundtrip(python, "dump", old.url)
    tracking_old, auth_old, runs, metrics = revisions(database, name, auth)
    head = _get_latest_schema_revision()
    assert tracking_old != [head] and auth_old != ["f1a2b3c4d5e6"], (tracking_old, auth_old)
    assert len(before["runs"]) == 4 and before["models"][0]["aliases"] == {"challenger": "1", "champion": "2"}, before
    alice, bob = before["users"]["alice"], before["users"]["bob"]
    assert alice["login"] == 200 and alice["wrong password"] == 401, before
    assert alice["permissions"]["rehearsal-a"] == "EDIT" and alice["permissions"]["alice-exp"] == "MANAGE", before
    assert bob["permissions"]["rehearsal-model"] == "READ" and bob["permissions"]["rehearsal-b"] == "none", before
    assert (alice["may edit run-0"], bob["may edit run-0"]) == (200, 403), before

    env = admin_env(database, user, APP_PASSWORD, name, auth)
    stopped = run_admin_step(env, timeout=300)
    assert stopped.returncode == 3, stopped.output
    assert len(stopped.error_lines) == 1 and tracking_old[0] in stopped.error_lines[0], stopped.stderr
    assert revisions(database, name, auth) == (tracking_old, auth_old, runs, metrics)  # untouched

    upgraded = run_admin_step(env, timeout=900, upgrade=True)
    assert upgraded.returncode == 0, upgraded.output
    assert f"tracking schema: upgraded from revision {tracking_old[0]} to {head}" in upgraded.stdout
    assert revisions(database, name, auth)[:2] == ([head], ["f1a2b3c4d5e6"])

    server_env = {**database_env(database, user, APP_PASSWORD, name, auth), "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
                  "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "a")}
    with Server(server_env) as srv, client_env(srv.client_env(ADMIN, ADMIN_PASSWORD)):
        after = roundtrip(PYTHON, "dump", srv.url)
    assert after == before, f"MLflow {version} -> image on {database.engine}:\n" + "\n".join(
        f"{k}: before {json.dumps(before[k], sort_keys=True)[:1500]}\n   after {json.dumps(after[k], sort_keys=True)[:1500]}"
        for k in before if before[k] != after.get(k))
