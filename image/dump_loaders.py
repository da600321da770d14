"""The dump loaders of the takeover import (admin_import.py): a dump's statements executed on the
target database as mysqldump / pg_dump wrote them, streamed line by line, never read whole.

 - MySQL: mysqldump writes every statement as lines ending in `;` and escapes newlines inside
   strings (`\\n`; MariaDB's writes an INSERT's rows one per line, each ending in `,` or the last in `;`),
   so a line ending in the delimiter ends a statement; `DELIMITER` (triggers,
   routines) is followed; comment lines and MariaDB's sandbox line are skipped; `USE` / `CREATE
   DATABASE` (a dump made with --databases) are refused: the dump could write elsewhere; GTID /
   SQL_LOG_BIN statements (SUPER on RDS) are skipped. DDL commits by itself in MySQL, so a failed
   import drops every table it made (the database was empty) instead of a rollback.
 - PostgreSQL: statements are split by a small scanner (quotes, "identifiers", $tag$ bodies,
   comments); `COPY ... FROM stdin;` blocks go to copy_expert up to their `\\.` line; psql's
   `\\restrict`/`\\unrestrict` lines (pg_dump since 17.6/16.10/15.14) are skipped, any other
   backslash command is refused; a setting the server does not know (a newer pg_dump's) is
   skipped. The whole import is ONE transaction: a failure rolls it back. The dump's
   `set_config('search_path', '', false)` empties the search path of the import's own connection
   only, which is closed afterwards; this module's own statements are qualified. `OWNER TO`, GRANT
   and REVOKE statements are skipped and counted: the admin step grants the application user.
Failures are ImportError_: one line (which dump, dump line, statement number, the driver's message
without the statement's text, so no row value is printed).
"""

from __future__ import annotations

import contextlib

import io
import re

import db_schema

PROGRESS_BYTES = 64 * 1024 * 1024  # a progress line every 64 MiB of SQL read
# (table, column, extra condition) holding artifact URIs in MLflow 3.17's schemas
# (mlflow/store/tracking/dbmodels/models.py, mlflow/store/model_registry/dbmodels/models.py)
URI_COLUMNS = (("experiments", "artifact_location", ""), ("runs", "artifact_uri", ""),
               ("logged_models", "artifact_location", ""), ("model_versions", "source", ""),
               ("model_versions", "storage_location", ""),
               ("trace_tags", "value", " AND \"key\" = 'mlflow.artifactLocation'"))


class ImportError_(db_schema.SchemaError):
    """The import cannot be done or failed: one line, no secret, no row value (the admin step prints
    a SchemaError as its one line and exits 2)."""


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
                # mysqldump writes LOCK TABLES ... WRITE around each table's rows: this session's locks
                # would make drop_all's DROP (another connection) wait until a read timeout
                with contextlib.suppress(Exception):
                    cur.execute("UNLOCK TABLES")
                conn.close()
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
