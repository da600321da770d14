"""Start uvicorn on the auth fast path's app directly, with exactly the command and environment that
`mlflow server` would give it, without `mlflow server`'s own process (issue 14: start-up).

`mlflow server` (MLflow 3.17.2, mlflow/cli/__init__.py `server` and mlflow/server/__init__.py
`_run_server`) imports the whole CLI, opens the backend store once to check it (which every worker
does again), checks for SQL trace rollup rows, then starts `python -m uvicorn ... --factory
<app>` with a handful of private variables (`_MLFLOW_SERVER_*`, `_MLFLOW_SGI_NAME`, ...) and
stays alive only to forward SIGTERM. About a third of the start-up went there (docs/performance.md,
"Start-up"). `command()` computes the same uvicorn command and environment from the `mlflow server`
argv and environment that server_launch.prepare() built, and the entrypoint execs uvicorn, which
is then PID 1 and handles SIGTERM itself (graceful shutdown, MLFLOW_UVICORN_OPTS).

It does so only for what it mirrors: the fast path's app (`basic-auth` bootstraps its admin in
the `mlflow server` process, and the job runner is started by it) and the options the entrypoint
passes. When any variable that `mlflow server` would turn into something else is set
(`CLI_ONLY`: a static prefix, Prometheus, workspaces, telemetry on, ...), or
MLFLOW_DIRECT_LAUNCH=false, the start goes through `mlflow server` as before, and the log says why.
tests/server/test_direct_launch.py runs MLflow's own `server` command with its `_exec_cmd` captured
and fails on any difference in the argv or the environment, and on any option of `mlflow server`
that this module does not classify (so an MLflow upgrade that adds one is seen).
"""

from __future__ import annotations

import importlib.util
import shlex
import uuid
from pathlib import Path

from env_settings import Fatal, env_bool

SWITCH = "MLFLOW_DIRECT_LAUNCH"  # true by default; false: always through `mlflow server`

# Variables (the CLI's option envvars and what it reads itself) that make `mlflow server` do more than
# this module mirrors. A value option (a path, a prefix, options) counts when it is non-empty: MLflow
# takes "false" literally there (MLFLOW_EXPOSE_PROMETHEUS=false is Prometheus in a directory named
# "false"). A switch (click flag or MLflow boolean) counts unless empty, "false" or "0", which click
# and MLflow both read as off; anything else is left for `mlflow server` to accept or refuse.
CLI_ONLY_VALUES = (
    "MLFLOW_READ_REPLICA_BACKEND_STORE_URI", "MLFLOW_DEFAULT_ARTIFACT_ROOT", "MLFLOW_STATIC_PREFIX",
    "MLFLOW_GUNICORN_OPTS", "MLFLOW_EXPOSE_PROMETHEUS", "MLFLOW_TRACE_ARCHIVAL_CONFIG", "MLFLOW_WORKSPACE_STORE_URI",
    "MLFLOW_WORKSPACE",
)
CLI_ONLY_SWITCHES = (
    "MLFLOW_ARTIFACTS_ONLY", "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE", "MLFLOW_ENABLE_WORKSPACES",
    "MLFLOW_SQL_TRACE_ROLLUPS_ENABLED", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
)
CLI_ONLY = CLI_ONLY_VALUES + CLI_ONLY_SWITCHES
# The option envvars the entrypoint sets or passes through, mirrored below.
MIRRORED = (
    "MLFLOW_BACKEND_STORE_URI", "MLFLOW_REGISTRY_STORE_URI", "MLFLOW_SERVE_ARTIFACTS", "MLFLOW_ARTIFACTS_DESTINATION",
    "MLFLOW_HOST", "MLFLOW_PORT", "MLFLOW_WORKERS", "MLFLOW_SERVER_ALLOWED_HOSTS",
    "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS", "MLFLOW_SERVER_X_FRAME_OPTIONS", "MLFLOW_UVICORN_OPTS",
)
# `mlflow server`'s defaults for options the entrypoint does not pass (mlflow/cli/__init__.py)
X_FRAME_OPTIONS_DEFAULT = "SAMEORIGIN"
SECRETS_CACHE = {"MLFLOW_SERVER_SECRETS_CACHE_TTL": "60", "MLFLOW_SERVER_SECRETS_CACHE_MAX_SIZE": "1000"}
ARTIFACTS_DESTINATION_DEFAULT = "./mlartifacts"
DEFAULT_ARTIFACTS_URI = "mlflow-artifacts:/"  # mlflow/store/tracking/__init__.py, for --serve-artifacts
# mlflow/store/db/trace_rollups.py FAMILY_MODEL[...].__tablename__ for _BUILT_FAMILIES
ROLLUP_TABLES = ("sql_trace_metric_daily_rollups", "sql_span_cost_daily_rollups", "sql_assessment_daily_rollups")
# the tables the stores' _initialize_store_state checks with workspaces off (table, what, key column)
WORKSPACE_SCOPED = (("experiments", "experiments", "experiment_id"), ("registered_models", "registered models", "name"),
                    ("webhooks", "webhooks", "webhook_id"))
