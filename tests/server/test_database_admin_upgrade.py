"""The upgrade gate (docs/upgrading.md): a plain admin step never upgrades a schema. A tracking
schema below the image's heads stops it with exit 3 and one line, changing nothing; `admin
--upgrade` upgrades it; a revision newer than this image's MLflow is refused even with --upgrade.
(An auth schema below its head: test_database_admin.py, on the module's prepared server.)
"""

from __future__ import annotations

import contextlib

from mlflow import MlflowClient

from tests.server.admin_target import Target, assert_no_secret, one_error_line, snapshot
from tests.server.admin_target import target  # noqa: F401  (a fixture)
from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.server.test_schema import OLD_REVISION as OLD_TRACKING  # (MLflow 2.19, Nov 2024)
from tests.support.dbadmin import ensure_master, run_admin_step
from tests.support.server import Server, client_env, run_entrypoint

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
