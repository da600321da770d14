"""Schema handling: created once by simultaneous starts, old schemas upgraded, unknown ones refused,
and the basic-auth store's migration fixed on MariaDB (mlflow issues 9642/10964)."""

from __future__ import annotations

import sys

import pytest
import requests
import sqlalchemy

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, DB_PASSWORD, unique
from tests.support.peers import free_port
from tests.support.server import ROOT, Server, load_entrypoint, run_entrypoint

sys.path.insert(0, str(ROOT / "image"))
_dont_write, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # keep image/ free of __pycache__
import auth_schema  # noqa: E402  (image/auth_schema.py: the fix under test)

sys.dont_write_bytecode = _dont_write

OLD_REVISION = "0584bdc529eb"  # MLflow 2.19's schema (Nov 2024)


def head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def engine_for(f, name=None):
    return sqlalchemy.create_engine(f.db.url(f.user, f.password, name or f.name), poolclass=sqlalchemy.pool.NullPool)


def versions(engine, table="alembic_version") -> list[str]:
    with engine.connect() as c:
        return [r[0] for r in c.execute(sqlalchemy.text(f"SELECT version_num FROM {table}"))]


def test_two_processes_started_together_create_the_schema_once(fresh, tmp_path):
    f = fresh()
    env = {**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}
    a, b = Server(env), Server(env)
    try:
        a.spawn()
        b.spawn()
        a.wait_healthy()
        b.wait_healthy()
        outputs = [a.output(), b.output()]
        created = [o for o in outputs if "tracking schema: created at revision" in o]
        current = [o for o in outputs if "tracking schema: up to date" in o]
        assert len(created) == 1 and len(current) == 1, outputs
        assert sum("auth schema: migrated from nothing" in o for o in outputs) == 1
        assert sum("Creating initial MLflow database tables" in o for o in outputs) == 1
        assert versions(engine_for(f)) == [head_revision()]
        for server in (a, b):
            r = requests.post(server.url + "/api/2.0/mlflow/experiments/search", json={"max_results": 5},
                              auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
            assert r.status_code == 200 and [e["name"] for e in r.json()["experiments"]] == ["Default"]
    finally:
        a.close()
        b.close()


def test_an_old_schema_is_upgraded_before_serving(fresh, tmp_path):
    from alembic import command
    from mlflow.store.db.utils import InitialBase, _get_alembic_config

    f = fresh()
    engine = engine_for(f)
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, OLD_REVISION)
        conn.execute(sqlalchemy.text("INSERT INTO experiments (name, artifact_location, lifecycle_stage) "
                                     "VALUES ('from-2024', 'mlflow-artifacts:/old', 'active')"))
    assert versions(engine) == [OLD_REVISION]

    with Server({**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}) as srv:
        assert f"tracking schema: upgraded from revision {OLD_REVISION} to {head_revision()}" in srv.output()
        r = requests.get(srv.url + "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": "from-2024"},
                         auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
        assert r.status_code == 200, r.text
    assert versions(engine) == [head_revision()]


@pytest.mark.parametrize("case", ["newer-revision", "not-mlflow"])
def test_a_schema_it_cannot_upgrade_is_refused(fresh, tmp_path, case):
    from mlflow.store.db.utils import _initialize_tables

    f = fresh()
    engine = engine_for(f)
    with engine.begin() as conn:
        if case == "newer-revision":
            _initialize_tables(engine)
            conn.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = 'fedcba987654'"))
        else:
            conn.execute(sqlalchemy.text("CREATE TABLE payroll (id INTEGER PRIMARY KEY)"))
    result = run_entrypoint({**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "a"),
                             "MLFLOW_PORT": str(free_port())}, timeout=120)
    assert result.returncode != 0
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
    """The first start migrates (and records the heads beside the entrypoint when it may, as the
    image build does); the next start on the same databases only compares revisions."""
    f = fresh()
    env = {**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}
    with Server(env) as first:
        assert "tracking schema: created at revision" in first.output()
    with Server(env) as second:
        out = second.output()
        assert f"tracking schema: up to date (revision {head_revision()}); auth schema: up to date" in out, out
        assert "checked against the head revisions recorded for MLflow" in out
        r = requests.post(second.url + "/api/2.0/mlflow/experiments/search", json={"max_results": 1},
                          auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
        assert r.status_code == 200, r.text


def test_recorded_heads_are_used_only_when_they_match(fresh, tmp_path):
    ep = load_entrypoint()
    heads = ep.compute_schema_heads()
    assert heads["tracking"] == head_revision() and heads["mlflow"] == ep.installed_mlflow_version()
    path = tmp_path / "schema_heads.json"
    assert ep.recorded_schema_heads(path) is None  # no file
    assert ep.record_schema_heads(heads, path) and ep.recorded_schema_heads(path) == heads
    assert [p.name for p in tmp_path.iterdir()] == ["schema_heads.json"]  # no temp file left
    path.write_text(path.read_text().replace(heads["mlflow"], "0.0.1"))
    assert ep.recorded_schema_heads(path) is None  # recorded for another MLflow version
    path.write_text("{not json")
    assert ep.recorded_schema_heads(path) is None
    # the revisions in the databases: none before the first start, the heads after it
    f = fresh()
    urls = (sqlalchemy.engine.make_url(f.db.url(f.user, f.password, f.name)),
            sqlalchemy.engine.make_url(f.db.url(f.user, f.password, f.auth_name)))
    assert ep.schema_revisions(*urls) == (None, None)  # an empty tracking database, no auth database yet
    with Server({**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "a")}):
        pass
    assert ep.schema_revisions(*urls) == (heads["tracking"], heads["auth"])
    engine = engine_for(f)
    with engine.begin() as conn:  # a database one revision behind is not "at the heads"
        conn.execute(sqlalchemy.text(f"UPDATE alembic_version SET version_num = '{OLD_REVISION}'"))
    assert ep.schema_revisions(*urls)[0] == OLD_REVISION


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
