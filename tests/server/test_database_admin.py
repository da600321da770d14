"""The admin step (`python3 image/entrypoint.py admin`, the ECS admin task's command) and the server
that runs as the application user it prepares, on MariaDB and PostgreSQL.

What a deployment does (README "Database users", components/admin_step.py): the admin step runs
with the database master credentials (RDS's master secret) and creates the tracking and auth
databases, the application user with read/write rights only, and both schemas at the image's
heads; the server then connects as the application user and never changes a schema. MLflow's
own start-up must need no DDL on a schema at head: the tracking store creates tables only when
some are missing (mlflow/store/tracking/sqlalchemy_store.py, SqlAlchemyStore.__init__), and the
basic-auth store runs alembic only when its revision is not the head (mlflow/server/auth/db/
utils.py, migrate_if_needed). The master here is as RDS makes it (tests/support/dbadmin.py), not
the peers' superuser.
"""

from __future__ import annotations

import contextlib
import uuid

import psycopg2
import pymysql
import pytest
import requests
from mlflow import MlflowClient

from tests.server.admin_target import (APP_PASSWORD, CHANGES, RUN_ADMIN, assert_no_secret, make_target,
                                       one_error_line, snapshot, tables)
from tests.server.admin_target import target  # noqa: F401  (a fixture)
from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.support.dbadmin import ADMIN_VARIABLES, ensure_master, run_admin_step
from tests.support.server import Server, client_env, run_entrypoint


@pytest.fixture(scope="module")
def prepared(database):
    """An empty server prepared by one admin step: (target, its result)."""
    t = make_target(database)
    try:
        yield t, run_admin_step(t.admin_env())
    finally:
        t.drop()


# --- the admin step on an empty server, then the server as the application user ------------------
def test_the_admin_step_prepares_an_empty_server(prepared):
    t, result = prepared
    assert result.returncode == 0, result.output
    out = result.stdout
    for line in (f"created database '{t.name}'", f"created database '{t.auth}'", f"created user '{t.user}'",
                 "tracking schema: created at revision", "auth schema: migrated from nothing to"):
        assert line in out, out
    assert result.stderr.strip() == "", result.stderr
    assert_no_secret(result.output)
    assert {"experiments", "runs", "alembic_version"} <= tables(t, t.name)
    assert {"users", "alembic_version_auth"} <= tables(t, t.auth)


