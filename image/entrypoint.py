#!/usr/bin/env python3
"""Entrypoint of the MLflow server image: configured by environment only (the README's container contract).

    python3 entrypoint.py                # check the environment, prepare, exec `mlflow server`
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
    `mlflow server` with --app-name basic-auth-fastpath (MLflow's basic-auth app with cheaper
    permission lookups, plugins/mlflow_auth_fastpath; MLFLOW_AUTH_FASTPATH=false runs
    `basic-auth` itself), the artifact proxy, uvicorn with uvloop + httptools and a keep-alive
    longer than the load balancer's idle timeout.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

sys.dont_write_bytecode = True  # never write __pycache__ next to the entrypoint (read-only in the image)
if str(Path(__file__).resolve().parent) not in sys.path:  # loaded by path (tests), not run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import db_wait  # noqa: E402  (image/db_wait.py: waiting for the database, bounded connections)

PREFIX = "mlflow-entrypoint:"
ENGINES = {"mysql": ("mysql+pymysql", 3306), "postgresql": ("postgresql+psycopg2", 5432)}
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
CONNECT_TIMEOUT = 5  # seconds, for the S3 check before the server starts (database limits: db_wait.py)
GRACEFUL_SHUTDOWN_SECONDS = 110  # uvicorn, after SIGTERM; the task definition's stopTimeout is 120 s
ADMIN_PASSWORD_MIN = 12  # MLflow's password policy
PLUGINS = Path(__file__).resolve().parent / "plugins"  # mlflow_auth_fastpath + its dist-info (entry point)
FASTPATH_APP = "basic-auth-fastpath"
HEADS_FILE = Path(__file__).resolve().parent / "schema_heads.json"  # written at image build (Dockerfile)
# MLflow 3.x sends usage telemetry unless MLFLOW_DISABLE_TELEMETRY (mlflow/environment_variables.py, a
# _BooleanEnvironmentVariable: these values only) or DO_NOT_TRACK=true (mlflow/telemetry/utils.py)
TELEMETRY_VALUES = ("true", "false", "1", "0")

_SECRETS: set[str] = set()  # every value that must never be printed


class Fatal(Exception):
    """A problem with the environment: printed as one line, exit code 2."""


def redact(text: str) -> str:
    for s in sorted(_SECRETS, key=len, reverse=True):
        if s:
            text = text.replace(s, "***")
    return text


def info(msg: str) -> None:
    print(f"{PREFIX} {redact(msg)}", flush=True)


def secret(value: str | None) -> str | None:
    if value:
        _SECRETS.update({value, quote(value, safe=""), quote(value, safe="").replace("%", "%%")})
    return value


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------
def env_int(env, name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Fatal(f"{name}={raw!r} is not an integer (expected {lo}..{hi})") from None
    if not lo <= value <= hi:
        raise Fatal(f"{name}={value} is out of range (expected {lo}..{hi})")
    return value


def env_bool(env, name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise Fatal(f"{name}={raw!r} is not a boolean (true/false)")


class Settings:
    def __init__(self, env) -> None:
        self.env = env
        self.host = env.get("MLFLOW_HOST", "").strip() or "127.0.0.1"
        self.port = env_int(env, "MLFLOW_PORT", 5000, 1, 65535)
        self.workers = env_int(env, "MLFLOW_WORKERS", 2, 1, 64)
        self.lb_idle = env_int(env, "MLFLOW_LB_IDLE_TIMEOUT_SECONDS", 60, 1, 4000)
        self.cache_ttl = env_int(env, "MLFLOW_AUTH_CACHE_TTL_SECONDS", 60, 0, 86400)
        self.default_permission = env.get("MLFLOW_AUTH_DEFAULT_PERMISSION", "").strip().upper() or "READ"
        if self.default_permission not in PERMISSIONS:
            raise Fatal(f"MLFLOW_AUTH_DEFAULT_PERMISSION={self.default_permission!r} is not one of "
                        f"{', '.join(PERMISSIONS)}")
        self.serve_artifacts = env_bool(env, "MLFLOW_SERVE_ARTIFACTS", True)
        self.job_execution = env_bool(env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", False)
        self.fastpath = env_bool(env, "MLFLOW_AUTH_FASTPATH", True)
        self.db_wait = env_int(env, "MLFLOW_DB_WAIT_SECONDS", db_wait.WAIT_DEFAULT, 0, db_wait.WAIT_MAX)
        self.disable_telemetry = env.get("MLFLOW_DISABLE_TELEMETRY", "").strip()
        if self.disable_telemetry.lower() not in ("", *TELEMETRY_VALUES):
            raise Fatal(f"MLFLOW_DISABLE_TELEMETRY={self.disable_telemetry!r} is not one of {', '.join(TELEMETRY_VALUES)} "
                        f"(MLflow accepts no other value)")
        self.admin_user = env.get("MLFLOW_AUTH_ADMIN_USERNAME", "").strip() or "admin"
        self.admin_password = secret(env.get("MLFLOW_AUTH_ADMIN_PASSWORD") or None)
        self.secret_key = secret(env.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or None)
        self.auth_db_name = env.get("MLFLOW_AUTH_DB_NAME", "").strip() or "mlflow_auth"
        self.destination = env.get("MLFLOW_ARTIFACTS_DESTINATION", "").strip()
        self.s3_endpoint = env.get("MLFLOW_S3_ENDPOINT_URL", "").strip() or None
        self.region = env.get("AWS_REGION", "").strip() or None
        spool = env.get("MLFLOW_SPOOL_DIR", "").strip()
        self.spool = Path(spool or tempfile.gettempdir()).absolute()
        self.state = Path(env.get("MLFLOW_STATE_DIR", "").strip() or ".local-mlflow").absolute()
        self.db = self._database()
        self.embedded = self.db is None

    def _database(self):
        """None (embedded) or a dict: kind, url (sqlalchemy URL object), auth_url. A database
        server's URLs carry the TLS settings of MLFLOW_DB_TLS_CA (db_tls.py) in their query string,
        so the entrypoint's engines, MLflow's stores and the auth ini all connect the same way."""
        from sqlalchemy.engine import make_url

        import db_tls

        def tls(kind: str, url, from_uri: bool = False):
            try:
                return db_tls.secure_url(self.env, kind, url, from_uri)
            except db_tls.TLSSettingError as e:
                raise Fatal(str(e)) from None

        uri = self.env.get("MLFLOW_BACKEND_STORE_URI", "").strip()
        if uri:
            try:
                url = make_url(uri)
            except Exception:
                raise Fatal("MLFLOW_BACKEND_STORE_URI is not a valid SQLAlchemy URL") from None
            secret(url.password)
            kind = url.get_backend_name()
            if kind == "mariadb":
                kind = "mysql"
            if kind == "postgres":
                kind = "postgresql"
            if kind == "sqlite":
                path = Path(url.database or "mlflow.db").absolute()
                return {"kind": "sqlite", "url": url,
                        "auth_url": make_url(f"sqlite:///{path.parent / 'basic_auth.db'}")}
            if kind not in ENGINES:
                raise Fatal(f"MLFLOW_BACKEND_STORE_URI uses database engine {kind!r}, which is not supported "
                            f"(supported: {', '.join(ENGINES)})")
            if not url.database:
                raise Fatal("MLFLOW_BACKEND_STORE_URI names no database")
            url = tls(kind, url, from_uri=True)
            return {"kind": kind, "url": url, "auth_url": url.set(database=self.auth_db_name)}

        engine = self.env.get("MLFLOW_DB_ENGINE", "").strip().lower()
        if not engine:
            return None
        if engine in ("mariadb", "aurora-mysql"):
            engine = "mysql"
        if engine in ("postgres", "aurora-postgresql"):
            engine = "postgresql"
        if engine not in ENGINES:
            raise Fatal(f"MLFLOW_DB_ENGINE={engine!r} is not supported (supported: {', '.join(ENGINES)})")
        driver, default_port = ENGINES[engine]
        host = self.env.get("MLFLOW_DB_HOST", "").strip()
        user = self.env.get("MLFLOW_DB_USER", "").strip()
        password = secret(self.env.get("MLFLOW_DB_PASSWORD", ""))
        name = self.env.get("MLFLOW_DB_NAME", "").strip() or "mlflow"
        port = env_int(self.env, "MLFLOW_DB_PORT", default_port, 1, 65535)
        missing = [n for n, v in (("MLFLOW_DB_HOST", host), ("MLFLOW_DB_USER", user),
                                  ("MLFLOW_DB_PASSWORD", password)) if not v]
        if missing:
            raise Fatal(f"MLFLOW_DB_ENGINE={engine} needs {', '.join(missing)}")
        for n, v in (("MLFLOW_DB_NAME", name), ("MLFLOW_AUTH_DB_NAME", self.auth_db_name)):
            if not re.fullmatch(r"[A-Za-z0-9_$-]{1,63}", v):
                raise Fatal(f"{n}={v!r} is not a plain database name (letters, digits, _ $ -)")
        # build the URI as text with every part URL-encoded (passwords with @:/?#%&+ stay intact)
        hostpart = f"[{host}]" if ":" in host else host
        text = f"{driver}://{quote(user, safe='')}:{quote(password, safe='')}@{hostpart}:{port}/{name}"
        url = make_url(text)
        if url.password != password or url.username != user:
            raise Fatal("could not build a database URL from MLFLOW_DB_USER and MLFLOW_DB_PASSWORD")
        url = tls(engine, url)
        return {"kind": engine, "url": url, "auth_url": url.set(database=self.auth_db_name)}


# --------------------------------------------------------------------------------------------
# spool, state, files
# --------------------------------------------------------------------------------------------
def writable_dir(path: Path, what: str, mode: int = 0o700) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise Fatal(f"{what} {path} is not a writable directory ({e.strerror or e})") from None
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file readable by this user only (0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def read_or_create(path: Path, make) -> tuple[str, bool]:
    if path.exists():
        return path.read_text().strip(), False
    value = make()
    write_private(path, value + "\n")
    return value, True


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# --------------------------------------------------------------------------------------------
# database checks
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------
def check_bucket(destination: str, endpoint: str | None, region: str | None) -> None:
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    bucket = destination[len("s3://"):].split("/", 1)[0]
    if not bucket:
        raise Fatal(f"MLFLOW_ARTIFACTS_DESTINATION={destination!r} names no bucket")
    client = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                          config=Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=10,
                                        retries={"max_attempts": 2, "mode": "standard"}))
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise Fatal(f"the artifact bucket {bucket!r} (MLFLOW_ARTIFACTS_DESTINATION) does not exist") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise Fatal(f"access to the artifact bucket {bucket!r} is denied (check the task role's S3 "
                        f"permissions)") from None
        raise Fatal(f"the artifact bucket {bucket!r} cannot be checked: {code} {e}") from None
    except botocore.exceptions.NoCredentialsError:
        raise Fatal(f"no AWS credentials found to access the artifact bucket {bucket!r}") from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError) as e:
        raise Fatal(f"cannot reach S3 to check the artifact bucket {bucket!r}: {e}") from None
    except botocore.exceptions.BotoCoreError as e:
        raise Fatal(f"the artifact bucket {bucket!r} cannot be checked: {e}") from None
    info(f"artifact bucket {bucket!r} is reachable")


# --------------------------------------------------------------------------------------------
# schemas (db_schema.py): the server checks them, SQLite creates its own
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def healthcheck() -> int:
    try:
        port = int(os.environ.get("MLFLOW_PORT", "").strip() or 5000)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return 0 if r.status == 200 else 1
    except (OSError, ValueError, urllib.error.URLError):
        return 1


def check_port(host: str, port: int) -> None:
    """Bind to host:port the way uvicorn will (SO_REUSEADDR, so a port in TIME_WAIT counts as free)
    and let go: a taken port is one line and exit 2 here, where MLflow would print uvicorn's
    "Address already in use" and exit 0."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except socket.gaierror:
            raise Fatal(f"MLFLOW_HOST={host!r} is not an address or a host name this machine resolves") from None
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise Fatal(f"port {port} on {host} is in use (another server running? stop it, or set "
                            f"MLFLOW_PORT to a free port)") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise Fatal(f"MLFLOW_HOST={host!r} is not an address of this machine") from None
            if e.errno == errno.EACCES:
                raise Fatal(f"port {port} on {host} needs privileges this user lacks (MLFLOW_PORT: use 1024 or above)") from None
            raise Fatal(f"cannot listen on {host}:{port} ({e.strerror or e})") from None


