"""Schema handling: the admin step creates or upgrades the schemas (once, under a lock, even when two
run at the same time) and refuses what it cannot upgrade; the server never changes a schema and
refuses one that is not at its image's heads; the basic-auth store's migration is fixed on MariaDB
(mlflow issues 9642/10964)."""

from __future__ import annotations

import sys

import pytest
import requests
import sqlalchemy

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, DB_PASSWORD, unique
from tests.support.dbadmin import ensure_master, run_admin_step
from tests.support.peers import free_port
from tests.support.server import ROOT, Server, run_entrypoint

sys.path.insert(0, str(ROOT / "image"))
_dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # keep image/ free of __pycache__
import auth_schema  # noqa: E402  (image/auth_schema.py: the fix under test)
import db_schema  # noqa: E402  (image/db_schema.py: heads and revisions)

sys.dont_write_bytecode = _dont_write

OLD_REVISION = "0584bdc529eb"  # MLflow 2.19's schema (Nov 2024)
RUN_ADMIN = "run the admin step (python3 /app/entrypoint.py admin) with the master credentials first"


def head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def engine_for(f, name=None, master: bool = False):
    """An engine on one of `f`'s databases, as its application user or as the master."""
    user, password = ensure_master(f.db) if master else (f.user, f.password)
    return sqlalchemy.create_engine(f.db.url(user, password, name or f.name), poolclass=sqlalchemy.pool.NullPool)


def versions(engine, table="alembic_version") -> list[str]:
    with engine.connect() as c:
        return [r[0] for r in c.execute(sqlalchemy.text(f"SELECT version_num FROM {table}"))]


def create_as_master(f) -> sqlalchemy.engine.Engine:
    """The tracking database made by the master (as the admin step would), empty: its engine."""
    server = engine_for(f, "postgres" if f.db.engine == "postgresql" else "information_schema", master=True)
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        q = '"' if f.db.engine == "postgresql" else "`"
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {q}{f.name}{q}"))
    return engine_for(f, master=True)


def old_schema(engine, artifact_location: str = "mlflow-artifacts:/old", *statements: str) -> None:
    """Make `engine`'s empty database an MLflow 2.19 schema (OLD_REVISION, by MLflow's own alembic
    scripts from its initial tables) holding the experiment 'from-2024' at `artifact_location`, then
    run `statements` in the same transaction."""
    from alembic import command
    from mlflow.store.db.utils import InitialBase, _get_alembic_config

    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, OLD_REVISION)
        conn.execute(sqlalchemy.text("INSERT INTO experiments (name, artifact_location, lifecycle_stage) "
                                     "VALUES ('from-2024', :a, 'active')"), {"a": artifact_location})
        for statement in statements:
            conn.execute(sqlalchemy.text(statement))


def test_two_admin_steps_started_together_create_the_schema_once(fresh, tmp_path):
    """Two admin steps at once on an empty server (two `pulumi up`s, or a retried task): both
    succeed, exactly one creates the user and the schemas, the other waits for the lock and finds
    them in place."""
    import concurrent.futures

    f = fresh(prepare=False)
    env = f.admin_env()  # once: it makes the RDS-like master on first use
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_admin_step(env), range(2)))
    assert [r.returncode for r in results] == [0, 0], [r.output for r in results]
    outputs = [r.stdout for r in results]
    assert sum("tracking schema: created at revision" in o for o in outputs) == 1, outputs
    assert sum("tracking schema: up to date" in o for o in outputs) == 1, outputs
    assert sum("auth schema: migrated from nothing" in o for o in outputs) == 1, outputs
    assert sum("Creating initial MLflow database tables" in o for o in outputs) == 1, outputs
    assert sum(f"created user '{f.user}'" in o for o in outputs) == 1, outputs
    assert versions(engine_for(f)) == [head_revision()]
    with Server({**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}) as server:
        r = requests.post(server.url + "/api/2.0/mlflow/experiments/search", json={"max_results": 5},
                          auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
        assert r.status_code == 200 and [e["name"] for e in r.json()["experiments"]] == ["Default"]


def test_an_old_schema_is_upgraded_by_the_admin_step(fresh, tmp_path):
    """An MLflow 2.19 schema with data, made by the master: `admin --upgrade` upgrades it and grants
    the application user its tables (made before the default privileges existed); the server
    then serves the old data as that user."""
    f = fresh(prepare=False)
    engine = create_as_master(f)
    old_schema(engine)
    assert versions(engine) == [OLD_REVISION]

    result = run_admin_step(f.admin_env(), upgrade=True)  # a plain `admin` exits 3 here (test_database_admin.py)
    assert result.returncode == 0, result.output
    assert f"tracking schema: upgraded from revision {OLD_REVISION} to {head_revision()}" in result.stdout
    with Server({**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}) as srv:
        r = requests.get(srv.url + "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "from-2024"},
                         auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
        assert r.status_code == 200, r.text
    assert versions(engine) == [head_revision()]


@pytest.mark.parametrize("which,revision,words", [
    ("tracking", OLD_REVISION, ("is at revision " + OLD_REVISION, RUN_ADMIN)),
    ("auth", auth_schema.INITIAL_REVISION, ("is at revision " + auth_schema.INITIAL_REVISION, RUN_ADMIN)),
    ("tracking", "fedcba987654", ("is at revision fedcba987654", "does not know", "newer MLflow")),
], ids=["tracking-below-head", "auth-below-head", "tracking-newer"])
def test_the_server_refuses_a_schema_not_at_its_heads(fresh, tmp_path, which, revision, words):
    """The server reads both revisions and changes nothing: exit 2, one line saying what to run."""
    f = fresh()
    database, table = (f.name, "alembic_version") if which == "tracking" else (f.auth_name, "alembic_version_auth")
    engine = engine_for(f, database, master=True)
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text(f"UPDATE {table} SET version_num = '{revision}'"))
    result = run_entrypoint({**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "a"),
                             "MLFLOW_PORT": str(free_port())}, timeout=120)
    assert result.returncode == 2, result.output
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert f"{which} schema of database '{database}'" in line and all(w in line for w in words), line
    assert DB_PASSWORD not in result.output
    assert versions(engine, table) == [revision]  # untouched


