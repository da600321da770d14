"""The entrypoint's database checks before the server starts: the databases exist and accept the
application user (waiting up to MLFLOW_DB_WAIT_SECONDS for a server that is not up yet, db_wait.py),
a database server's schemas are exactly at this image's heads (db_schema.py: the admin step changes
them, never the server), SQLite creates or upgrades its own schemas, and whether the admin user exists.
Every connection made here is bounded (db_wait.bounded_url), handshake included."""

from __future__ import annotations

from pathlib import Path

import db_wait  # image/db_wait.py: waiting for the database, bounded connections
from env_settings import Fatal, info

HEADS_FILE = Path(__file__).resolve().parent / "schema_heads.json"  # written at image build (Dockerfile)


def _engine(url, work: bool = False, **kw):
    """A pool-less engine whose connections are bounded (db_wait.bounded_url): `work` for the
    schema lock and migrations (long replies allowed), otherwise the short limits of the checks."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    return sqlalchemy.create_engine(db_wait.bounded_url(url, work), poolclass=NullPool, **kw)


def probe(kind: str, url, wait: int | None = None) -> str | None:
    """Connect and SELECT 1. None if fine, 'nodb'/'denied' if the database is missing or hidden;
    an unreachable server is retried for `wait` seconds (MLFLOW_DB_WAIT_SECONDS, db_wait.retry), or
    not at all (None: the server answered a moment ago); anything else is Fatal."""
    import sqlalchemy

    def attempt() -> str | None:
        try:
            with _engine(url).connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            return None
        except sqlalchemy.exc.SQLAlchemyError as e:
            category, line = db_wait.classify(kind, url, e)
            if category == "unreachable":
                raise db_wait.NotReady(line) from None
            if category == "nodb" or (category == "denied" and kind == "mysql"):
                return category  # MySQL says "access denied" for a database the user cannot see
            raise Fatal(line) from None

    try:
        if wait is None:
            return attempt()
        return db_wait.retry(attempt, wait, info)
    except (db_wait.GaveUp, db_wait.NotReady) as e:
        raise Fatal(str(e)) from None


def require_database(kind: str, url, wait: int | None = None) -> None:
    """The server never creates a database: a missing one (or one the user may not see) is one
    line naming the admin step, which creates both databases as the master (admin_step.py)."""
    problem = probe(kind, url, wait)
    if problem:
        raise Fatal(f"database {url.database!r} does not exist on {url.host}:{url.port} (or user {url.username!r} "
                    f"may not use it), and the server may not create it (it connects as the application user): "
                    f"run the admin step (python3 /app/entrypoint.py admin) with the master credentials first")


def require_schema_heads(db) -> None:
    """A database server: both schemas exactly at this image's heads, or one line naming the admin
    step. Nothing is changed, and MLflow is not imported when the heads were recorded at build."""
    import db_schema

    db_schema.require_heads(_engine(db["url"]), _engine(db["auth_url"]), info, HEADS_FILE)


def local_schemas(db) -> None:
    """SQLite (embedded mode, or a sqlite:// MLFLOW_BACKEND_STORE_URI): the one local process creates
    or upgrades its own schemas, under a file lock; a warm start at the recorded heads skips that."""
    import db_schema

    heads = db_schema.recorded_schema_heads(HEADS_FILE)
    found = db_schema.schema_revisions(_engine(db["url"]), _engine(db["auth_url"]))
    if heads is not None and found == (heads["tracking"], heads["auth"]):
        info(f"tracking schema: up to date (revision {found[0]}); auth schema: up to date (revision {found[1]}); "
             f"checked against the head revisions recorded for MLflow {heads['mlflow']}")
        return
    with db_schema.schema_lock(None, info, Path(db["url"].database).parent / ".schema.lock"):
        tracking = db_schema.ensure_tracking_schema(_engine(db["url"], work=True), info)
        auth = db_schema.ensure_auth_schema(_engine(db["auth_url"], work=True), info)
    db_schema.record_schema_heads({"mlflow": db_schema.installed_mlflow_version(), "tracking": tracking,
                                   "auth": auth}, HEADS_FILE)


def admin_exists(engine, username: str) -> bool:
    import sqlalchemy

    with engine.connect() as conn:
        return conn.execute(sqlalchemy.text("SELECT 1 FROM users WHERE username = :u"), {"u": username}).first() is not None
