"""The tracking and basic-auth schemas: created or upgraded under a lock, and checked against the image's heads.

Who changes a schema:
 - the admin step (admin_step.py, `entrypoint.py admin`, run with the master credentials) for a
   database server (MySQL/MariaDB, PostgreSQL): it creates or upgrades both schemas to MLflow's head
   revisions, once, under a database lock (MySQL GET_LOCK, PostgreSQL advisory lock);
 - a local SQLite store (embedded mode, `bin/serve`, or a sqlite:// URI): the one process that uses
   it, under a file lock;
 - never the server on a database server: it only reads both revisions (`require_heads`) and stops
   with one line naming the admin step when they are not exactly the image's heads.

The heads are recorded at image build (`entrypoint.py --write-schema-heads`, schema_heads.json
beside this file), so that a server whose databases are at them does not import MLflow before the
exec (about 2 s of start-up); without a matching record they are MLflow's own (imports MLflow).

Engines are passed in (the entrypoint's bounded, TLS-configured engines); errors are SchemaError:
one line, no secret.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Callable

HEADS_FILE = Path(__file__).resolve().parent / "schema_heads.json"
LOCK_TIMEOUT = 900  # seconds to wait for another process's schema migration
ADMIN_COMMAND = "python3 /app/entrypoint.py admin"
TRACKING_VERSION_TABLE = "alembic_version"
# MLflow before 3.6 kept the basic-auth store's revision in a table named like the tracking one; MLflow
# 3.6+ treats a store with `users` and no `alembic_version_auth` as such a legacy store and stamps
# its first revision (mlflow/server/auth/db/utils.py, _is_legacy_database / _stamp_legacy_database)
LEGACY_AUTH_VERSION_TABLE = "alembic_version"

Log = Callable[[str], None]


class SchemaError(Exception):
    """A schema that cannot be used or changed as asked: one line, no secret."""


# --------------------------------------------------------------------------------------------
# the lock every schema change is made under
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def schema_lock(engine, log: Log, lock_file: Path | None = None):
    """Hold the schema lock: a file lock (`lock_file`) for SQLite, else a lock named after the
    tracking database on its server, on one AUTOCOMMIT connection of `engine`."""
    import sqlalchemy

    if lock_file is not None:
        import fcntl

        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_file, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log("waiting for another process to finish the schema migration")
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return

    name = lock_name(engine)
    conn = engine.connect()
    try:
        if engine.dialect.name in ("mysql", "mariadb"):
            got = conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar()
            if got != 1:
                log("waiting for another process to finish the schema migration")
                got = conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, :t)"), {"n": name, "t": LOCK_TIMEOUT}).scalar()
            release = sqlalchemy.text("SELECT RELEASE_LOCK(:n)")
            params = {"n": name}
        else:
            key = _advisory_key(name)
            got = conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            if not got:
                # Wait in PostgreSQL's own lock queue, bounded by statement_timeout: polling with
                # pg_try_advisory_lock would rarely hit the gap of a holder that releases and takes
                # it again at once (the gc task, one run at a time).
                log("waiting for another process to finish the schema migration")
                conn.execute(sqlalchemy.text(f"SET statement_timeout = {int(LOCK_TIMEOUT * 1000)}"))
                try:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                    got = True
                except sqlalchemy.exc.OperationalError:  # canceled by statement_timeout
                    got = False
                finally:
                    conn.execute(sqlalchemy.text("RESET statement_timeout"))
            got = 1 if got else 0
            release = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
            params = {"k": key}
        if got != 1:
            raise SchemaError(f"timed out after {LOCK_TIMEOUT} s waiting for the schema lock {name!r} "
                              f"(another admin step is migrating, or died holding it)")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                conn.execute(release, params)
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# creating and upgrading
# --------------------------------------------------------------------------------------------
def progress_logs_to_stdout() -> None:
    """MLflow and alembic log to stderr; stderr is reserved for the one error line."""
    import logging

    import mlflow  # noqa: F401  (configures the "mlflow" logger)

    for name in ("", "mlflow", "alembic"):
        for handler in logging.getLogger(name).handlers:
            stream = getattr(handler, "stream", None)
            # MLflow's handler writes to a wrapper that follows sys.stderr
            if isinstance(handler, logging.StreamHandler) and (stream is sys.stderr
                                                               or type(stream).__name__ == "MlflowLoggingStream"):
                handler.setStream(sys.stdout)


def ensure_tracking_schema(engine, log: Log) -> str:
    """Create or upgrade the tracking schema; returns MLflow's head revision (where it now is)."""
    import sqlalchemy
    from mlflow.store.db import utils as dbu

    progress_logs_to_stdout()
    database = engine.url.database
    head = dbu._get_latest_schema_revision()
    if dbu._is_empty_database(engine):
        t0 = time.monotonic()
        dbu._initialize_tables(engine)
        log(f"tracking schema: created at revision {head} in {time.monotonic() - t0:.1f} s")
        return head
    current = dbu._get_schema_version(engine)
    if current == head:
        log(f"tracking schema: up to date (revision {head})")
        return head
    if current is None:
        tables = sorted(sqlalchemy.inspect(engine).get_table_names())
        raise SchemaError(f"tracking database {database!r} has tables ({', '.join(tables[:5])}...) but no MLflow "
                          f"schema revision: not an MLflow database, or one older than MLflow 1.0; refusing to touch it")
    if not known_revision("tracking", current):
        raise SchemaError(f"tracking schema revision {current} is unknown to MLflow {installed_mlflow_version()} "
                          f"(written by a newer MLflow?); refusing to touch it: run an image with that MLflow "
                          f"version or newer")
    t0 = time.monotonic()
    try:
        dbu._upgrade_db(engine)
    except Exception as e:
        raise SchemaError(f"upgrading the tracking schema from revision {current} to {head} failed: "
                          f"{type(e).__name__}: {' '.join(str(e).split())[:300]} (restore the backup taken before)") from None
    after = dbu._get_schema_version(engine)
    if after != head:
        raise SchemaError(f"the tracking schema is at revision {after} after the upgrade, expected {head}")
    log(f"tracking schema: upgraded from revision {current} to {head} in {time.monotonic() - t0:.1f} s")
    return head


