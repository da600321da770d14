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
import json
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import psycopg2
import pymysql
import pytest
import requests
from mlflow import MlflowClient

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, SECRET_KEY, unique
from tests.support.dbadmin import (ADMIN_VARIABLES, MASTER_PASSWORD, admin_env, drop_app_user, ensure_master,
                                   run_admin_step)
from tests.support.peers import LOOPBACK, S3_TEST_CREDENTIALS, free_port
from tests.support.server import Server, client_env, database_env, run_entrypoint

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


@pytest.fixture(scope="module")
def prepared(database):
    """An empty server prepared by one admin step: (target, its result)."""
    t = make_target(database)
    try:
        yield t, run_admin_step(t.admin_env())
    finally:
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


# --- the application user's secret (Secrets Manager, moto) -------------------------------------
@pytest.fixture
def app_secret(s3):
    """A secret created without a value, as the program creates it (aws.secretsmanager.Secret
    with no SecretVersion): GetSecretValue answers ResourceNotFoundException until a version exists
    (AWS Secrets Manager API Reference, GetSecretValue and PutSecretValue)."""
    client = s3.client("secretsmanager")
    arn = client.create_secret(Name=f"mlflow-app-{uuid.uuid4().hex[:8]}")["ARN"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_secret_value(SecretId=arn)
    yield client, arn
    client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def secret_env(s3) -> dict[str, str]:
    return {**S3_TEST_CREDENTIALS, "AWS_ENDPOINT_URL_SECRETS_MANAGER": s3.endpoint_url}


def test_the_admin_step_generates_stores_and_reuses_the_application_password(target, app_secret, s3, tmp_path):
    client, arn = app_secret
    first = run_admin_step(target.admin_env(None, MLFLOW_DB_APP_SECRET_ARN=arn, **secret_env(s3)))
    assert first.returncode == 0, first.output
    stored = client.get_secret_value(SecretId=arn)
    value = json.loads(stored["SecretString"])
    assert value["username"] == target.user and len(value["password"]) >= 32
    assert "stored a generated password" in first.stdout
    assert_no_secret(first.output, value["password"])

    second = run_admin_step(target.admin_env(None, MLFLOW_DB_APP_SECRET_ARN=arn, **secret_env(s3)))
    assert second.returncode == 0, second.output
    assert client.get_secret_value(SecretId=arn)["VersionId"] == stored["VersionId"]  # reused, not replaced
    assert len(client.list_secret_version_ids(SecretId=arn)["Versions"]) == 1
    assert not [line for line in second.stdout.splitlines() if any(w in line for w in CHANGES)], second.stdout
    assert_no_secret(second.output, value["password"])

    with Server(target.server_env(tmp_path, value["password"])) as srv:
        r = requests.post(f"{srv.url}/api/2.0/mlflow/experiments/search", json={"max_results": 1},
                          auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
        assert r.status_code == 200, r.text

    # a new value in the secret (rotation step 1): the next run sets the user's password to it
    client.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": target.user,
                                                                   "password": "rotated-" + value["password"]}))
    third = run_admin_step(target.admin_env(None, MLFLOW_DB_APP_SECRET_ARN=arn, **secret_env(s3)))
    assert third.returncode == 0 and f"set the password of user '{target.user}'" in third.stdout, third.output
    with contextlib.closing(target.connect(target.name, password="rotated-" + value["password"])):
        pass
    with pytest.raises((pymysql.err.OperationalError, psycopg2.OperationalError)):
        target.connect(target.name, password=value["password"])


def test_a_missing_secret_is_one_line(target, s3):
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-secret-AbCdEf"
    line = one_error_line(run_admin_step(target.admin_env(None, MLFLOW_DB_APP_SECRET_ARN=arn, **secret_env(s3))))
    assert "MLFLOW_DB_APP_SECRET_ARN" in line and "does not exist" in line, line


# --- bad admin environments: one line, no secret ------------------------------------------------
@pytest.mark.parametrize("case", ["wrong master password", "no master user", "no application password",
                                  "both passwords", "bad user name", "unreachable"])
def test_a_bad_admin_environment_is_one_line(case, target):
    env = target.admin_env()
    words: tuple[str, ...]
    if case == "wrong master password":
        env["MLFLOW_DB_ADMIN_PASSWORD"] = "Wr0ng@:/?#%&+master"
        words = ("refused the login", "mlflow_master")
    elif case == "no master user":
        env.pop("MLFLOW_DB_ADMIN_USER")
        words = ("MLFLOW_DB_ADMIN_USER",)
    elif case == "no application password":
        env.pop("MLFLOW_DB_PASSWORD")
        words = ("MLFLOW_DB_APP_SECRET_ARN", "MLFLOW_DB_PASSWORD")
    elif case == "both passwords":
        env["MLFLOW_DB_APP_SECRET_ARN"] = "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf"
        words = ("MLFLOW_DB_APP_SECRET_ARN", "MLFLOW_DB_PASSWORD", "not both")
    elif case == "bad user name":
        env["MLFLOW_DB_USER"] = "app'; DROP USER root; --"
        words = ("MLFLOW_DB_USER",)
    else:
        env["MLFLOW_DB_PORT"] = str(free_port())
        words = ("cannot reach", "MLFLOW_DB_WAIT_SECONDS=0")
    result = run_admin_step({**env, "MLFLOW_DB_WAIT_SECONDS": "0"}, timeout=120)
    line = one_error_line(result)
    assert all(w in line for w in words), line
    assert_no_secret(result.output, "Wr0ng@:/?#%&+master", quote("Wr0ng@:/?#%&+master", safe=""))