@pytest.mark.parametrize("case", ["newer-revision", "not-mlflow"])
def test_a_schema_it_cannot_upgrade_is_refused(fresh, tmp_path, case):
    """The admin step refuses, untouched, a schema written by a newer MLflow and a database that is
    not MLflow's."""
    from mlflow.store.db.utils import _initialize_tables

    f = fresh(prepare=False)
    engine = create_as_master(f)
    with engine.begin() as conn:
        if case == "newer-revision":
            _initialize_tables(engine)
            conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'fedcba987654'"))
        else:
            conn.execute(sqlalchemy.text("CREATE TABLE payroll (id INTEGER PRIMARY KEY)"))
    result = run_admin_step(f.admin_env(), timeout=120)
    assert result.returncode == 2
    assert len(result.error_lines) == 1, result.stderr
    line = result.error_lines[0]
    assert ("fedcba987654" in line and "unknown" in line) if case == "newer-revision" else ("payroll" in line
                                                                                           and "refusing" in line)
    assert DB_PASSWORD not in result.output
    # refused without touching it
    with engine.connect() as conn:
        tables = set(sqlalchemy.inspect(conn).get_table_names())
    assert ("fedcba987654" in versions(engine)) if case == "newer-revision" else (tables == {"payroll"})


# --- warm start: schemas at the recorded head revisions skip importing MLflow -----------------
def test_a_restart_on_an_up_to_date_schema_checks_the_recorded_heads(fresh, tmp_path):
    """The admin step migrates (and records the heads beside the entrypoint when it may, as the
    image build does); every server start on those databases only compares revisions."""
    f = fresh()
    env = {**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}
    with Server(env) as first:
        assert "created at revision" not in first.output() and "migrated" not in first.output()
    with Server(env) as second:
        out = second.output()
        assert f"tracking schema: up to date (revision {head_revision()}); auth schema: up to date" in out, out
        assert "checked against the head revisions recorded for MLflow" in out
        r = requests.post(second.url + "/api/2.0/mlflow/experiments/search", json={"max_results": 1},
                          auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
        assert r.status_code == 200, r.text


def test_recorded_heads_are_used_only_when_they_match(fresh, tmp_path):
    heads = db_schema.compute_schema_heads()
    assert heads["tracking"] == head_revision() and heads["mlflow"] == db_schema.installed_mlflow_version()
    path = tmp_path / "schema_heads.json"
    assert db_schema.recorded_schema_heads(path) is None  # no file
    assert db_schema.record_schema_heads(heads, path) and db_schema.recorded_schema_heads(path) == heads
    assert [p.name for p in tmp_path.iterdir()] == ["schema_heads.json"]  # no temp file left
    path.write_text(path.read_text().replace(heads["mlflow"], "0.0.1"))
    assert db_schema.recorded_schema_heads(path) is None  # recorded for another MLflow version
    path.write_text("{not json")
    assert db_schema.recorded_schema_heads(path) is None
    # the revisions in the databases: none before the admin step, the heads after it
    f = fresh(prepare=False)

    def revisions():
        return db_schema.schema_revisions(engine_for(f, master=True), engine_for(f, f.auth_name, master=True))

    assert revisions() == (None, None)  # no databases yet
    assert run_admin_step(f.admin_env()).returncode == 0
    assert revisions() == (heads["tracking"], heads["auth"])
    with engine_for(f, master=True).begin() as conn:  # a database one revision behind is not "at the heads"
        conn.execute(sqlalchemy.text(f"UPDATE alembic_version SET version_num = '{OLD_REVISION}'"))
    assert revisions()[0] == OLD_REVISION


# --- the auth store on MariaDB ---------------------------------------------------------------
@pytest.fixture
def mariadb_fresh(mariadb):
    names = []

    def make():
        name, user = unique("auth"), unique("u")[:30]
        mariadb.create_database(name)
        mariadb.create_user(user, DB_PASSWORD, [name])
        names.append(name)
        return sqlalchemy.create_engine(mariadb.url(user, DB_PASSWORD, name), poolclass=sqlalchemy.pool.NullPool)

    yield make
    for name in names:
        mariadb.drop_database(name)


def foreign_keys(engine) -> dict[str, list[str]]:
    insp = sqlalchemy.inspect(engine)
    return {t: sorted(fk["name"] for fk in insp.get_foreign_keys(t)) for t in insp.get_table_names()}


def test_mlflows_own_auth_migration_still_fails_on_mariadb(mariadb_fresh):
    """The bug the image works around is still in this MLflow: if this fails, the fix may go."""
    from mlflow.server.auth.db.utils import migrate

    engine = mariadb_fresh()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="registered_model_permissions"):
        migrate(engine, "head")


