"""`entrypoint.py gc` (image/gc_step.py) for real: MariaDB and PostgreSQL prepared by the admin step,
runs logged through the real server and MLflow client with artifacts proxied to moto's S3, then
the gc command as the scheduled ECS task runs it (the application user, the server's environment).

Deletion times: the server stamps runs.deleted_time with the moment of DeleteRun (MLflow 3.17.2,
SqlAlchemyStore.delete_run) and no API sets it otherwise, and MLflow's gc selects on it
(_get_deleted_runs: lifecycle_stage = 'deleted' AND deleted_time <= now - N days). Waiting N days
is not possible in a test, so the "old" deletions are moved N+10 days into the past with one SQL
UPDATE of that column, which is exactly the state such a run is in after N+10 days.

What is checked (mlflow/cli/__init__.py `gc`, and mlflow issues #3595, #15461: MLflow's gc ends
the whole collection at the first run whose artifact folder is missing or cannot be deleted):
old deleted runs lose their rows (runs, params, metrics, latest_metrics, tags) and every S3 object
under their artifact folder; runs deleted recently and live runs keep rows and objects; an old run
whose folder was already removed is collected like the others; an old run whose artifacts cannot
be deleted (a location outside the destination) is skipped with one line, keeps its rows, and the
others are still collected (exit 1: something left for next time); the process ends within a
bounded time (subprocess timeout, not a timing assertion).
"""

from __future__ import annotations

import contextlib
import uuid

import pytest
import sqlalchemy

from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.support.server import Server, client_env, run_entrypoint, s3_env

DAYS = 30
GC_TIMEOUT = 240  # seconds: the subprocess is killed (and the test fails) if gc ever hangs
TABLES = ("runs", "params", "metrics", "latest_metrics", "tags")


def _engine(database, f):
    return sqlalchemy.create_engine(database.url(f.user, f.password, f.name), poolclass=sqlalchemy.pool.NullPool)


def _rows(engine, run_id: str) -> dict[str, int]:
    with engine.connect() as c:
        return {t: c.execute(sqlalchemy.text(f"SELECT COUNT(*) FROM {t} WHERE run_uuid = :r"), {"r": run_id}).scalar()
                for t in TABLES}


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


@pytest.fixture
def world(database, fresh, s3, tmp_path):
    """Six runs with params, metrics, tags and two artifacts each, in one experiment:
    old, old2 (deleted DAYS+10 days ago), old_missing (the same, its artifact folder removed from
    S3 by hand), old_outside (the same, its artifact location moved outside the destination),
    recent (deleted 1 day ago), live (never deleted)."""
    from mlflow import MlflowClient

    f = fresh()
    bucket = s3.create_bucket(f"gc-{uuid.uuid4().hex[:10]}")
    env = {**f.env(), **s3_env(s3, bucket, "mlflow/artifacts")}
    src = tmp_path / "a.txt"
    src.write_text("artifact\n")
    runs = {}
    with Server(env) as server, client_env({**server.client_env(ADMIN, ADMIN_PASSWORD),
                                            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}):
        client = MlflowClient(server.url)
        exp = client.create_experiment(f"gc-{uuid.uuid4().hex[:8]}")
        for name in ("old", "old2", "old_missing", "old_outside", "recent", "live"):
            run = client.create_run(exp, run_name=name)
            rid = run.info.run_id
            client.log_param(rid, "p", name)
            client.log_metric(rid, "m", 1.0)
            client.log_metric(rid, "m", 2.0, step=1)
            client.set_tag(rid, "t", name)
            client.log_artifact(rid, str(src))
            client.log_text(rid, "nested\n", "dir/b.txt")
            client.set_terminated(rid)
            runs[name] = rid
            if name != "live":
                client.delete_run(rid)
    engine = _engine(database, f)
    old_ms = (DAYS + 10) * 86_400_000
    with engine.begin() as c:
        for name in ("old", "old2", "old_missing", "old_outside"):
            c.execute(sqlalchemy.text("UPDATE runs SET deleted_time = deleted_time - :d WHERE run_uuid = :r"),
                      {"d": old_ms, "r": runs[name]})
        c.execute(sqlalchemy.text("UPDATE runs SET deleted_time = deleted_time - :d WHERE run_uuid = :r"),
                  {"d": 86_400_000, "r": runs["recent"]})
    prefix = {n: f"mlflow/artifacts/{exp}/{rid}/artifacts/" for n, rid in runs.items()}
    for name in runs:
        assert _keys(s3, bucket, prefix[name]) == [prefix[name] + "a.txt", prefix[name] + "dir/b.txt"]
    admin = s3.client()
    for key in _keys(s3, bucket, prefix["old_missing"]):
        admin.delete_object(Bucket=bucket, Key=key)
    try:
        yield {"env": env, "runs": runs, "prefix": prefix, "bucket": bucket, "engine": engine, "s3": s3,
               "exp": exp}
    finally:
        engine.dispose()
        with contextlib.suppress(Exception):
            for key in _keys(s3, bucket, ""):
                admin.delete_object(Bucket=bucket, Key=key)
            admin.delete_bucket(Bucket=bucket)


