"""Taking over an existing MLflow: load its database dump(s) into the new stack's EMPTY databases.

Part of the admin step (admin_step.py), run as the master under the schema lock, before the
application user's grants and the schema upgrade (the dump may come from an older MLflow: the
admin step then upgrades it, as `admin --upgrade` would; the new stack has no writers yet).

Settings (all unset: no import; docs/takeover.md):
  MLFLOW_IMPORT_TRACKING_DUMP  s3://<bucket>/<key> or an absolute local path: the old tracking
                               database, `mysqldump --single-transaction --no-tablespaces <db>`
                               (or mariadb-dump) or `pg_dump --no-owner --no-privileges <db>`,
                               plain SQL, gzip or not (told by its first bytes);
  MLFLOW_IMPORT_AUTH_DUMP      the same for the basic-auth database (users, permissions); optional;
  MLFLOW_IMPORT_ARTIFACT_ROOT  s3://<old bucket>/<old prefix>, when the old server let clients
                               write to S3 directly: every stored URI under it becomes
                               `mlflow-artifacts:/<rest>` so it resolves through the new proxy
                               (the objects are copied by the operator, see the docs).
Same engine only (a MySQL dump into PostgreSQL, or back, is refused by the statements themselves).

Why a loader of our own: the image has no mysql/psql client and must not grow for this. The
dump is streamed (GBs: never read whole) from S3 through gzip when compressed, and executed by
dump_loaders.py (how each engine's dump is split, what is skipped or refused, how a failed load
is undone).
"""

from __future__ import annotations

import gzip
import io
import re
import time

from dump_loaders import (  # noqa: F401 (ImportError_, the loaders and _Lines are this module's API too)
    ImportError_, MysqlLoader, PostgresLoader, _Lines)

VARIABLES = ("MLFLOW_IMPORT_TRACKING_DUMP", "MLFLOW_IMPORT_AUTH_DUMP", "MLFLOW_IMPORT_ARTIFACT_ROOT")
S3_ROOT = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?")


def requested(env: dict) -> bool:
    return any(env.get(v, "").strip() for v in VARIABLES)


def settings(env: dict) -> tuple[str, str | None, str | None]:
    """(tracking dump, auth dump or None, old artifact root or None), checked."""
    tracking, auth, root = (env.get(v, "").strip() or None for v in VARIABLES)
    if not tracking:
        raise ImportError_("MLFLOW_IMPORT_AUTH_DUMP / MLFLOW_IMPORT_ARTIFACT_ROOT need MLFLOW_IMPORT_TRACKING_DUMP "
                           "(s3://bucket/key of the old tracking database's dump)")
    for name, value in (("MLFLOW_IMPORT_TRACKING_DUMP", tracking), ("MLFLOW_IMPORT_AUTH_DUMP", auth)):
        if value and not (value.startswith("/") or re.fullmatch(r"s3://[^/\s]+/\S+", value)):
            raise ImportError_(f"{name}={value!r}: s3://<bucket>/<key> or an absolute path")
    if root:
        root = root.rstrip("/")
        if not S3_ROOT.fullmatch(root) or "*" in root:
            raise ImportError_(f"MLFLOW_IMPORT_ARTIFACT_ROOT={root!r}: s3://<old bucket>/<old prefix> (the old "
                               f"server's artifact root, as its runs' artifact_uri begin)")
    return tracking, auth, root


def run(ep, kind: str, tracking_url, auth_url, env: dict) -> None:
    """Import the dump(s) into the two databases, both of which must be empty."""
    tracking, auth, root = settings(env)
    jobs = [("tracking", tracking_url, tracking)] + ([("auth", auth_url, auth)] if auth else [])
    for what, url, _ in jobs:  # refuse before reading anything
        refuse_if_not_empty(ep, kind, what, url)
    for what, url, location in jobs:
        t0 = time.monotonic()
        ep.info(f"import: loading the {what} dump {location} into database {url.database!r}")
        with open_dump(location, env, what) as stream:
            loader = MysqlLoader if kind == "mysql" else PostgresLoader
            stats = loader(ep, url, what, location).load(stream, root if what == "tracking" else None)
        ep.info(f"import: {what} dump loaded in {time.monotonic() - t0:.1f} s: {stats}")


