"""The database admin step: `python3 /app/entrypoint.py admin [--upgrade]` (the ECS admin task's command).

Run with the database master credentials (MLFLOW_DB_ADMIN_USER / MLFLOW_DB_ADMIN_PASSWORD, which
ECS injects from RDS's master secret into the admin container only), before any server of a new
image starts. In order, each step logged on stdout:
 1. wait for the database server (MLFLOW_DB_WAIT_SECONDS, the server's bounded wait, db_wait.py), then
    the upgrade gate, read-only (`gate`): when the tracking or auth schema exists below this image's
    heads and --upgrade was not given, stop with exit 3 and one line naming both revisions, having
    changed nothing (an upgrade needs the writers stopped and a snapshot first: `pulumi up` does
    both, then runs `admin --upgrade`); a revision this image's MLflow does not know (a newer MLflow
    wrote it) is exit 2, untouched, with or without --upgrade. Empty or missing databases pass: no
    server can write to them (it refuses a schema that is not at its heads);
 2. as the master, create the tracking and auth databases (MLFLOW_DB_NAME, MLFLOW_AUTH_DB_NAME)
    when missing;
 3. under the schema lock (db_schema.schema_lock: concurrent admin steps run one after the other):
    create the application user (MLFLOW_DB_USER, default mlflow_app) when missing and leave it
    exactly read/write on rows of those two databases:
      MySQL/MariaDB: SELECT, INSERT, UPDATE, DELETE on `<db>`.* and `<auth db>`.* ('user'@'%';
        `_` in a database name escaped, since GRANT reads it as a wildcard); any other privilege
        (global, other schemas, tables) is removed: REVOKE ALL PRIVILEGES, GRANT OPTION, then the
        grants again;
      PostgreSQL: CONNECT on both databases; in each, USAGE on schema public, SELECT/INSERT/UPDATE/
        DELETE on all tables, USAGE/SELECT/UPDATE on all sequences, and the same as default
        privileges for what the master creates later (ALTER DEFAULT PRIVILEGES FOR ROLE <master>);
        CREATEDB/CREATEROLE, CREATE on a database or on schema public (PUBLIC's, before
        PostgreSQL 15) and any other table or sequence privilege are revoked;
    set its password: from the application user's secret (MLFLOW_DB_APP_SECRET_ARN: JSON
    {"username", "password"}; when the secret has no value yet, a generated password is stored
    in it first) or, for local use, MLFLOW_DB_PASSWORD as given; it is set only when a login with
    it fails, so a second run changes nothing;
    the gate again (under the lock), then create, or with --upgrade upgrade, the tracking and auth
    schemas to this image's heads (db_schema.py), refusing a schema written by a newer MLflow, untouched.
Exit 0 when done; 3 and ONE line on stderr when an upgrade is needed and not asked for; otherwise
exit 2 and ONE line on stderr, no secret (passwords travel as bound
parameters and are redacted from every line).

`ep` is the running entrypoint module: its settings parsing and URL building (TLS, db_tls.py), its
bounded engines and the database wait, and its one-line error contract are used as they are.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass

import admin_import
import db_schema
from admin_users import app_password, driver_text, ensure_password, mysql_user, postgresql_user, quote

DEFAULT_APP_USER = "mlflow_app"
USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")  # portable: MySQL 8 allows 32 characters


UPGRADE_FLAG = "--upgrade"
UPGRADE_NEEDED_EXIT = 3


class UpgradeNeeded(Exception):
    """A schema is below the image's heads and --upgrade was not given: one line, exit 3, nothing changed."""


@dataclass
class Target:
    kind: str            # mysql | postgresql
    tracking: object     # SQLAlchemy URLs as the master, TLS and limits included
    auth: object
    master: str
    user: str            # the application user
    wait: int            # MLFLOW_DB_WAIT_SECONDS


def main(ep, env: dict, args: list[str] | tuple[str, ...] = ()) -> int:
    """The `admin [--upgrade]` command: 0 when done, 3 and one line on stderr when a schema needs an
    upgrade that was not asked for (nothing changed), else 2 and one line on stderr."""
    if list(args) not in ([], [UPGRADE_FLAG]):
        print(f"{ep.PREFIX} error: unexpected arguments {list(args)!r} after admin: it takes {UPGRADE_FLAG} only "
              f"(upgrade schemas below this image's heads)", file=sys.stderr, flush=True)
        return 2
    try:
        run(ep, env, upgrade=bool(args))
    except UpgradeNeeded as e:  # nothing changed: the caller stops the writers, snapshots, reruns with --upgrade
        print(f"{ep.PREFIX} upgrade needed: {ep.redact(' '.join(str(e).split()))}", file=sys.stderr, flush=True)
        return UPGRADE_NEEDED_EXIT
    except Exception as e:  # every failure is one line, never a secret
        known = isinstance(e, (ep.Fatal, db_schema.SchemaError))
        text = str(e) if known else f"unexpected {type(e).__name__}: {str(e)[:500]}"
        print(f"{ep.PREFIX} error: {ep.redact(' '.join(text.split()))}", file=sys.stderr, flush=True)
        return 2
    return 0


