"""Scheduled garbage collection: `python3 /app/entrypoint.py gc` (the ECS gc task's command).

Removes, for good, the runs deleted more than MLFLOW_GC_OLDER_THAN_DAYS days ago: their rows
(runs, params, metrics, latest metrics, tags) and their artifacts under MLFLOW_ARTIFACTS_DESTINATION.
Configured by environment like the server (database settings and TLS, the application user's
password MLFLOW_DB_PASSWORD, the artifact destination, AWS_REGION); it needs only what the
application user has (SELECT and DELETE on rows) and, on S3, s3:ListBucket and s3:DeleteObject
under the destination's prefix. It changes rows, never the schema; each run is collected under the
schema lock (taken without waiting), so no row is deleted while the admin step migrates.

Why not `mlflow gc` as it is (MLflow 3.17.2, mlflow/cli/__init__.py, gc/_gc_tracking_resources):
 - our runs' artifact_uri is `mlflow-artifacts:/<exp>/<run>/artifacts` (the server proxies
   artifacts). MLflow's gc resolves it with get_artifact_repository(), i.e. an HTTP repository
   that calls the tracking server's DELETE endpoint: it needs an http(s) MLFLOW_TRACKING_URI and
   credentials of a server user, and otherwise raises; `--artifacts-destination` only sets the
   store's default root, it does not resolve these URIs;
 - any error other than InvalidUrlException while deleting one run's artifacts (the server's 500
   for a folder that does not exist: mlflow issues #15461, #3595, #19467, PR #20958 unmerged)
   ends the whole collection;
 - it also hard-deletes deleted experiments and logged models, which this task leaves alone.
So this module does per run exactly what MLflow's gc does, with MLflow's own pieces: the runs come
from SqlAlchemyStore._get_deleted_runs(older_than=ms) (lifecycle_stage 'deleted' and
deleted_time <= now - N days), the artifacts are deleted with the artifact repository of
MLFLOW_ARTIFACTS_DESTINATION and the run's path below it, as the server's DELETE
/mlflow-artifacts/artifacts/<path> does (mlflow/server/handlers.py), and the rows with
SqlAlchemyStore._hard_delete_run. A run whose artifacts cannot be deleted keeps its rows (so it is
tried again next time, and no object is orphaned) and the collection goes on.

Output: one line per run ("deleted" or "skipped", with the reason), one summary line. Exit 0 when
every due run was collected (or none was due), 1 when some were left for the next time (errors,
or the time budget MLFLOW_GC_MAX_SECONDS ran out), 2 for a bad environment or a database that
cannot be used (one line on stderr, no secret).
"""

from __future__ import annotations

import os
import posixpath
import signal
import sys
import time
import warnings
from urllib.parse import urlparse

import db_wait

DAYS_MAX = 36500
MAX_SECONDS_DEFAULT = 3300  # under an hour: an hourly or daily schedule never overlaps itself
MAX_SECONDS_RANGE = (60, 86400)
HARD_STOP_GRACE = 120  # seconds after the budget before a call that hangs is interrupted


class Budget(Exception):
    """The hard stop: a call was still running MLFLOW_GC_MAX_SECONDS + HARD_STOP_GRACE after the start."""


def main(ep, env: dict) -> int:
    """The `gc` command: 0 done, 1 some runs left for next time, 2 bad environment."""
    warnings.simplefilter("ignore")  # keep library warnings out of the one-line contract
    try:
        plan = settings(ep, env)
        if plan is None:
            return 0
        store, repo = open_stores(ep, plan)
    except Exception as e:  # one line, never a secret
        return _fatal(ep, e)
    return collect(ep, plan, store, repo)


def _fatal(ep, e: Exception) -> int:
    import db_schema

    known = isinstance(e, (ep.Fatal, db_schema.SchemaError))
    text = str(e) if known else f"unexpected {type(e).__name__}: {str(e)[:500]}"
    print(f"{ep.PREFIX} error: gc: {ep.redact(' '.join(text.split()))}", file=sys.stderr, flush=True)
    return 2