def test_the_images_auth_migration_works_on_mariadb(mariadb_fresh):
    from mlflow.server.auth.db.utils import _get_alembic_config
    from alembic.script import ScriptDirectory

    engine = mariadb_fresh()
    assert auth_schema.migrate(engine) == (None, ScriptDirectory.from_config(_get_alembic_config("")).get_current_head())
    fks = foreign_keys(engine)
    assert fks["experiment_permissions"] == ["fk_experiment_permissions_user_id"]
    assert fks["registered_model_permissions"] == ["fk_registered_model_permissions_user_id"]
    # idempotent: a second process finds it done
    before, after = auth_schema.migrate(engine)
    assert before == after


def test_the_image_repairs_a_store_left_half_created_by_mlflow(mariadb_fresh):
    from mlflow.server.auth.db.utils import migrate

    engine = mariadb_fresh()
    with pytest.raises(sqlalchemy.exc.OperationalError):
        migrate(engine, "head")  # leaves users, experiment_permissions and an empty version table
    assert "registered_model_permissions" not in sqlalchemy.inspect(engine).get_table_names()
    with pytest.raises(Exception):
        migrate(engine, "head")  # ... on which MLflow fails at every start
    _, after = auth_schema.migrate(engine)
    assert after is not None and "registered_model_permissions" in sqlalchemy.inspect(engine).get_table_names()
    assert versions(engine, "alembic_version_auth") == [after]


def test_a_waiting_migration_gets_the_lock_from_a_holder_that_takes_it_again_at_once(fresh):
    """The gc task takes the schema lock for one run at a time and again at once
    (image/gc_step.py). PostgreSQL, "Advisory Locks" and pg_advisory_lock: a session waiting in
    pg_advisory_lock is granted the lock when its holder releases it, so the holder's immediate
    pg_try_advisory_lock then fails; MySQL, GET_LOCK with a timeout: the same, the waiter is granted
    at the release. A waiter that polled with a try-lock would almost never hit that gap. Checked
    by what the holder sees, not by time: after its first release, its next try must fail."""
    import threading

    f = fresh()
    engine = engine_for(f).execution_options(isolation_level="AUTOCOMMIT")
    waiting, acquired, stop = threading.Event(), threading.Event(), threading.Event()
    retakes: list[bool] = []

    def migration():
        def log(line):
            if "waiting for another process" in line:
                waiting.set()
        with db_schema.schema_lock(engine, log):
            acquired.set()
            stop.wait(60)  # migrating

    queued = ("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
              if f.db.engine == "postgresql" else
              "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'User lock'")
    with db_schema.schema_lock_if_free(engine) as held:  # the gc task, collecting a run
        assert held
        waiter = threading.Thread(target=migration, daemon=True)
        waiter.start()
        assert waiting.wait(60), "the migration never started waiting"
        for _ in range(600):  # until the database shows the migration's session waiting for the lock
            with engine.connect() as c:
                if c.execute(sqlalchemy.text(queued)).scalar():
                    break
            stop.wait(0.1)
    for _ in range(20):  # released; the gc task goes on to its next run at once
        with db_schema.schema_lock_if_free(engine) as again:
            retakes.append(again)
            if not again:
                break
    stop.set()
    waiter.join(120)
    assert acquired.is_set() and not waiter.is_alive()
    assert retakes and retakes[0] is False, f"the gc task took the lock again first: {retakes}"