def ensure_auth_schema(engine, log: Log) -> str:
    """Create or upgrade the basic-auth store (with the MySQL/MariaDB fix of auth_schema.py);
    returns its revision (the head)."""
    import auth_schema

    t0 = time.monotonic()
    before = auth_schema.current_revision(engine)
    if before is not None and not known_revision("auth", before):
        raise SchemaError(f"auth schema revision {before} of database {engine.url.database!r} is unknown to MLflow "
                          f"{installed_mlflow_version()} (written by a newer MLflow?); refusing to touch it: run an "
                          f"image with that MLflow version or newer")
    if auth_schema.apply_mysql_initial_fix(engine):
        log("auth schema: created MLflow's first auth revision with unique foreign-key names "
            "(MySQL/MariaDB fix for mlflow issues 9642/10964)")
    _, after = auth_schema.migrate(engine, fix=False)
    if before != after:
        log(f"auth schema: migrated from {before or 'nothing'} to {after} in {time.monotonic() - t0:.1f} s")
    else:
        log(f"auth schema: up to date (revision {after})")
    return after


# --------------------------------------------------------------------------------------------
# heads: the revisions this image's MLflow needs
# --------------------------------------------------------------------------------------------
def installed_mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def _script(which: str):
    from alembic.script import ScriptDirectory

    if which == "tracking":
        from mlflow.store.db.utils import _get_alembic_config
    else:
        from mlflow.server.auth.db.utils import _get_alembic_config
    return ScriptDirectory.from_config(_get_alembic_config(""))


def known_revision(which: str, revision: str) -> bool:
    """Whether the installed MLflow's `which` ('tracking' or 'auth') migrations contain `revision`."""
    try:
        return _script(which).get_revision(revision) is not None
    except Exception:
        return False


def compute_schema_heads() -> dict[str, str]:
    """The head revisions of the installed MLflow's tracking and auth migrations (imports MLflow)."""
    return {"mlflow": installed_mlflow_version(), "tracking": _script("tracking").get_current_head(),
            "auth": _script("auth").get_current_head()}


def recorded_schema_heads(path: Path = HEADS_FILE) -> dict[str, str] | None:
    """The heads recorded for the installed MLflow version, or None (no file, other version, unreadable)."""
    import json

    try:
        heads = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(heads, dict) or heads.get("mlflow") != installed_mlflow_version():
        return None
    if not all(isinstance(heads.get(k), str) and heads[k] for k in ("tracking", "auth")):
        return None
    return heads


def record_schema_heads(heads: dict[str, str], path: Path = HEADS_FILE) -> bool:
    """Best effort: write the heads beside the entrypoint when that directory is writable (the image
    writes them at build time; its root filesystem may be read-only at run time)."""
    import json

    if recorded_schema_heads(path) == heads:
        return True
    if not os.access(path.parent, os.W_OK):
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(heads, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def image_heads(path: Path = HEADS_FILE) -> tuple[dict[str, str], str]:
    """(heads, where from): the recorded heads, or the installed MLflow's when none match."""
    heads = recorded_schema_heads(path)
    if heads is not None:
        return heads, f"the head revisions recorded for MLflow {heads['mlflow']}"
    heads = compute_schema_heads()
    return heads, f"the head revisions of the installed MLflow {heads['mlflow']}"


def lock_name(engine) -> str:
    """The schema lock's name on the database server: one per tracking database."""
    return f"mlflow-schema-{engine.url.database}"[:64]


def _advisory_key(name: str) -> int:
    """The PostgreSQL advisory lock key of `name`. Only its first 8 bytes count, so every database
    gets the same key; harmless, since advisory locks are per database (kept as it is, so that an
    admin step of this image and one of an earlier image still exclude each other)."""
    return int.from_bytes(name.encode()[:8].ljust(8, b"\0"), "big", signed=True)


@contextlib.contextmanager
def schema_lock_if_free(engine):
    """Take the schema lock without waiting (MySQL GET_LOCK(name, 0), PostgreSQL
    pg_try_advisory_lock): yields True while held, False when another process holds it (an admin
    step migrating). For writers that must never run during a migration but must not make one wait
    long (the gc task holds it for one run at a time)."""
    import sqlalchemy

    if engine.dialect.name == "sqlite":  # embedded mode: the server migrates its own file at start
        yield True
        return
    name = lock_name(engine)
    with engine.connect() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            got = conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
            release, params = sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name}
        else:
            key = _advisory_key(name)
            got = bool(conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
            release, params = sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key}
        conn.commit()  # no transaction left open around the caller's work
        try:
            yield got
        finally:
            if got:
                with contextlib.suppress(Exception):
                    conn.execute(release, params)
                    conn.commit()