# --------------------------------------------------------------------------------------------
# settings and stores
# --------------------------------------------------------------------------------------------
def settings(ep, env: dict) -> dict | None:
    """Validated settings, or None when MLFLOW_GC_OLDER_THAN_DAYS=0 (off)."""
    raw = env.get("MLFLOW_GC_OLDER_THAN_DAYS", "").strip()
    if raw == "":
        raise ep.Fatal(f"MLFLOW_GC_OLDER_THAN_DAYS is not set (days since a run's deletion after which gc removes "
                       f"it: 1..{DAYS_MAX}, 0 = off)")
    days = ep.env_int(env, "MLFLOW_GC_OLDER_THAN_DAYS", 0, 0, DAYS_MAX)
    max_seconds = ep.env_int(env, "MLFLOW_GC_MAX_SECONDS", MAX_SECONDS_DEFAULT, *MAX_SECONDS_RANGE)
    if days == 0:
        ep.info("gc: MLFLOW_GC_OLDER_THAN_DAYS=0: garbage collection is off, nothing done")
        return None
    s = ep.Settings(env)
    if s.embedded or s.db["kind"] == "sqlite":
        raise ep.Fatal("gc runs against a database server: set MLFLOW_DB_ENGINE (mysql or postgresql) and the "
                       "MLFLOW_DB_* settings of the server")
    destination = s.destination.rstrip("/")
    if not destination:
        raise ep.Fatal("MLFLOW_ARTIFACTS_DESTINATION is not set (the server's s3://bucket/prefix)")
    if destination.startswith("s3://"):
        if not urlparse(destination).netloc:
            raise ep.Fatal(f"MLFLOW_ARTIFACTS_DESTINATION={s.destination!r} names no bucket")
    elif "://" in destination:
        raise ep.Fatal(f"MLFLOW_ARTIFACTS_DESTINATION={s.destination!r}: gc supports s3://bucket/prefix or a local path")
    return {"s": s, "days": days, "max_seconds": max_seconds, "destination": destination}


def open_stores(ep, plan: dict):
    """Wait for the database (bounded, as the server), check the schema is this image's, and open
    MLflow's tracking store (as the application user) and the destination's artifact repository."""
    s = plan["s"]
    if not s.disable_telemetry:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # before MLflow is imported
    if s.region:
        os.environ.setdefault("AWS_DEFAULT_REGION", s.region)
    if s.s3_endpoint:
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = s.s3_endpoint
    # read-only root file system on ECS: temporary files and a HOME of last resort on the spool volume
    os.environ["TMPDIR"] = str(ep.writable_dir(s.spool, "MLFLOW_SPOOL_DIR"))
    home = os.environ.get("HOME", "")
    if not (home and os.path.isdir(home) and os.access(home, os.W_OK)):
        os.environ["HOME"] = str(ep.writable_dir(s.spool / ".entrypoint" / "home", "HOME"))
    db = s.db
    ep.require_database(db["kind"], db["url"], s.db_wait)
    ep.require_database(db["kind"], db["auth_url"])
    ep.require_schema_heads(db)  # gc never migrates: a schema of another MLflow version is the admin step's job
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # work=True: one run's DELETE of a long metric history may take a while (bounded still)
    uri = db_wait.bounded_url(db["url"], work=True).render_as_string(hide_password=False)
    store = SqlAlchemyStore(uri, "mlflow-artifacts:/")
    repo = get_artifact_repository(plan["destination"])
    return store, repo