def run(ep, env: dict, upgrade: bool = False) -> None:
    warnings.simplefilter("ignore")  # keep library warnings out of the one-line error contract
    if not env.get("MLFLOW_DISABLE_TELEMETRY", "").strip():
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # the migrations import MLflow here
    t = target(ep, env)
    info = ep.info
    where = f"{t.tracking.host}:{t.tracking.port}"
    info(f"admin step: {t.kind} server {where}, databases {t.tracking.database!r} and {t.auth.database!r}, "
         f"application user {t.user!r}, as master user {t.master!r}"
         f"{', schema upgrades allowed (--upgrade)' if upgrade else ''}")
    # first, read-only: a schema below the image's heads stops a plain run before it changes anything
    # (a newer one too, with exit 2); the one wait for a server that is not up yet is here
    if admin_import.requested(env):  # a leftover takeover setting: one line, before the gate (see there)
        admin_import.settings(env)
        if not ep.probe(t.kind, t.tracking, t.wait):  # the tracking database exists
            admin_import.refuse_if_not_empty(ep, t.kind, "tracking", t.tracking)
    try:
        gate(ep, t, upgrade, wait=t.wait)
    except UpgradeNeeded:
        # Another admin step creating a fresh database passes through older revisions under the
        # schema lock: when the lock is held, wait for it (bounded) and read again; a schema that
        # is really behind is still refused (exit 3).
        engine = ep._engine(t.tracking, isolation_level="AUTOCOMMIT")
        try:
            with db_schema.schema_lock_if_free(engine) as free:
                pass
            if free:
                raise
            with db_schema.schema_lock(engine, info):
                pass
        finally:
            engine.dispose()
        gate(ep, t, upgrade)
    ensure_database(ep, t.kind, t.tracking)
    ensure_database(ep, t.kind, t.auth)
    password, source = app_password(ep, env, t.user)
    lock = ep._engine(t.tracking, work=True, isolation_level="AUTOCOMMIT")
    with db_schema.schema_lock(lock, info):
        if admin_import.requested(env):  # a takeover (docs/takeover.md): dumps into the EMPTY databases first
            admin_import.run(ep, t.kind, t.tracking, t.auth, env)
            upgrade = True  # a dump of an older MLflow is upgraded: the new stack has no writers yet
        if t.kind == "mysql":
            mysql_user(ep, t, password)
        else:
            postgresql_user(ep, t, password)
        ensure_password(ep, t, password, source)
        gate(ep, t, upgrade, quiet=True)  # again under the lock: another process may have changed a schema meanwhile
        tracking = db_schema.ensure_tracking_schema(ep._engine(t.tracking, work=True), info)
        auth = db_schema.ensure_auth_schema(ep._engine(t.auth, work=True), info)
    db_schema.record_schema_heads({"mlflow": db_schema.installed_mlflow_version(), "tracking": tracking,
                                   "auth": auth})
    info(f"admin step: done; servers of this image may start as user {t.user!r}")