DEFAULT_WORKSPACE = "default"  # mlflow/utils/workspace_utils.py DEFAULT_WORKSPACE_NAME
OFF = ("", "0", "false")  # what both click (flags) and MLflow (_BooleanEnvironmentVariable) read as off


# the `mlflow server` argv server_launch.prepare() builds: these options, each with a value
VALUE_OPTIONS = ("--app-name", "--host", "--port", "--workers", "--artifacts-destination", "--default-artifact-root")


def _options(argv: list[str]) -> dict[str, str | bool] | None:
    """The `mlflow server` argv as {option: value, "serve": bool}; None for anything else."""
    if argv[1:4] != ["-m", "mlflow", "server"]:
        return None
    opts: dict[str, str | bool] = {}
    rest = argv[4:]
    while rest:
        name = rest.pop(0)
        if name in ("--serve-artifacts", "--no-serve-artifacts"):
            opts["serve"] = name == "--serve-artifacts"
        elif name in VALUE_OPTIONS and rest:
            opts[name] = rest.pop(0)
        else:
            return None
    return opts


def switch(env: dict) -> bool:
    """MLFLOW_DIRECT_LAUNCH (a bad value is Fatal, one line): read before any wait."""
    return env_bool(env, SWITCH, True)


def cli_reason(argv: list[str], env: dict) -> str | None:
    """Why this start must go through `mlflow server` (None: it need not)."""
    if not switch(env):
        return f"{SWITCH}=false"
    opts = _options(argv)
    if opts is None:
        return f"an argv this module does not mirror: {argv[4:]}"
    app = opts.get("--app-name")
    if app != "basic-auth-fastpath":
        return f"the `{app}` app is set up by `mlflow server`"
    for name in CLI_ONLY_VALUES:
        if env.get(name, "").strip():
            return f"{name} is set"
    for name in CLI_ONLY_SWITCHES:
        if env.get(name, "").strip().lower() not in OFF:
            return f"{name} is set"
    if env.get("MLFLOW_DISABLE_TELEMETRY", "").strip().lower() not in ("true", "1"):
        return "MLflow telemetry is on (`mlflow server` records its start)"
    return None


def _app(name: str) -> str:
    """The entry point `name` in the plugins' mlflow.app group (what MLflow's `_find_app` reads)."""
    import configparser

    plugins = Path(__file__).resolve().parent / "plugins"
    for dist in sorted(plugins.glob("*.dist-info")):
        ep = configparser.ConfigParser()
        ep.read(dist / "entry_points.txt")
        if ep.has_option("mlflow.app", name):
            return ep.get("mlflow.app", name).strip()
    raise Fatal(f"the image has no MLflow app {name!r} under {plugins}")


def _log_config() -> str:
    """MLflow's uvicorn log config (mlflow/server/__init__.py _UVICORN_LOG_CONFIG), found without importing MLflow."""
    spec = importlib.util.find_spec("mlflow")
    return str(Path(next(iter(spec.submodule_search_locations))) / "server" / "uvicorn_log_config.yaml")