def _gc(env: dict, **extra):
    return run_entrypoint({**env, "MLFLOW_GC_OLDER_THAN_DAYS": str(DAYS), **extra}, args=("gc",), timeout=GC_TIMEOUT)


def test_gc_removes_old_deleted_runs_and_their_objects_only(world):
    w = world
    runs, engine, s3, bucket = w["runs"], w["engine"], w["s3"], w["bucket"]
    with engine.begin() as c:  # old_outside: a location gc must never touch (not below the destination)
        c.execute(sqlalchemy.text("UPDATE runs SET artifact_uri = :u WHERE run_uuid = :r"),
                  {"u": f"s3://{bucket}/elsewhere/{runs['old_outside']}", "r": runs["old_outside"]})
    s3.client().put_object(Bucket=bucket, Key=f"elsewhere/{runs['old_outside']}/x.txt", Body=b"keep")

    result = _gc(w["env"])
    out = result.output
    print(out)  # the per-run lines and the summary, shown by pytest -rA
    assert result.returncode == 1, out  # old_outside was left for the next time
    for name in ("old", "old2", "old_missing"):
        assert _rows(engine, runs[name]) == dict.fromkeys(TABLES, 0), name
        assert _keys(s3, bucket, w["prefix"][name]) == [], name
        assert f"gc: run {runs[name]} deleted: rows removed" in out
    assert f"gc: run {runs['old_missing']} deleted: rows removed, artifacts " in out
    assert f"{w['prefix']['old_missing'].rstrip('/')} already missing" in out
    for name in ("recent", "live", "old_outside"):
        rows = _rows(engine, runs[name])
        assert {t: rows[t] for t in TABLES[:4]} == {"runs": 1, "params": 1, "metrics": 2, "latest_metrics": 1}, name
        assert rows["tags"] >= 2, name  # ours and mlflow.runName at least
    for name in ("recent", "live"):
        p = w["prefix"][name]
        assert _keys(s3, bucket, p) == [p + "a.txt", p + "dir/b.txt"], name
        assert runs[name] not in out
    assert _keys(s3, bucket, f"elsewhere/{runs['old_outside']}/") == [f"elsewhere/{runs['old_outside']}/x.txt"]
    assert f"gc: run {runs['old_outside']} skipped, left for the next time: ValueError: artifact location" in out
    assert "gc: done: 3 run(s) deleted, 1 skipped, 0 not tried" in out
    assert result.error_lines == [], result.stderr
    assert w["env"]["MLFLOW_DB_PASSWORD"] not in out


def test_gc_twice_is_quiet_and_exit_0(world):
    """Everything due collected: exit 0; a second run finds nothing due and changes nothing."""
    first = _gc(world["env"])
    assert first.returncode == 0, first.output
    assert "gc: done: 4 run(s) deleted, 0 skipped, 0 not tried" in first.output
    second = _gc(world["env"])
    assert second.returncode == 0, second.output
    assert "gc: 0 run(s) deleted more than 30 day(s) ago" in second.output
    assert _rows(world["engine"], world["runs"]["recent"])["runs"] == 1


def test_gc_with_a_shorter_age_takes_the_recent_one_too(world):
    """N=1: the run deleted a day ago (minus a moment) is due too; live runs never are."""
    result = _gc(world["env"], MLFLOW_GC_OLDER_THAN_DAYS="1")
    assert result.returncode == 0, result.output
    assert "gc: done: 5 run(s) deleted" in result.output
    assert _rows(world["engine"], world["runs"]["live"])["runs"] == 1
    p = world["prefix"]["live"]
    assert _keys(world["s3"], world["bucket"], p) == [p + "a.txt", p + "dir/b.txt"]


