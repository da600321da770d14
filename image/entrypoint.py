#!/usr/bin/env python3
"""Entrypoint of the MLflow server image: configured by environment only (the README's container contract).

    python3 entrypoint.py                # check the environment, prepare, exec the server (uvicorn)
    python3 entrypoint.py --healthcheck  # exit 0 iff GET http://127.0.0.1:$MLFLOW_PORT/health is 200
    python3 entrypoint.py --write-schema-heads  # image build: record MLflow's schema head revisions
    python3 entrypoint.py admin          # the database admin step, with the master credentials (admin_step.py):
                                         # exit 3, nothing changed, when a schema needs an upgrade
    python3 entrypoint.py admin --upgrade   # the same, upgrading schemas below the image's heads
    python3 entrypoint.py gc             # remove runs deleted more than MLFLOW_GC_OLDER_THAN_DAYS ago (gc_step.py)

Steps (each failure ends the process with exit code 2 and ONE line on stderr naming the problem;
no secret is ever printed or put on a command line):
 1. read and validate the settings (engine, port, workers, permissions, timeouts, wait); check
    that MLFLOW_HOST:MLFLOW_PORT can be bound (a taken port is one line, not uvicorn's "Address
    already in use" and exit 0); MLflow's telemetry off unless MLFLOW_DISABLE_TELEMETRY is set;
 2. point TMPDIR (the artifact spool) at MLFLOW_SPOOL_DIR and log the free space there;
 3. database mode (MLFLOW_DB_ENGINE or MLFLOW_BACKEND_STORE_URI): build the URI with the password
    URL-encoded, check the server answers and accepts the login, waiting up to
    MLFLOW_DB_WAIT_SECONDS for a server that cannot be reached or does not answer yet (db_wait.py;
    every connection before the exec is bounded, handshake included), check that the tracking
    and auth databases exist, check an s3:// destination bucket with head_bucket; embedded mode
    (nothing configured): SQLite files, local artifacts, a generated Flask secret key and admin
    password kept in MLFLOW_STATE_DIR;
 4. a database server: both schemas must be exactly at this image's heads (recorded at image
    build in schema_heads.json, so MLflow is not imported here; else MLflow's own), or the
    process stops with one line saying to run the admin step: the server creates no database and
    changes no schema, the admin step does both as the master (admin_step.py, db_schema.py).
    SQLite: this process creates or upgrades its own schemas under a file lock (db_schema.py);
 5. render the basic-auth ini (0600) under the spool dir (embedded mode: the state dir) and exec
    uvicorn on the app of `mlflow server --app-name basic-auth-fastpath` (MLflow's basic-auth app
    with cheaper permission lookups, plugins/mlflow_auth_fastpath), with the command and
    environment `mlflow server` would give it (direct_launch.py; `mlflow server` itself for what
    that does not mirror, e.g. MLFLOW_AUTH_FASTPATH=false, which runs `basic-auth`), the artifact
    proxy, uvloop + httptools and a keep-alive longer than the load balancer's idle timeout.

The steps live in the modules beside this file: env_settings.py (the settings, Fatal, the
redaction of secrets), state_files.py (writable dirs, 0600 files), db_checks.py (the database and
schema checks; db_wait.py, db_tls.py, db_schema.py below them), bucket_check.py (the S3 check) and
server_launch.py (the port check, uvicorn options, pool settings, the auth ini, `mlflow server`'s
argv and environment) and direct_launch.py (the same start as uvicorn's argv and environment). This module is the command line, and the module that admin_step.py and
gc_step.py are handed (`ep`): every name they and the tests use is importable from here.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # never write __pycache__ next to the entrypoint (read-only in the image)
if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (tests), not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

# the entrypoint's modules (image/*.py); the names admin_step.py, gc_step.py and the tests use from `ep`
import direct_launch  # noqa: E402,F401
from bucket_check import CONNECT_TIMEOUT, check_bucket  # noqa: E402,F401
from db_checks import (  # noqa: E402,F401
    HEADS_FILE, _engine, admin_exists, local_schemas, probe, require_database, require_schema_heads)
from env_settings import (  # noqa: E402,F401
    ENGINES, PERMISSIONS, PREFIX, TELEMETRY_VALUES, Fatal, Settings, env_bool, env_int, info, redact, secret)
from server_launch import (  # noqa: E402,F401
    ADMIN_PASSWORD_MIN, FASTPATH_APP, GRACEFUL_SHUTDOWN_SECONDS, PLUGINS, POOL_SETTINGS, auth_app, cache_note,
    check_port, cors_origins, pool_settings, prepare, uvicorn_opts)
from state_files import human, read_or_create, writable_dir, write_private  # noqa: E402,F401


def healthcheck() -> int:
    try:
        port = int(os.environ.get("MLFLOW_PORT", "").strip() or 5000)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return 0 if r.status == 200 else 1
    except (OSError, ValueError, urllib.error.URLError):
        return 1


def main(argv: list[str]) -> int:
    import db_schema

    if "--healthcheck" in argv:
        return healthcheck()
    if argv[1:] == ["--write-schema-heads"]:  # image build: lets every start on an up-to-date schema skip MLflow's import
        heads = db_schema.compute_schema_heads()
        if not db_schema.record_schema_heads(heads, HEADS_FILE):
            print(f"{PREFIX} error: could not write {HEADS_FILE}", file=sys.stderr)
            return 2
        info(f"recorded schema heads in {HEADS_FILE}: {heads}")
        return 0
    if argv[1:2] == ["admin"]:  # the database admin step (master credentials), `admin [--upgrade]`: admin_step.py
        import admin_step

        return admin_step.main(sys.modules[__name__], dict(os.environ), argv[2:])
    if argv[1:] == ["gc"]:  # scheduled garbage collection of deleted runs, as the application user: gc_step.py
        import gc_step

        return gc_step.main(sys.modules[__name__], dict(os.environ))
    if len(argv) > 1:
        print(f"{PREFIX} error: unexpected arguments {argv[1:]!r}; this entrypoint is configured by environment "
              f"only (see the README's container contract), or takes --healthcheck, admin or gc", file=sys.stderr)
        return 2
    try:
        args, child = prepare(dict(os.environ))
    except (Fatal, db_schema.SchemaError) as e:
        print(f"{PREFIX} error: {redact(' '.join(str(e).split()))}", file=sys.stderr, flush=True)
        return 2
    except Exception as e:  # an unexpected failure still gets one line, never a secret
        print(f"{PREFIX} error: unexpected {type(e).__name__}: {redact(' '.join(str(e).split()))[:500]}",
              file=sys.stderr, flush=True)
        return 3
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(args[0], args, child)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