def command(argv: list[str], env: dict) -> tuple[list[str], dict]:
    """The uvicorn argv and environment `mlflow server <argv[4:]>` would start with `env`.

    Only for a start that cli_reason() lets through; the caller checks that first.
    """
    o = _options(argv)
    serve = bool(o.get("serve", True))
    backend = env["MLFLOW_BACKEND_STORE_URI"]
    out = dict(env)
    # what `server()` puts into os.environ (security middleware defaults, workspaces off)
    out["MLFLOW_SERVER_X_FRAME_OPTIONS"] = env.get("MLFLOW_SERVER_X_FRAME_OPTIONS") or X_FRAME_OPTIONS_DEFAULT
    out["MLFLOW_ENABLE_WORKSPACES"] = "false"
    # what its store check leaves in os.environ (mlflow/server/handlers.py _get_tracking_store and
    # _get_model_registry_store: set_tracking_uri, set_registry_uri), inherited by the workers
    out["MLFLOW_TRACKING_URI"] = backend
    out["MLFLOW_REGISTRY_URI"] = env.get("MLFLOW_REGISTRY_STORE_URI") or backend
    # what `_run_server()` adds for its workers
    out["_MLFLOW_SERVER_FILE_STORE"] = backend
    out["_MLFLOW_SERVER_REGISTRY_STORE"] = env.get("MLFLOW_REGISTRY_STORE_URI") or backend
    if serve:
        out["_MLFLOW_SERVER_ARTIFACT_ROOT"] = DEFAULT_ARTIFACTS_URI
        out["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "true"
        out["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = o["--artifacts-destination"]
    else:
        out["_MLFLOW_SERVER_ARTIFACT_ROOT"] = o["--default-artifact-root"]
        out["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] = (env.get("MLFLOW_ARTIFACTS_DESTINATION")
                                                      or ARTIFACTS_DESTINATION_DEFAULT)
    out.update(SECRETS_CACHE)
    out["_MLFLOW_SERVER_BOOT_ID"] = uuid.uuid4().hex
    out["_MLFLOW_IN_JOB_EXECUTOR"] = "false"
    out["_MLFLOW_SGI_NAME"] = "uvicorn"
    opts = shlex.split(env.get("MLFLOW_UVICORN_OPTS", ""))
    if not any(x == "--log-config" or x.startswith("--log-config=") for x in opts):
        opts += ["--log-config", _log_config()]
    uvicorn = [argv[0], "-m", "uvicorn", *opts, "--host", o["--host"], "--port", o["--port"],
               "--workers", o["--workers"], "--factory", _app(o["--app-name"])]
    return uvicorn, out


def check_store(engine) -> None:
    """What `mlflow server` checks in the store before it starts uvicorn, in plain SQL (no MLflow import).

    * validate_sql_trace_rollup_startup (mlflow/tracing/trace_rollup_service.py), rollups off:
      rollup rows left by a server that had them on stop the start (Fatal).
    * the stores' _initialize_store_state (mlflow/store/tracking/sqlalchemy_store.py and
      model_registry/sqlalchemy_store.py), workspaces off: experiments, registered models or webhooks
      in a workspace other than "default" stop the start with MLflow's message (Fatal); the workers
      would otherwise answer every call with it, after /health had passed.
    The same function also creates the default experiment (id 0) when it is missing (a new
    database); the workers do that on their first store access, and MLflow's insert tolerates a
    second worker doing it at the same time (IntegrityError caught: _create_default_experiment).
    """
    import sqlalchemy as sa

    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            tables = set(inspector.get_table_names())
            for table in ROLLUP_TABLES:
                if table in tables and conn.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first():
                    raise Fatal("SQL trace rollups cannot be disabled while materialized rollup rows exist "
                                f"(table {table}): stop every MLflow server on this database and run "
                                "`mlflow db delete-trace-rollups <database-url>`, or set "
                                "MLFLOW_SQL_TRACE_ROLLUPS_ENABLED=true")
            for table, what, key in WORKSPACE_SCOPED:
                if table not in tables or "workspace" not in {c["name"] for c in inspector.get_columns(table)}:
                    continue
                row = conn.execute(sa.text(f"SELECT {key}, workspace FROM {table} WHERE workspace IS NOT NULL "
                                           "AND workspace <> :default LIMIT 1"), {"default": DEFAULT_WORKSPACE}).first()
                if row:
                    raise Fatal(f"Cannot disable workspaces because {what} exist outside the default workspace "
                                f"(for example, {key} {row[0]!r} in workspace {row[1]!r}): enable workspace support "
                                "(MLFLOW_ENABLE_WORKSPACES=true) or move them back to the default workspace")
        return None
    finally:
        engine.dispose()
