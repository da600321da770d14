"""What the entrypoint hands to the server: `prepare()` runs every step up to the exec (the
entrypoint's docstring lists them) and returns the argv and the environment of the server process:
uvicorn on the fast path's app, started as `mlflow server` would start it (direct_launch.py), or
`mlflow server` itself for what direct_launch.py does not mirror.

Here: the listen-port check (a taken port is one line, not uvicorn's "Address already in use" and
exit 0), the uvicorn options (uvloop + httptools, a keep-alive longer than the load balancer's idle
timeout, the graceful-shutdown time), the CORS origins derived from the allowed hosts, the database
pool settings that plugins/mlflow_db_pool applies in every server process, the auth app's name and
the basic-auth ini (0600). The settings are env_settings.py's, the files state_files.py's, the
database checks db_checks.py's, the bucket check bucket_check.py's.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
from pathlib import Path

import direct_launch
from bucket_check import check_bucket
from db_checks import _engine, admin_exists, local_schemas, require_database, require_schema_heads
from env_settings import PREFIX, Fatal, Settings, env_int, info, secret
from state_files import human, read_or_create, writable_dir, write_private

GRACEFUL_SHUTDOWN_SECONDS = 110  # uvicorn, after SIGTERM; the task definition's stopTimeout is 120 s
ADMIN_PASSWORD_MIN = 12  # MLflow's password policy
PLUGINS = Path(__file__).resolve().parent / "plugins"  # mlflow_auth_fastpath + its dist-info (entry point)
FASTPATH_APP = "basic-auth-fastpath"


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


SSO_FUNCTION = "mlflow_auth_fastpath.sso:authenticate_request"  # plugins/mlflow_auth_fastpath/sso.py


def sso_settings_of(env):
    """Single sign-on's settings (image/sso_settings.py; docs/sso.md), None when off; a bad value is Fatal (one line)."""
    import sso_settings

    try:
        return sso_settings.from_env(env)
    except ValueError as e:
        raise Fatal(str(e)) from None


def prepare(env: dict) -> tuple[list[str], dict]:
    """Everything up to the exec: returns (argv, environment) of the server: uvicorn on the fast path's
    app as `mlflow server` would start it (direct_launch.py), or `mlflow server` itself."""
    import warnings

    warnings.simplefilter("ignore")  # keep library warnings out of the one-line error contract
    s = Settings(env)
    pools = pool_settings(env)  # before any wait: a bad pool setting is one line at once
    direct_launch.switch(env)  # the same for MLFLOW_DIRECT_LAUNCH
    sso = sso_settings_of(env)  # single sign-on (docs/sso.md): a bad MLFLOW_SSO_* value is one line at once
    if sso and (not s.fastpath or s.job_execution):  # auth_app() would pick MLflow's `basic-auth`
        raise Fatal("single sign-on (MLFLOW_SSO_SIGNER_ARN) needs the auth fast path, which "
                    f"{'MLFLOW_AUTH_FASTPATH=false' if not s.fastpath else 'MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true'} "
                    "turns off (MLflow's own `basic-auth` app would run): unset MLFLOW_AUTH_FASTPATH and "
                    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION, or single sign-on")
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
        # single sign-on: the image's function (x-amzn-oidc-data signed by this stack's load balancer,
        # else the same basic auth); MLflow's own basic auth otherwise
        f"authorization_function = {SSO_FUNCTION if sso else 'mlflow.server.auth:authenticate_request_basic_auth'}",
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
    info(f"starting the MLflow server on {s.host}:{s.port}: {s.workers} workers, keep-alive {s.lb_idle + 5} s "
         f"(load balancer idle timeout {s.lb_idle} s), artifacts {'proxied to' if s.serve_artifacts else 'at'} "
         f"{destination}, auth on ({app}; default permission {s.default_permission}, credential cache "
         f"{cache_note(app, cache_ttl)}), "
         f"job execution {'on' if s.job_execution else 'off'}, MLflow telemetry "
         f"{'off' if child['MLFLOW_DISABLE_TELEMETRY'].lower() in ('true', '1') else 'as MLflow decides'}")
    if sso:
        info(sso.describe())
    check_port(s.host, s.port)  # again: the database wait may have taken minutes
    reason = direct_launch.cli_reason(argv, child)
    if reason:  # what direct_launch does not mirror: MLflow's own command starts it
        info(f"started through `mlflow server` ({reason})")
        return argv, child
    direct_launch.check_store(_engine(db["url"]))  # what `mlflow server` checks before it starts uvicorn
    return direct_launch.command(argv, child)


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