def test_the_admin_step_waits_for_a_database_that_is_not_up_yet(database, tmp_path):
    """The admin task can start before the cluster's writer answers (Aurora User Guide, "Creating
    an Amazon Aurora DB cluster": the endpoint exists before the instance is available): it waits
    (MLFLOW_DB_WAIT_SECONDS, the server's bounded wait), logging each attempt, then does its work."""
    import threading

    peer = type(database)(port=free_port())
    try:
        peer.start()
        ensure_master(peer)
        peer.stop()
        t = make_target(peer)
        done: list = []
        worker = threading.Thread(target=lambda: done.append(run_admin_step(
            t.admin_env(MLFLOW_DB_WAIT_SECONDS="120"), timeout=240)))
        worker.start()
        worker.join(timeout=8)
        assert not done, done[0].output if done else ""  # still waiting
        peer.start()
        worker.join(timeout=240)
        assert done and done[0].returncode == 0, done[0].output if done else "no result"
        assert "database not ready" in done[0].stdout and "admin step: done" in done[0].stdout, done[0].stdout
    finally:
        peer.close()


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


# --- the upgrade gate: a plain admin step never upgrades a schema --------------------------------
from tests.server.test_schema import OLD_REVISION as OLD_TRACKING  # noqa: E402  (MLflow 2.19, Nov 2024)
UPGRADE_WORDS = ("writers stopped", "snapshot", "pulumi up", "admin --upgrade", "nothing was changed")


def old_tracking_schema(t: Target) -> None:
    """The tracking database at MLflow 2.19's revision with an experiment, a run and a metric,
    made by the master as an older deployment left it (no application user, no auth database)."""
    import sqlalchemy

    from tests.server.test_schema import old_schema

    master, password = ensure_master(t.db)
    with contextlib.closing(t.connect(None, master, password)) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {t.name}")  # owned by the master, as the admin step makes it
    engine = sqlalchemy.create_engine(t.db.url(master, password, t.name), poolclass=sqlalchemy.pool.NullPool)
    old_schema(
        engine, "mlflow-artifacts:/old",
        "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
        "start_time, source_version, lifecycle_stage, artifact_uri, experiment_id) VALUES ('r1', 'old-run', "
        "'LOCAL', '', '', 'someone', 'FINISHED', 1700000000000, '', 'active', 'mlflow-artifacts:/old/r1', "
        "(SELECT experiment_id FROM experiments WHERE name = 'from-2024'))",
        "INSERT INTO metrics (run_uuid, " + ("`key`" if t.db.engine == "mysql" else "key")
        + ", value, timestamp, step, is_nan) VALUES ('r1', 'loss', 0.5, 1, 0, false)")
    engine.dispose()


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


def test_an_old_schema_stops_a_plain_admin_step_and_upgrade_upgrades_it(target, tmp_path):
    """A schema below the image's heads: plain `admin` exits 3 with one line naming both revisions and
    how to upgrade (writers stopped, snapshot: `pulumi up` does both, or `admin --upgrade` by hand),
    and changes nothing (revision, tables, row counts; no database, no user made); `admin --upgrade`
    then upgrades it and the server serves the old rows as the application user."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    old_tracking_schema(target)
    before = snapshot(target)
    assert before[target.name]["revision"] == [OLD_TRACKING] and before[target.auth] == "missing", before
    result = run_admin_step(target.admin_env(), timeout=180)
    assert result.returncode == 3, result.output
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    head = _get_latest_schema_revision()
    assert line.startswith("mlflow-entrypoint: upgrade needed: "), line
    assert f"tracking schema of database '{target.name}' is at revision {OLD_TRACKING}" in line and head in line, line
    assert all(w in line for w in UPGRADE_WORDS), line
    assert_no_secret(result.output)
    assert snapshot(target) == before  # untouched

    upgraded = run_admin_step(target.admin_env(), upgrade=True)
    assert upgraded.returncode == 0, upgraded.output
    assert f"tracking schema: upgraded from revision {OLD_TRACKING} to {head}" in upgraded.stdout
    after = snapshot(target)
    assert after[target.name]["revision"] == [head] and after[target.name]["runs"] == 1, after
    assert after[target.name]["metrics"] == 1 and after["app user"] == 1, after
    assert run_admin_step(target.admin_env()).returncode == 0  # at the heads: a plain run passes again
    with Server(target.server_env(tmp_path)) as srv, client_env(srv.client_env(ADMIN, ADMIN_PASSWORD)):
        client = MlflowClient(srv.url)  # (the row went in by SQL: latest_metrics is empty, read the history)
        assert client.get_run("r1").info.run_name == "old-run"
        assert [(m.value, m.step) for m in client.get_metric_history("r1", "loss")] == [(0.5, 0)]


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


def test_a_newer_schema_is_refused_even_with_upgrade(target):
    """A revision this image's MLflow does not know (a newer MLflow wrote it; a downgrade): exit 2,
    one line, untouched, with --upgrade too."""
    import sqlalchemy

    old_tracking_schema(target)
    master, password = ensure_master(target.db)
    engine = sqlalchemy.create_engine(target.db.url(master, password, target.name), poolclass=sqlalchemy.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'fedcba987654'"))
    engine.dispose()
    before = snapshot(target)
    for upgrade in (False, True):
        line = one_error_line(run_admin_step(target.admin_env(), timeout=180, upgrade=upgrade))
        assert "fedcba987654" in line and "unknown" in line and "newer MLflow" in line, line
        assert snapshot(target) == before


def test_an_unknown_admin_argument_is_one_line(target):
    result = run_entrypoint(target.admin_env(), ("admin", "--upgrad"), timeout=60)
    line = one_error_line(result)
    assert "--upgrad" in line and "--upgrade" in line, line
    assert snapshot(target) == {target.name: "missing", target.auth: "missing", "app user": 0}