# --------------------------------------------------------------------------------------------
# the upgrade gate
# --------------------------------------------------------------------------------------------
def gate(ep, t: Target, upgrade: bool, wait: int | None = None, quiet: bool = False) -> None:
    """Read both schema revisions as the master (a missing database or schema counts as none) and
    raise UpgradeNeeded when one is below the image's heads and `upgrade` is False; SchemaError
    (exit 2) for a revision this image's MLflow does not know, with or without --upgrade. Changes
    nothing: no database, user or schema is created before this has passed."""
    import sqlalchemy
    from alembic.util import CommandError

    import auth_schema

    heads = db_schema.compute_schema_heads()
    behind = []
    for which, url, table in (("tracking", t.tracking, db_schema.TRACKING_VERSION_TABLE),
                              ("auth", t.auth, auth_schema.VERSION_TABLE)):
        if ep.probe(t.kind, url, wait if which == "tracking" else None):
            continue  # no such database (or the master may not see it): created below, or one line there
        engine = ep._engine(url)
        try:
            current = db_schema.revision(engine, table)
            legacy = db_schema.legacy_auth_revision(engine) if which == "auth" and current is None else None
        except (sqlalchemy.exc.SQLAlchemyError, CommandError) as e:
            raise ep.Fatal(f"cannot read the {which} schema revision of database {url.database!r}: "
                           f"{driver_text(e)}") from None
        finally:
            engine.dispose()
        if legacy is not None:  # MLflow < 3.6: the upgrade stamps its first revision, then migrates
            behind.append(f"auth schema of database {url.database!r} is an MLflow < 3.6 store (revision {legacy} "
                          f"in table {db_schema.LEGACY_AUTH_VERSION_TABLE}), this image (MLflow {heads['mlflow']}) "
                          f"needs {heads['auth']}")
            continue
        if current is None or current == heads[which]:
            continue
        if not db_schema.known_revision(which, current):
            raise db_schema.SchemaError(
                f"{which} schema revision {current} of database {url.database!r} is unknown to MLflow "
                f"{heads['mlflow']} (written by a newer MLflow?); refusing to touch it: run an image with that "
                f"MLflow version or newer")
        behind.append(f"{which} schema of database {url.database!r} is at revision {current}, this image "
                      f"(MLflow {heads['mlflow']}) needs {heads[which]}")
    if behind and not upgrade:
        raise UpgradeNeeded(f"{'; '.join(behind)}; nothing was changed. An upgrade needs the writers stopped "
                            f"(the service scaled to 0) and a snapshot of the database first, which `pulumi up` "
                            f"does; by hand: stop the writers, take a snapshot, then run `{db_schema.ADMIN_COMMAND} "
                            f"{UPGRADE_FLAG}`")
    if behind and not quiet:
        ep.info(f"admin step: will upgrade: {'; '.join(behind)}")


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------
def target(ep, env: dict) -> Target:
    """The master's URLs (built by the entrypoint's Settings, as the server's are) and the names."""
    if env.get("MLFLOW_BACKEND_STORE_URI", "").strip():
        raise ep.Fatal("the admin step is configured by MLFLOW_DB_ENGINE, MLFLOW_DB_HOST, MLFLOW_DB_PORT, "
                       "MLFLOW_DB_NAME and MLFLOW_AUTH_DB_NAME, not MLFLOW_BACKEND_STORE_URI: unset it")
    if not env.get("MLFLOW_DB_ENGINE", "").strip():
        raise ep.Fatal("the admin step needs MLFLOW_DB_ENGINE (mysql or postgresql): it prepares a database "
                       "server (embedded mode creates its own schema)")
    master = env.get("MLFLOW_DB_ADMIN_USER", "").strip()
    master_password = ep.secret(env.get("MLFLOW_DB_ADMIN_PASSWORD", ""))
    missing = [n for n, v in (("MLFLOW_DB_ADMIN_USER", master), ("MLFLOW_DB_ADMIN_PASSWORD", master_password))
               if not v]
    if missing:
        raise ep.Fatal(f"the admin step needs the database master credentials: {', '.join(missing)} not set")
    user = env.get("MLFLOW_DB_USER", "").strip() or DEFAULT_APP_USER
    if not USER_NAME.fullmatch(user):
        raise ep.Fatal(f"MLFLOW_DB_USER={user!r} is not a plain user name (a letter or _, then letters, digits, _; "
                       f"at most 32 characters)")
    if user == master:
        raise ep.Fatal(f"MLFLOW_DB_USER={user!r} is the master user: the application user must be another one")
    s = ep.Settings({**env, "MLFLOW_DB_USER": master, "MLFLOW_DB_PASSWORD": master_password})
    return Target(s.db["kind"], s.db["url"], s.db["auth_url"], master, user, s.db_wait)


# --------------------------------------------------------------------------------------------
# databases
# --------------------------------------------------------------------------------------------
def ensure_database(ep, kind: str, url, wait: int | None = None) -> None:
    """Create url.database as the master when it is missing."""
    problem = ep.probe(kind, url, wait)
    where = f"{url.host}:{url.port}"
    if problem is None:
        ep.info(f"database {url.database!r} exists on {where}")
        return
    created = create_database(ep, kind, url)
    ep.info(f"{'created database' if created else 'database'} {url.database!r} {'on' if created else 'exists on'} "
            f"{where}{'' if created else ' (created by another admin step a moment ago)'}")
    if ep.probe(kind, url):
        raise ep.Fatal(f"database {url.database!r} on {where} exists but master user {url.username!r} may not use it")


def create_database(ep, kind: str, url) -> bool:
    """CREATE DATABASE; False when another process created it first."""
    import sqlalchemy

    name = url.database
    try:
        if kind == "mysql":
            engine = ep._engine(url._replace(database=None))
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text(f"CREATE DATABASE {quote(engine, name)}"))
            return True
        try:
            conn = ep._engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT").connect()
        except sqlalchemy.exc.SQLAlchemyError:
            conn = ep._engine(url.set(database="template1"), isolation_level="AUTOCOMMIT").connect()
        with conn:
            if conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
                return False
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {quote(conn, name)}"))
        return True
    except sqlalchemy.exc.SQLAlchemyError as e:
        text = driver_text(e)
        if "exists" in text.lower():
            return False
        raise ep.Fatal(f"database {name!r} does not exist on {url.host}:{url.port} and master user "
                       f"{url.username!r} may not create it ({text})") from None
