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
dump is streamed (GBs: never read whole): line by line from S3 through gzip when compressed.
 - MySQL: mysqldump writes every statement as lines ending in `;` and escapes newlines inside
   strings (`\\n`), so a line ending in the delimiter ends a statement; `DELIMITER` (triggers,
   routines) is followed; comment lines and MariaDB's sandbox line are skipped; `USE` / `CREATE
   DATABASE` (a dump made with --databases) are refused: the dump could write elsewhere.
   DDL commits by itself in MySQL, so a failed import drops every table it made (the database was
   empty) instead of a rollback.
 - PostgreSQL: statements are split by a small scanner (quotes, "identifiers", $tag$ bodies,
   comments); `COPY ... FROM stdin;` blocks go to copy_expert up to their `\\.` line; psql's
   `\\restrict`/`\\unrestrict` lines (pg_dump since 17.6/16.10/15.14) are skipped, any other
   backslash command is refused. The whole import is ONE transaction: a failure rolls it back.
   The dump's `set_config('search_path', '', false)` empties the search path of the import's own
   connection only, which is closed afterwards; this module's own statements are qualified.
   `OWNER TO`, GRANT and REVOKE statements (a dump made without --no-owner/--no-privileges) are
   skipped and counted: the admin step grants the application user itself.
Failures are ImportError_ (one line: which dump, statement number, dump line, the driver's
message without the statement's text, so no row value is printed).
"""

from __future__ import annotations

import gzip
import io
import re
import time

import db_schema

PROGRESS_BYTES = 64 * 1024 * 1024  # a progress line every 64 MiB of SQL read
VARIABLES = ("MLFLOW_IMPORT_TRACKING_DUMP", "MLFLOW_IMPORT_AUTH_DUMP", "MLFLOW_IMPORT_ARTIFACT_ROOT")
# (table, column, extra condition) holding artifact URIs in MLflow 3.17's schemas
# (mlflow/store/tracking/dbmodels/models.py, mlflow/store/model_registry/dbmodels/models.py)
URI_COLUMNS = (("experiments", "artifact_location", ""), ("runs", "artifact_uri", ""),
               ("logged_models", "artifact_location", ""), ("model_versions", "source", ""),
               ("model_versions", "storage_location", ""),
               ("trace_tags", "value", " AND \"key\" = 'mlflow.artifactLocation'"))
S3_ROOT = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[^\s]*)?")


class ImportError_(db_schema.SchemaError):
    """The import cannot be done or failed: one line, no secret, no row value (the admin step prints
    a SchemaError as its one line and exits 2)."""


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
        tables = existing_tables(ep, kind, url)
        if tables:
            raise ImportError_(
                f"refusing to import into {what} database {url.database!r}: it already has {len(tables)} tables "
                f"({', '.join(tables[:3])}...); an import needs the empty databases of a new stack (unset "
                f"MLFLOW_IMPORT_TRACKING_DUMP after a takeover)")
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


class _Lines:
    """Numbered lines of the dump, with the bytes read (for progress lines)."""

    def __init__(self, stream) -> None:
        self.stream, self.number, self.bytes = stream, 0, 0

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.stream.readline()
        if not line:
            raise StopIteration
        self.number += 1
        self.bytes += len(line)
        return line


def _text(line: bytes, where: str) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportError_(f"{where}: not UTF-8 (dump with --default-character-set=utf8mb4 / pg_dump -E UTF8)") from None


def _driver_text(e: Exception) -> str:
    """The driver's message without the statement's text (no row value in the log)."""
    args = getattr(e, "args", ())
    text = str(args[1]) if len(args) > 1 and isinstance(args[0], int) else str(getattr(e, "pgerror", None) or e)
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    first = re.sub(r"near '.*", "near <statement text omitted>", first)
    first = re.sub(r'(: )".*"$', r"\1<value omitted>", first)
    context = re.search(r"COPY \S+, line \d+", text)
    return " ".join(f"{first}{f' ({context.group(0)})' if context else ''}".split())[:300]


# --------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------
class _Loader:
    def __init__(self, ep, url, what: str, location: str) -> None:
        self.ep, self.url, self.what, self.location = ep, url, what, location
        self.statements = self.rows = self.skipped = 0
        self.next_progress = PROGRESS_BYTES

    def where(self, lines: _Lines) -> str:
        return f"{self.what} dump {self.location}, line {lines.number}"

    def progress(self, lines: _Lines) -> None:
        if lines.bytes >= self.next_progress:
            self.next_progress = lines.bytes + PROGRESS_BYTES
            self.ep.info(f"import: {self.what}: {lines.bytes / 2**20:.0f} MiB read, {self.statements} statements, "
                         f"{self.rows} rows copied")

    def stats(self, lines: _Lines) -> str:
        skipped = f", {self.skipped} ownership/privilege/replication/unknown-setting statements skipped" if self.skipped else ""
        return (f"{lines.bytes / 2**20:.1f} MiB, {lines.number} lines, {self.statements} statements, "
                f"{self.rows} rows copied{skipped}")

    def failed(self, lines: _Lines, e: Exception) -> ImportError_:
        if isinstance(e, ImportError_):
            return e
        return ImportError_(f"{self.where(lines)} (statement {self.statements + 1}) failed: {_driver_text(e)}; "
                            f"nothing of this dump was kept: fix the dump and run the admin step again")

    def rewrite(self, cur, root: str, quote: str) -> int:
        """URIs under the old root -> mlflow-artifacts:/<rest>; returns rows changed."""
        changed = 0
        for table, column, extra in URI_COLUMNS:
            if not self.has_column(cur, table, column):
                continue
            c = f"{quote}{column}{quote}"
            extra = extra.replace('"', quote)
            cur.execute(f"UPDATE {self.table(table)} SET {c} = CONCAT('mlflow-artifacts:', "
                        f"CASE WHEN {c} = %s THEN '/' ELSE SUBSTR({c}, %s) END) "
                        f"WHERE ({c} = %s OR LEFT({c}, %s) = %s){extra}",
                        (root, len(root) + 1, root, len(root) + 1, root + "/"))
            changed += cur.rowcount
        return changed


class MysqlLoader(_Loader):
    REFUSED = re.compile(r"(?is)^\s*(USE\s|CREATE\s+(DATABASE|SCHEMA)\s)")
    SKIPPED = re.compile(r"(?is)^\s*(/\*!\d+\s*)?SET\s+@@(SESSION\.SQL_LOG_BIN|GLOBAL\.GTID_PURGED)")
    SANDBOX = re.compile(rb"^/\*M!999999\\- enable the sandbox mode \*/\s*$")

    def load(self, stream, root: str | None) -> str:
        lines = _Lines(stream)
        conn = self.ep._engine(self.url, work=True).raw_connection()
        try:
            conn.driver_connection.autocommit(True)  # as the mysql client: each statement commits
            cur = conn.driver_connection.cursor()
            try:
                for statement in self.split(lines):
                    if self.REFUSED.match(statement):
                        raise ImportError_(f"{self.where(lines)}: USE / CREATE DATABASE: dump one database, without "
                                           f"--databases / --all-databases (the admin step chooses the database)")
                    if self.SKIPPED.match(statement):
                        self.skipped += 1
                        continue
                    cur.execute(statement)
                    self.statements += 1
                    self.progress(lines)
                if self.statements == 0:
                    raise ImportError_(f"{self.where(lines)}: no SQL statement in it (empty or not a mysqldump)")
                if root:
                    changed = self.rewrite(cur, root, "`")
                    self.ep.info(f"import: {changed} artifact URIs under {root} now mlflow-artifacts:/...")
            except Exception as e:
                error = self.failed(lines, e)
                self.drop_all()
                raise error from None
        finally:
            conn.close()
        return self.stats(lines)

    def split(self, lines: _Lines):
        delimiter, parts = ";", []
        for raw in lines:
            if not parts:
                if self.SANDBOX.match(raw) or raw.startswith(b"--") or not raw.strip():
                    continue
                text = _text(raw, self.where(lines)).strip()
                m = re.fullmatch(r"(?i)DELIMITER\s+(\S+)", text)
                if m:
                    delimiter = m.group(1)
                    continue
            else:
                text = _text(raw, self.where(lines)).rstrip()
            if text.endswith(delimiter):
                parts.append(text[:-len(delimiter)])
                yield "\n".join(parts)
                parts = []
            else:
                parts.append(text)
        if any(p.strip() for p in parts):
            raise ImportError_(f"{self.where(lines)}: the dump ends inside a statement (truncated?)")

    def table(self, name: str) -> str:
        return f"`{name}`"

    def has_column(self, cur, table: str, column: str) -> bool:
        cur.execute("SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s "
                    "AND COLUMN_NAME = %s", (table, column))
        return cur.fetchone() is not None

    def drop_all(self) -> None:
        """Drop what the failed import made (the database was empty before it)."""
        import sqlalchemy

        try:
            with self.ep._engine(self.url, work=True).connect() as conn:
                conn.execute(sqlalchemy.text("SET SESSION FOREIGN_KEY_CHECKS = 0"))
                for name, kind in conn.execute(sqlalchemy.text(
                        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")):
                    what = "VIEW" if kind == "VIEW" else "TABLE"
                    conn.execute(sqlalchemy.text(f"DROP {what} IF EXISTS `{name.replace('`', '``')}`"))
        except Exception as e:  # the import's error is the one to report
            self.ep.info(f"import: could not drop the tables of the failed import ({_driver_text(e)}): drop and "
                         f"recreate database {self.url.database!r} before the next try")


class PostgresLoader(_Loader):
    COPY = re.compile(r"(?is)^\s*COPY\s.+\sFROM\s+stdin\s*$")
    SKIPPED = re.compile(r"(?is)^\s*(ALTER\s.+\sOWNER\s+TO\s|GRANT\s|REVOKE\s)")
    REFUSED = re.compile(r"(?is)^\s*(CREATE\s+DATABASE\s|SET\s+client_encoding\s*=\s*'(?!UTF8')[^']*')")
    SETTING = re.compile(r"(?is)^\s*SET\s+[a-z_.]+\s*(=|TO\s)")
    TOKEN = re.compile(r"""['";]|\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$|--|/\*""")

    def load(self, stream, root: str | None) -> str:
        lines = _Lines(stream)
        conn = self.ep._engine(self.url, work=True).raw_connection()
        try:
            raw = conn.driver_connection
            raw.autocommit = False  # the whole dump is one transaction
            cur = raw.cursor()
            try:
                for statement in self.split(lines):
                    if self.REFUSED.match(statement):
                        raise ImportError_(f"{self.where(lines)}: CREATE DATABASE or a client encoding other than "
                                           f"UTF8: dump one database with pg_dump -E UTF8, without -C")
                    if self.SKIPPED.match(statement):
                        self.skipped += 1
                        continue
                    if self.COPY.match(statement):
                        cur.copy_expert(statement, _CopyData(lines, self))
                        self.rows += cur.rowcount if cur.rowcount > 0 else 0
                    elif self.SETTING.match(statement):
                        self.set(cur, statement)
                    else:
                        cur.execute(statement)
                    self.statements += 1
                    self.progress(lines)
                if self.statements == 0:
                    raise ImportError_(f"{self.where(lines)}: no SQL statement in it (empty or not a pg_dump)")
                if root:
                    changed = self.rewrite(cur, root, '"')
                    self.ep.info(f"import: {changed} artifact URIs under {root} now mlflow-artifacts:/...")
                raw.commit()
            except Exception as e:
                error = self.failed(lines, e)
                raw.rollback()
                raise error from None
        finally:
            conn.close()  # also ends the dump's empty search_path
        return self.stats(lines)

    def split(self, lines: _Lines):
        """Statements without their `;`, outside strings, identifiers, $tag$ bodies and comments."""
        parts: list[str] = []
        state: str | None = None  # None, "'", '"', "/*" or a "$tag$"
        for raw in lines:
            text = _text(raw, self.where(lines))
            if state is None and not "".join(parts).strip():
                parts = []
                stripped = text.strip()
                if not stripped or stripped.startswith("--"):
                    continue
                if stripped.startswith("\\"):
                    if re.match(r"\\(un)?restrict\s", stripped + " "):
                        continue  # psql's guard lines of newer pg_dump
                    raise ImportError_(f"{self.where(lines)}: psql command {stripped.split()[0][:40]}: dump one "
                                       f"database with pg_dump (plain format), not pg_dumpall")
            i, start = 0, 0
            while True:
                if state is None:
                    m = self.TOKEN.search(text, i)
                    if not m:
                        break
                    token, i = m.group(0), m.end()
                    if token == ";":
                        parts.append(text[start:m.start()])
                        statement = "".join(parts).strip()
                        parts, start = [], i
                        if statement:
                            yield statement
                        if not text[i:].strip() or text[i:].strip().startswith("--"):
                            start = len(text)  # the rest of the line: nothing, or a comment
                            break
                    elif token == "--":
                        break
                    else:
                        state = token
                else:
                    end = {"'": "'", '"': '"', "/*": "*/"}.get(state, state)
                    j = text.find(end, i)
                    if j < 0:
                        break
                    i = j + len(end)
                    state = None
            parts.append(text[start:])
        if state is not None or "".join(parts).strip().strip("\n"):
            leftover = "".join(parts).strip()
            if state is not None or not all(ln.strip().startswith("--") for ln in leftover.splitlines()):
                raise ImportError_(f"{self.where(lines)}: the dump ends inside a statement (truncated?)")

    def set(self, cur, statement: str) -> None:
        """A session setting; one this server does not know (a newer pg_dump's, e.g. PostgreSQL 17's
        transaction_timeout) is skipped, as psql would go on past it."""
        import psycopg2

        cur.execute("SAVEPOINT takeover_setting")
        try:
            cur.execute(statement)
        except psycopg2.Error as e:
            if e.pgcode != "42704":  # undefined_object: unrecognized configuration parameter
                raise
            cur.execute("ROLLBACK TO SAVEPOINT takeover_setting")
            self.skipped += 1
            self.ep.info(f"import: {self.what}: skipped a setting this server does not know ({_driver_text(e)})")
        cur.execute("RELEASE SAVEPOINT takeover_setting")

    def table(self, name: str) -> str:
        return f'public."{name}"'

    def has_column(self, cur, table: str, column: str) -> bool:
        cur.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s "
                    "AND column_name = %s", (table, column))
        return cur.fetchone() is not None


class _CopyData(io.RawIOBase):
    """The data lines of one COPY block (up to its `\\.` line), for copy_expert's read()."""

    def __init__(self, lines: _Lines, loader: _Loader) -> None:
        self.lines, self.loader, self.buffer, self.done = lines, loader, b"", False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self.done and (size < 0 or len(self.buffer) < size):
            line = next(self.lines, None)
            if line is None:
                raise ImportError_(f"{self.loader.where(self.lines)}: the dump ends inside a COPY block (truncated?)")
            if line.rstrip(b"\r\n") == b"\\.":
                self.done = True
                break
            self.buffer += line
            self.loader.progress(self.lines)
        if size < 0:
            size = len(self.buffer)
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out