# --------------------------------------------------------------------------------------------
# reading revisions (no MLflow import)
# --------------------------------------------------------------------------------------------
def revision(engine, table: str) -> str | None:
    """The revision in `table` (alembic's version table), None when there is no such table or row.
    Other errors (no privilege, several heads) propagate."""
    import sqlalchemy

    import auth_schema

    if table not in sqlalchemy.inspect(engine).get_table_names():
        return None
    return auth_schema.current_revision(engine, table)


def legacy_auth_revision(engine) -> str | None:
    """For an auth store written by MLflow < 3.6 (`users`, no alembic_version_auth): the revision in its
    old version table, or "unversioned"; None for any other database."""
    import sqlalchemy

    import auth_schema

    tables = set(sqlalchemy.inspect(engine).get_table_names())
    if "users" not in tables or auth_schema.VERSION_TABLE in tables:
        return None
    if LEGACY_AUTH_VERSION_TABLE in tables:
        return auth_schema.current_revision(engine, LEGACY_AUTH_VERSION_TABLE) or "unversioned"
    return "unversioned"


def schema_revisions(tracking_engine, auth_engine) -> tuple[str | None, str | None]:
    """The revision of each database (None: no database or table, no row, several heads, unreadable)."""
    import sqlalchemy
    from alembic.util import CommandError

    import auth_schema

    found = []
    for engine, table in ((tracking_engine, TRACKING_VERSION_TABLE), (auth_engine, auth_schema.VERSION_TABLE)):
        try:
            found.append(auth_schema.current_revision(engine, table))
        except (sqlalchemy.exc.SQLAlchemyError, CommandError):
            found.append(None)
        finally:
            engine.dispose()
    return found[0], found[1]


def require_heads(tracking_engine, auth_engine, log: Log, path: Path = HEADS_FILE) -> None:
    """The server's check on a database server: both schemas exactly at the image's heads, or
    SchemaError with one line saying what to run. Changes nothing."""
    import sqlalchemy
    from alembic.util import CommandError

    import auth_schema

    heads, source = image_heads(path)
    found = {}
    for which, engine, table in (("tracking", tracking_engine, TRACKING_VERSION_TABLE),
                                 ("auth", auth_engine, auth_schema.VERSION_TABLE)):
        database = engine.url.database
        try:
            found[which] = current = revision(engine, table)
        except (sqlalchemy.exc.SQLAlchemyError, CommandError) as e:
            orig = getattr(e, "orig", None) or e
            raise SchemaError(f"cannot read the {which} schema revision of database {database!r} as user "
                              f"{engine.url.username!r} ({type(orig).__name__}: {' '.join(str(orig).split())[:200]}): "
                              f"run the admin step ({ADMIN_COMMAND}) with the master credentials first") from None
        finally:
            engine.dispose()
        need = heads[which]
        if current == need:
            continue
        legacy = legacy_auth_revision(engine) if which == "auth" and current is None else None
        if legacy is not None:
            raise SchemaError(f"auth schema of database {database!r} is an MLflow < 3.6 store (revision {legacy} in "
                              f"table {LEGACY_AUTH_VERSION_TABLE}), this image needs {need}: run the admin step "
                              f"({ADMIN_COMMAND} --upgrade) with the master credentials first")
        if current is None:
            raise SchemaError(f"{which} schema of database {database!r} does not exist yet (empty database), this "
                              f"image needs {need}: run the admin step ({ADMIN_COMMAND}) with the master credentials first")
        if not known_revision(which, current):
            raise SchemaError(f"{which} schema of database {database!r} is at revision {current}, which MLflow "
                              f"{installed_mlflow_version()} of this image does not know (written by a newer MLflow?), "
                              f"this image needs {need}: run an image with that MLflow version or newer")
        raise SchemaError(f"{which} schema of database {database!r} is at revision {current}, this image needs {need}: "
                          f"run the admin step ({ADMIN_COMMAND}) with the master credentials first")
    log(f"tracking schema: up to date (revision {found['tracking']}); auth schema: up to date (revision "
        f"{found['auth']}); checked against {source}")