def test_artifact_paths_gc_may_delete():
    """Only a run's own folder below the destination: never the destination itself, nothing beside
    it (an empty or `..` path would make S3's prefix delete everything under the destination)."""
    import importlib.util
    import sys

    from tests.support.server import ENTRYPOINT

    sys.path.insert(0, str(ENTRYPOINT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gc_step_under_test", ENTRYPOINT.parent / "gc_step.py")
        gc_step = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gc_step)
    finally:
        sys.path.remove(str(ENTRYPOINT.parent))
    dest = "s3://b/mlflow/artifacts"
    assert gc_step.relative_path("mlflow-artifacts:/1/abc/artifacts", dest) == "1/abc/artifacts"
    assert gc_step.relative_path("mlflow-artifacts://host:5000/1/abc/artifacts", dest) == "1/abc/artifacts"
    assert gc_step.relative_path("s3://b/mlflow/artifacts/1/abc/artifacts", dest) == "1/abc/artifacts"
    for bad in ("mlflow-artifacts:/", "mlflow-artifacts:", "mlflow-artifacts:/1/../..", "mlflow-artifacts:/./x",
                "s3://b/mlflow/artifacts", "s3://b/mlflow/artifacts2/1/x", "s3://other/1/x", "file:///tmp/x",
                "mlflow-artifacts:/1//x"):
        with pytest.raises(ValueError):
            gc_step.relative_path(bad, dest)


@pytest.mark.parametrize("value, line", [
    (None, "MLFLOW_GC_OLDER_THAN_DAYS is not set"),
    ("thirty", "MLFLOW_GC_OLDER_THAN_DAYS='thirty' is not an integer"),
    ("-1", "MLFLOW_GC_OLDER_THAN_DAYS=-1 is out of range"),
])
def test_bad_age_is_one_line_and_exit_2(value, line):
    result = run_entrypoint({"MLFLOW_GC_OLDER_THAN_DAYS": value, "MLFLOW_DB_ENGINE": "mysql",
                             "MLFLOW_DB_HOST": "127.0.0.1", "MLFLOW_DB_USER": "u", "MLFLOW_DB_PASSWORD": "s3cret-pw!"},
                            args=("gc",), timeout=60)
    assert result.returncode == 2, result.output
    assert len(result.error_lines) == 1 and line in result.error_lines[0], result.stderr
    assert "s3cret-pw!" not in result.output


def test_age_0_is_off():
    result = run_entrypoint({"MLFLOW_GC_OLDER_THAN_DAYS": "0"}, args=("gc",), timeout=60)
    assert result.returncode == 0, result.output
    assert "garbage collection is off" in result.stdout


def test_gc_needs_a_database_server_and_a_destination(tmp_path):
    result = run_entrypoint({"MLFLOW_GC_OLDER_THAN_DAYS": "5"}, args=("gc",), timeout=60)
    assert result.returncode == 2 and "gc runs against a database server" in result.error_lines[0], result.output
    result = run_entrypoint({"MLFLOW_GC_OLDER_THAN_DAYS": "5", "MLFLOW_DB_ENGINE": "postgresql",
                             "MLFLOW_DB_HOST": "127.0.0.1", "MLFLOW_DB_USER": "u", "MLFLOW_DB_PASSWORD": "pw"},
                            args=("gc",), timeout=60)
    assert result.returncode == 2 and "MLFLOW_ARTIFACTS_DESTINATION is not set" in result.error_lines[0], result.output


def test_mlflows_own_gc_stops_at_the_first_proxied_run(world, tmp_path):
    """Why image/gc_step.py wraps MLflow's pieces instead of running `mlflow gc` (MLflow 3.17.2,
    mlflow/cli/__init__.py): with the server's own settings (backend URI, --artifacts-destination,
    MLFLOW_TRACKING_URI = the database, as its docstring demands a tracking URI) it cannot resolve
    a `mlflow-artifacts:/` URI without an http(s) tracking server, raises, and ends the collection
    with every due run left in place. If a future MLflow fixes this, this test says so."""
    import subprocess
    import sys

    w = world
    env = w["env"]
    uri = w["engine"].url.render_as_string(hide_password=False)
    child = {**{k: v for k, v in env.items() if k.startswith(("AWS_", "MLFLOW_S3"))}, "PATH": "/usr/bin:/bin",
             "MLFLOW_TRACKING_URI": uri, "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri, "--older-than", f"{DAYS}d",
                        "--artifacts-destination", env["MLFLOW_ARTIFACTS_DESTINATION"]],
                       env=child, capture_output=True, text=True, timeout=GC_TIMEOUT)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "When an mlflow-artifacts URI was supplied, the tracking URI must be a valid http or https URI" in p.stderr
    assert "has been permanently deleted" not in p.stdout
    for name in ("old", "old2", "old_missing", "old_outside"):
        assert _rows(w["engine"], w["runs"][name])["runs"] == 1, name


def test_gc_deletes_nothing_while_the_admin_step_holds_the_schema_lock(world):
    """An upgrade stops the ECS services, not a scheduled gc task already running (EventBridge
    Scheduler starts it with RunTask; docs/upgrading.md): so gc takes the schema lock the admin step
    migrates under (MySQL GET_LOCK, PostgreSQL advisory lock; image/db_schema.py) for each run,
    without waiting. While another session holds it, gc deletes nothing and leaves every run for
    the next time (exit 1); once it is free, the same runs are collected."""
    import sys

    from tests.support.server import ENTRYPOINT

    sys.path.insert(0, str(ENTRYPOINT.parent))
    try:
        import db_schema
    finally:
        sys.path.remove(str(ENTRYPOINT.parent))
    engine = world["engine"]
    with db_schema.schema_lock_if_free(engine) as held:  # the admin step, migrating
        assert held
        blocked = _gc(world["env"])
    print(blocked.output)
    assert blocked.returncode == 1, blocked.output
    assert "gc: a schema change is in progress (the admin step): stopped, 4 run(s) left" in blocked.output
    for name in ("old", "old2", "old_missing", "old_outside"):
        assert _rows(engine, world["runs"][name])["runs"] == 1, name
    p = world["prefix"]["old"]
    assert _keys(world["s3"], world["bucket"], p) == [p + "a.txt", p + "dir/b.txt"]
    after = _gc(world["env"])
    assert after.returncode == 0, after.output
    assert "gc: done: 4 run(s) deleted, 0 skipped, 0 not tried" in after.output