# --------------------------------------------------------------------------------------------
# the collection
# --------------------------------------------------------------------------------------------
def relative_path(artifact_uri: str, destination: str) -> str:
    """The run's artifact folder relative to the destination; ValueError when it is not below it.

    `mlflow-artifacts:/p` and `mlflow-artifacts://host/p` -> p (handlers.py,
    _get_proxied_run_artifact_destination_path); a URI already below the destination (a run
    logged with --no-serve-artifacts) -> its part below it. Never empty, never `..`: gc must not
    delete the destination itself or anything beside it."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "mlflow-artifacts":
        path = parsed.path.lstrip("/")
    elif artifact_uri.startswith(destination + "/"):
        path = artifact_uri[len(destination) + 1:]
    else:
        raise ValueError(f"artifact location {artifact_uri!r} is not below MLFLOW_ARTIFACTS_DESTINATION")
    path = path.strip("/")
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        raise ValueError(f"artifact location {artifact_uri!r} has an unsafe path {path!r}")
    return path


def collect(ep, plan: dict, store, repo) -> int:
    import db_schema

    days, max_seconds, destination = plan["days"], plan["max_seconds"], plan["destination"]
    # Each run is collected under the schema lock, taken without waiting, with the schema checked
    # again under it: no row is deleted while an admin step migrates (the upgrade stops the
    # services, not a scheduled gc already running), and a migration waits for one run at most.
    head = db_schema.image_heads()[0]["tracking"]
    started = time.monotonic()
    deleted = skipped = 0
    try:
        due = store._get_deleted_runs(older_than=days * 86_400_000)
    except Exception as e:
        return _fatal(ep, ep.Fatal(f"cannot list the deleted runs: {type(e).__name__}: {str(e)[:300]}"))
    ep.info(f"gc: {len(due)} run(s) deleted more than {days} day(s) ago; artifacts under {destination}; "
            f"time budget {max_seconds} s")

    def hard_stop(signum, frame):
        raise Budget()

    previous = signal.signal(signal.SIGALRM, hard_stop)
    signal.alarm(max_seconds + HARD_STOP_GRACE)
    left = 0
    try:
        for i, run_id in enumerate(due):
            if time.monotonic() - started > max_seconds:
                left = len(due) - i
                ep.info(f"gc: time budget of {max_seconds} s used up: {left} run(s) left for the next time")
                break
            with db_schema.schema_lock_if_free(store.engine) as free:
                if not free or db_schema.revision(store.engine, db_schema.TRACKING_VERSION_TABLE) != head:
                    left = len(due) - i
                    ep.info(f"gc: {'a schema change is in progress' if free is False else 'the schema changed'} "
                            f"(the admin step): stopped, {left} run(s) left for the next time")
                    break
                try:
                    ep.info(f"gc: run {run_id} deleted: {collect_run(store, repo, run_id, destination)}")
                    deleted += 1
                except Budget:
                    raise
                except Exception as e:  # this run keeps its rows and is tried again next time
                    skipped += 1
                    ep.info(f"gc: run {run_id} skipped, left for the next time: {type(e).__name__}: "
                            f"{' '.join(str(e).split())[:300]}")
    except Budget:
        left = len(due) - deleted - skipped
        ep.info(f"gc: a call still ran {HARD_STOP_GRACE} s after the time budget: stopped, {left} run(s) left "
                f"for the next time")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    ep.info(f"gc: done: {deleted} run(s) deleted, {skipped} skipped, {left} not tried; "
            f"{time.monotonic() - started:.1f} s")
    return 0 if skipped == 0 and left == 0 else 1


def collect_run(store, repo, run_id: str, destination: str) -> str:
    """Artifacts first, then the rows (a failure leaves the rows, so nothing is orphaned)."""
    from mlflow.entities.lifecycle_stage import LifecycleStage

    run = store.get_run(run_id)
    if run.info.lifecycle_stage != LifecycleStage.DELETED:  # restored since the list was read
        raise RuntimeError("the run is no longer deleted")
    path = relative_path(run.info.artifact_uri, destination)
    present = bool(repo.list_artifacts(path))
    if present:
        repo.delete_artifacts(path)
    if store.get_run(run_id).info.lifecycle_stage != LifecycleStage.DELETED:  # restored meanwhile: keep its rows
        raise RuntimeError("the run was restored while its artifacts were being deleted; its rows are kept")
    store._hard_delete_run(run_id)
    return f"rows removed, artifacts {destination}/{path} {'removed' if present else 'already missing'}"