def uvicorn_opts(s: Settings, extra: str) -> str:
    import importlib.util

    opts = []
    if importlib.util.find_spec("uvloop"):
        opts += ["--loop", "uvloop"]
    if importlib.util.find_spec("httptools"):
        opts += ["--http", "httptools"]
    # in-flight requests (a proxied multi-GB transfer) may finish for 110 s after SIGTERM: ECS kills
    # the container 120 s after it (the task definition's stopTimeout, Fargate's maximum)
    opts += ["--timeout-keep-alive", str(s.lb_idle + 5), "--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_SECONDS)]
    return shlex.join(opts) + (f" {extra}" if extra.strip() else "")


def cors_origins(env) -> str | None:
    """MLFLOW_SERVER_CORS_ALLOWED_ORIGINS as given, or derived from MLFLOW_SERVER_ALLOWED_HOSTS.

    The web UI's own API calls are POSTs carrying an Origin header, and MLflow 3.17 refuses
    state-changing requests from an origin that is not localhost unless it is listed (mlflow PR
    20832). A name a browser may reach the server by (the load balancer's, a custom domain) is an
    allowed host, so the UI served under it is an allowed origin: https and http, same port.
    Wildcard entries are not turned into origins.
    """
    given = env.get("MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "").strip()
    if given:
        return given
    hosts = [h.strip() for h in env.get("MLFLOW_SERVER_ALLOWED_HOSTS", "").split(",") if h.strip()]
    origins = [f"{scheme}://{h}" for h in hosts if "*" not in h for scheme in ("https", "http")]
    return ",".join(origins) or None


# Database pools of the server processes (name, default, lowest, highest), applied by
# plugins/mlflow_db_pool in every MLflow process: the size and overflow exactly as set (MLflow alone
# turns an overflow of 0 into SQLAlchemy's 10), idle connections closed so that a 0-ACU Aurora can
# pause, and a connect to a database that is not there (resuming: ~15 s) retried instead of a 503.
# 10 kept + 0 overflow: the same ceiling as 5 + 5 without overflow churn (README "Performance").
POOL_SETTINGS = (
    ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", 10, 1, 1000),
    ("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", 0, 0, 1000),
    ("MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE", 280, 0, 86400),
    ("MLFLOW_DB_IDLE_RELEASE_SECONDS", 300, 0, 86400),  # 0: never release
    ("MLFLOW_DB_RECONNECT_SECONDS", 60, 0, 600),  # 0: fail at once
)


def pool_settings(env) -> dict[str, str]:
    """The POOL_SETTINGS for the server's environment: validated (Fatal naming the variable), defaults filled in."""
    return {name: str(env_int(env, name, default, lo, hi)) for name, default, lo, hi in POOL_SETTINGS}


def prepare(env: dict) -> tuple[list[str], dict]:
    """Everything up to the exec: returns (argv, environment) of `mlflow server`."""
    import warnings

    warnings.simplefilter("ignore")  # keep library warnings out of the one-line error contract
    s = Settings(env)
    pools = pool_settings(env)  # before any wait: a bad pool setting is one line at once
    check_port(s.host, s.port)  # before any wait: a second server on a taken port says so at once
    child = dict(env)
    if not s.disable_telemetry:  # off unless the user says otherwise; here too, before anything imports MLflow
        child["MLFLOW_DISABLE_TELEMETRY"] = os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

    # spool: TMPDIR of the server (proxied uploads and downloads are staged here)
    spool = writable_dir(s.spool, "MLFLOW_SPOOL_DIR")
    child["TMPDIR"] = str(spool)
    usage = shutil.disk_usage(spool)
    info(f"artifact spool (TMPDIR) {spool}: {human(usage.free)} free of {human(usage.total)}; every proxied "
         f"artifact transfer in flight is staged here whole")

    if s.embedded:
        state = writable_dir(s.state, "MLFLOW_STATE_DIR")
        from sqlalchemy.engine import make_url

        db = {"kind": "sqlite", "url": make_url(f"sqlite:///{state / 'mlflow.db'}"),
              "auth_url": make_url(f"sqlite:///{state / 'basic_auth.db'}")}
        destination = s.destination or str(state / "artifacts")
        if not s.secret_key:
            s.secret_key, _ = read_or_create(state / "flask_secret_key", lambda: secrets.token_urlsafe(32))
            secret(s.secret_key)
        info(f"embedded mode: SQLite and artifacts under {state} (set MLFLOW_DB_ENGINE for a database server)")
    else:
        db = s.db
        destination = s.destination
        if not destination:
            raise Fatal("MLFLOW_ARTIFACTS_DESTINATION is not set (s3://bucket/prefix or a local path)")
        if not s.secret_key:
            raise Fatal("MLFLOW_FLASK_SERVER_SECRET_KEY is not set (it must be the same on every server task)")
        state = None
    # the auth ini (it holds the auth store's URI) and a HOME of last resort: embedded mode keeps them
    # in its state dir, never in a directory that every checkout and user of the machine shares
    run_dir = writable_dir((state if s.embedded else spool) / ".entrypoint", "the entrypoint's config dir")
    home = Path(child.get("HOME") or "/nonexistent")
    if not (home.is_dir() and os.access(home, os.W_OK)):
        child["HOME"] = str(writable_dir(run_dir / "home", "HOME"))

    if destination.startswith("s3://"):
        check_bucket(destination, s.s3_endpoint, s.region)
    elif "://" not in destination:
        destination = str(writable_dir(Path(destination).absolute(), "MLFLOW_ARTIFACTS_DESTINATION"))

    kind = db["kind"]
    if kind == "sqlite":
        for u in (db["url"], db["auth_url"]):
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        local_schemas(db)
    else:  # a database server: prepared by the admin step; the server changes no database and no schema
        require_database(kind, db["url"], s.db_wait)  # the one wait for a server that is not up yet
        info(f"{kind} database {db['url'].database!r} at {db['url'].host}:{db['url'].port} accepts user "
             f"{db['url'].username!r}")
        require_database(kind, db["auth_url"])
        require_schema_heads(db)
    has_admin = admin_exists(_engine(db["auth_url"]), s.admin_user)

    if not has_admin:
        if not s.admin_password and s.embedded:
            path = state / "admin_password"
            s.admin_password, created = read_or_create(path, lambda: secrets.token_urlsafe(18))
            if created:
                # deliberately shown once, on the terminal of the person who started it
                print(f"{PREFIX} generated the password of admin user {s.admin_user!r}: {s.admin_password} "
                      f"(kept in {path}; shown only this once)", flush=True)
            secret(s.admin_password)
        if not s.admin_password:
            raise Fatal(f"admin user {s.admin_user!r} does not exist yet and MLFLOW_AUTH_ADMIN_PASSWORD is not set")
        if len(s.admin_password) < ADMIN_PASSWORD_MIN:
            raise Fatal(f"MLFLOW_AUTH_ADMIN_PASSWORD is too short for MLflow (at least {ADMIN_PASSWORD_MIN} characters)")
        info(f"admin user {s.admin_user!r} does not exist yet: the server creates it at start")
    elif s.embedded and (state / "admin_password").exists() and not s.admin_password:
        info(f"admin user {s.admin_user!r}: password in {state / 'admin_password'}")

    # basic-auth configuration: database_uri has no env override, so render the file.
    # auth_cache_ttl_seconds: the fast path keeps a verified password only bound to the stored hash it
    # matched (a change applies at the next request everywhere). MLflow's own cache (its basic-auth
    # app) keeps the user record and may accept a changed password on other workers and tasks until
    # its TTL ends, as its basic_auth.ini documents; off (0), MLflow hashes the password inside a
    # database session on every request, and 64 clients exhaust a pool of 10 for 30 s
    # (tests/server/test_db_pools.py): the configured TTL is kept, and the log says what it means.
    app = auth_app(s)
    cache_ttl = s.cache_ttl
    auth_uri = db["auth_url"].render_as_string(hide_password=False)
    ini = run_dir / "basic_auth.ini"
    write_private(ini, "\n".join([
        "[mlflow]",
        f"default_permission = {s.default_permission}",
        f"database_uri = {auth_uri.replace('%', '%%')}",
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access = false",
        f"auth_cache_ttl_seconds = {cache_ttl}",
        "",
    ]))

    backend_uri = db["url"].render_as_string(hide_password=False)
    child.update({
        "MLFLOW_BACKEND_STORE_URI": backend_uri,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": s.secret_key,
        "MLFLOW_AUTH_ADMIN_USERNAME": s.admin_user,
        "MLFLOW_SERVE_ARTIFACTS": "true" if s.serve_artifacts else "false",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if s.job_execution else "false",
        "MLFLOW_UVICORN_OPTS": uvicorn_opts(s, env.get("MLFLOW_UVICORN_OPTS", "")),
    })
    if s.admin_password:
        child["MLFLOW_AUTH_ADMIN_PASSWORD"] = s.admin_password
    child.pop("MLFLOW_DB_PASSWORD", None)  # it lives on in the URI only
    child.pop("MLFLOW_REGISTRY_STORE_URI", None)
    if kind != "sqlite":
        child.update(pools)  # applied in every server process by plugins/mlflow_db_pool
    origins = cors_origins(env)
    if origins:
        child["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"] = origins
    if s.region:
        child.setdefault("AWS_DEFAULT_REGION", s.region)
    # MLflow's own server reads these names too; keep them consistent with the argv below
    for name in ("MLFLOW_HOST", "MLFLOW_PORT", "MLFLOW_WORKERS"):
        child.pop(name, None)

    # both apps: plugins/ holds the fast path's app and the pool hook that every MLflow process loads
    child["PYTHONPATH"] = os.pathsep.join(p for p in (str(PLUGINS), child.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "mlflow", "server", "--app-name", app,
            "--host", s.host, "--port", str(s.port), "--workers", str(s.workers)]
    if s.serve_artifacts:
        argv += ["--serve-artifacts", "--artifacts-destination", destination]
    else:
        argv += ["--no-serve-artifacts", "--default-artifact-root", destination]
    info(f"starting mlflow server on {s.host}:{s.port}: {s.workers} workers, keep-alive {s.lb_idle + 5} s "
         f"(load balancer idle timeout {s.lb_idle} s), artifacts {'proxied to' if s.serve_artifacts else 'at'} "
         f"{destination}, auth on ({app}; default permission {s.default_permission}, credential cache "
         f"{cache_note(app, cache_ttl)}), "
         f"job execution {'on' if s.job_execution else 'off'}, MLflow telemetry "
         f"{'off' if child['MLFLOW_DISABLE_TELEMETRY'].lower() in ('true', '1') else 'as MLflow decides'}")
    check_port(s.host, s.port)  # again: the database wait may have taken minutes
    return argv, child


def cache_note(app: str, ttl: int) -> str:
    """What the credential cache means for the running app, for the start-up line."""
    if not ttl:
        return "off"
    if app == FASTPATH_APP:
        return f"{ttl} s, bound to the stored password hash"
    return (f"{ttl} s, MLflow's own: other workers and tasks may accept a changed password for up to {ttl} s; "
            "MLFLOW_AUTH_CACHE_TTL_SECONDS=0 turns it off")


def auth_app(s: Settings) -> str:
    """MLflow's app name: `basic-auth-fastpath` (image/plugins: MLflow's basic-auth app with cheaper
    permission lookups) unless MLFLOW_AUTH_FASTPATH=false or the job runner is on (MLflow shares
    its internal gateway token with job subprocesses only for the app named `basic-auth`)."""
    if not s.fastpath:
        return "basic-auth"
    if s.job_execution:
        info("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true: using MLflow's `basic-auth` app (the job runner's "
             "internal token is only set up for that app name), not the auth fast path")
        return "basic-auth"
    return FASTPATH_APP


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