# --------------------------------------------------------------------------------------------
# the target must be empty
# --------------------------------------------------------------------------------------------
def refuse_if_not_empty(ep, kind: str, what: str, url) -> None:
    """ImportError_ (one line, exit 2) when the database has tables. The admin step also calls it
    before its upgrade gate: a takeover setting left on after the takeover must stop the step with
    this line, not look like an upgrade (exit 3 would stop the service and take a snapshot first)."""
    tables = existing_tables(ep, kind, url)
    if tables:
        raise ImportError_(
            f"refusing to import into {what} database {url.database!r}: it already has {len(tables)} tables "
            f"({', '.join(tables[:3])}...); an import needs the empty databases of a new stack (unset "
            f"MLFLOW_IMPORT_TRACKING_DUMP after a takeover)")


def existing_tables(ep, kind: str, url) -> list[str]:
    import sqlalchemy

    if kind == "mysql":
        query = ("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = :d ORDER BY TABLE_NAME",
                 {"d": url.database})
    else:
        query = ("SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' "
                 "AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') ORDER BY c.relname", {})
    with ep._engine(url).connect() as conn:
        return [r[0] for r in conn.execute(sqlalchemy.text(query[0]), query[1])]


# --------------------------------------------------------------------------------------------
# reading the dump
# --------------------------------------------------------------------------------------------
class _Raw(io.RawIOBase):
    """A read(n) stream (botocore's StreamingBody) as a raw stream, for BufferedReader."""

    def __init__(self, body) -> None:
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.body.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self.body.close()
        finally:
            super().close()


def open_dump(location: str, env: dict, what: str) -> io.BufferedReader:
    """The dump as a buffered binary stream, gunzipped when it starts with gzip's magic bytes."""
    name = "MLFLOW_IMPORT_TRACKING_DUMP" if what == "tracking" else "MLFLOW_IMPORT_AUTH_DUMP"
    if location.startswith("/"):
        try:
            raw = open(location, "rb", buffering=0)
        except OSError as e:
            raise ImportError_(f"{name}={location}: cannot open it ({e.strerror})") from None
    else:
        raw = _Raw(s3_body(location, env, name))
    stream = io.BufferedReader(raw, 1024 * 1024)
    if stream.peek(2)[:2] == b"\x1f\x8b":
        stream = io.BufferedReader(gzip.GzipFile(fileobj=stream, mode="rb"), 1024 * 1024)
    return stream


def s3_body(location: str, env: dict, name: str):
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    bucket, key = location[len("s3://"):].split("/", 1)
    # endpoint: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL when set (botocore reads them)
    client = boto3.client("s3", region_name=env.get("AWS_REGION", "").strip() or None,
                          config=Config(connect_timeout=10, read_timeout=120,
                                        retries={"max_attempts": 5, "mode": "standard"}))
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"]
    except botocore.exceptions.ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NoSuchBucket"):
            raise ImportError_(f"{name}={location}: no such object") from None
        if code in ("AccessDenied", "403", "KMS.AccessDeniedException"):
            # S3 also answers 403 for a missing key when the caller may not list the bucket
            raise ImportError_(f"{name}={location}: access denied: no such object, or the admin task may not read "
                               f"it (its task role needs s3:GetObject on that key, and kms:Decrypt on the bucket's "
                               f"key with SSE-KMS)") from None
        raise ImportError_(f"{name}={location}: GetObject failed: {code}") from None
    except botocore.exceptions.NoCredentialsError:
        raise ImportError_(f"{name}={location}: no AWS credentials to read it") from None
    except botocore.exceptions.BotoCoreError as e:
        raise ImportError_(f"{name}={location}: cannot reach S3 ({type(e).__name__})") from None


