"""The entrypoint's settings, read from the environment only (the README's container contract), and
the one-line error contract every step of the entrypoint shares.

`Settings` validates the server's variables (engine, port, workers, permissions, timeouts, wait) and
builds the database URLs with the password URL-encoded and MLFLOW_DB_TLS_CA's settings (db_tls.py).
`Fatal` is a problem with the environment: printed as one line, exit code 2. Every secret value
(`secret()`) is replaced by *** in whatever `info()` prints and `redact()` returns.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from urllib.parse import quote

import db_wait  # image/db_wait.py: waiting for the database, bounded connections

PREFIX = "mlflow-entrypoint:"
ENGINES = {"mysql": ("mysql+pymysql", 3306), "postgresql": ("postgresql+psycopg2", 5432)}
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
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