def test_the_server_runs_as_the_application_user_and_serves_the_client(prepared, tmp_path):
    """No admin credentials in the server's environment; MLflow's own start-up (tracking store,
    model registry store, basic-auth store) and a full workload need no DDL."""
    t, result = prepared
    assert result.returncode == 0, result.output
    env = t.server_env(tmp_path)
    assert not set(ADMIN_VARIABLES) & set(env) and env["MLFLOW_DB_USER"] == t.user
    with Server(env) as srv, client_env(srv.client_env(ADMIN, ADMIN_PASSWORD)):
        assert "tracking schema: up to date" in srv.output()
        client = MlflowClient(srv.url)
        exp = client.create_experiment(f"admin-step-{uuid.uuid4().hex[:6]}")
        run = client.create_run(exp)
        client.log_param(run.info.run_id, "alpha", "0.5")
        client.log_metric(run.info.run_id, "loss", 0.25, step=1)
        client.log_text(run.info.run_id, "notes", "notes.txt")
        client.set_terminated(run.info.run_id)
        model = f"model-{uuid.uuid4().hex[:6]}"
        client.create_registered_model(model)
        version = client.create_model_version(model, f"{run.info.artifact_uri}/model", run.info.run_id)
        assert version.version == "1"
        got = client.get_run(run.info.run_id).data
        assert got.metrics == {"loss": 0.25} and got.params == {"alpha": "0.5"}
        r = requests.post(f"{srv.url}/api/2.0/mlflow/users/create", json={"username": "alice",
                          "password": "alice-pa55word-12"}, auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
        assert r.status_code == 200, r.text
        r = requests.get(f"{srv.url}/api/2.0/mlflow/experiments/get", params={"experiment_id": exp},
                         auth=("alice", "alice-pa55word-12"), timeout=30)
        assert r.status_code == 200, r.text
        assert_no_secret(srv.output())


DDL = {
    "mysql": ["CREATE TABLE probe (id INTEGER)", "DROP TABLE experiments", "ALTER TABLE experiments ADD COLUMN x INT",
              "CREATE INDEX probe_idx ON experiments (name)", "CREATE DATABASE probe_db"],
    "postgresql": ["CREATE TABLE probe (id INTEGER)", "DROP TABLE experiments",
                   "ALTER TABLE experiments ADD COLUMN x INT", "CREATE INDEX probe_idx ON experiments (name)",
                   "CREATE DATABASE probe_db", "CREATE ROLE probe_role", "TRUNCATE experiments"],
}


def test_the_application_user_reads_and_writes_rows_only(prepared):
    """Every DDL statement and GRANT is refused by the database itself (driver error). PostgreSQL
    (manual, GRANT, Notes): a GRANT by a role holding no grant option is not an error but grants
    nothing ("no privileges were granted" warning): asserted on the table's ACL."""
    t, result = prepared
    assert result.returncode == 0, result.output
    denied = (pymysql.err.OperationalError, pymysql.err.ProgrammingError, psycopg2.Error)
    for database, table in ((t.name, "experiments"), (t.auth, "users")):
        with contextlib.closing(t.connect(database)) as conn:
            statements = [s.replace("experiments", table) for s in DDL[t.db.engine]]
            for statement in statements:
                with conn.cursor() as cur, pytest.raises(denied) as refused:
                    cur.execute(statement)
                assert any(w in str(refused.value).lower() for w in ("denied", "permission", "must be owner")), \
                    f"{statement}: {refused.value}"
            with conn.cursor() as cur:  # rows: yes
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                cur.fetchall()
            if t.db.engine == "mysql":
                with conn.cursor() as cur, pytest.raises(denied):
                    cur.execute(f"GRANT SELECT ON `{database}`.* TO '{ensure_master(t.db)[0]}'@'%'")
            else:
                with conn.cursor() as cur:
                    cur.execute(f"SELECT relacl::text FROM pg_class WHERE relname = '{table}'")
                    before = cur.fetchone()[0]
                    cur.execute(f"GRANT SELECT ON {table} TO PUBLIC")
                    assert any("no privileges were granted" in n for n in conn.notices), conn.notices
                    cur.execute(f"SELECT relacl::text FROM pg_class WHERE relname = '{table}'")
                    assert cur.fetchone()[0] == before


def test_a_second_admin_step_changes_nothing(prepared):
    t, first = prepared
    assert first.returncode == 0, first.output
    before = (tables(t, t.name), tables(t, t.auth))
    again = run_admin_step(t.admin_env())
    assert again.returncode == 0, again.output
    out = again.stdout
    assert not [line for line in out.splitlines() if any(w in line for w in CHANGES)], out
    for line in (f"database '{t.name}' exists", f"user '{t.user}' exists", "tracking schema: up to date",
                 "auth schema: up to date"):
        assert line in out, out
    assert (tables(t, t.name), tables(t, t.auth)) == before
    assert_no_secret(again.output)


# --- the server never changes a schema --------------------------------------------------------
def test_the_server_refuses_an_empty_database(target, tmp_path):
    """Databases and a read/write user exist (made by hand), no schema: exit 2, one line, nothing created."""
    db = target.db
    for name in (target.name, target.auth):
        db.create_database(name)
    db.create_user(target.user, APP_PASSWORD, [target.name, target.auth])
    line = one_error_line(run_entrypoint(target.server_env(tmp_path), timeout=120))
    assert f"tracking schema of database '{target.name}' does not exist yet" in line and RUN_ADMIN in line, line
    assert tables(target, target.name) == set() and tables(target, target.auth) == set()


def test_a_missing_database_is_not_created_by_the_server(target, tmp_path):
    target.db.create_user(target.user, APP_PASSWORD)  # the user exists, its databases do not
    line = one_error_line(run_entrypoint(target.server_env(tmp_path), timeout=120))
    assert f"'{target.name}' does not exist" in line and RUN_ADMIN in line, line


# --- an application user that exists already -------------------------------------------------
def test_an_existing_user_with_more_rights_is_reduced_to_rows(target):
    """An application user that exists with every privilege (made by hand, or by an older
    deployment) keeps only read/write on the two databases after the admin step."""
    db = target.db
    if db.engine == "mysql":
        db.execute(f"CREATE USER '{target.user}'@'%' IDENTIFIED BY 'x'",
                   f"GRANT ALL PRIVILEGES ON *.* TO '{target.user}'@'%' WITH GRANT OPTION")
    else:
        db.execute(f'CREATE ROLE "{target.user}" LOGIN CREATEDB PASSWORD \'x\'')
    result = run_admin_step(target.admin_env())
    assert result.returncode == 0, result.output
    assert f"user '{target.user}' exists" in result.stdout and "revoked" in result.stdout, result.stdout
    assert f"set the password of user '{target.user}'" in result.stdout
    with contextlib.closing(target.connect(target.name)) as conn, conn.cursor() as cur:
        for statement in ("CREATE TABLE probe (id INTEGER)", "CREATE DATABASE probe_db"):
            with pytest.raises((pymysql.err.OperationalError, pymysql.err.ProgrammingError, psycopg2.Error)):
                cur.execute(statement)


# --- the upgrade gate on the prepared server (test_database_admin_upgrade.py has the rest) -------
def test_an_old_auth_schema_stops_a_plain_admin_step(prepared):
    """Only the auth store below its head (its first revision, MLflow 2.5's): exit 3, untouched."""
    t, result = prepared
    assert result.returncode == 0, result.output
    with contextlib.closing(t.connect(t.auth, *ensure_master(t.db))) as conn, conn.cursor() as cur:
        cur.execute("SELECT version_num FROM alembic_version_auth")
        head = cur.fetchone()[0]
        cur.execute("UPDATE alembic_version_auth SET version_num = '8606fa83a998'")
    try:
        before = snapshot(t)
        stopped = run_admin_step(t.admin_env(), timeout=180)
        assert stopped.returncode == 3, stopped.output
        assert len(stopped.error_lines) == 1, stopped.stderr
        line = stopped.error_lines[0]
        assert f"auth schema of database '{t.auth}' is at revision 8606fa83a998" in line and head in line, line
        assert "tracking schema" not in line, line
        assert snapshot(t) == before
    finally:  # the module's other tests share this database: back to the head
        with contextlib.closing(t.connect(t.auth, *ensure_master(t.db))) as conn, conn.cursor() as cur:
            cur.execute(f"UPDATE alembic_version_auth SET version_num = '{head}'")
