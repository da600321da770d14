"""The entrypoint starts uvicorn itself (image/direct_launch.py) with exactly what `mlflow server`
would start it with.

MLflow 3.17.2, mlflow/cli/__init__.py `server` and mlflow/server/__init__.py `_run_server`: the
command turns its options and their environment variables into private variables for the workers
(`_MLFLOW_SERVER_*`, `_MLFLOW_SGI_NAME`, `_MLFLOW_SERVER_BOOT_ID`, ...) and starts `python -m
uvicorn ... --factory <app>` through `mlflow.utils.process._exec_cmd`. Here MLflow's own command
runs on the argv and environment the entrypoint prepared, with `subprocess.Popen` inside `_exec_cmd`
captured, and the argv and environment it would have started uvicorn with must equal what the
entrypoint execs (the boot id aside: a fresh uuid each start, in both).
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import uuid

import pytest
import requests

from tests.support.peers import free_port
from tests.support.server import ENTRYPOINT, PYTHON, Server, _base_env, load_entrypoint, run_entrypoint, s3_env

IMAGE = ENTRYPOINT.parent

# Runs prepare() (with the direct launch off, so it returns the `mlflow server` argv), then MLflow's
# own `mlflow server` on that argv and environment up to its Popen, then direct_launch.command().
PARITY = textwrap.dedent("""
    import json, os, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    import direct_launch, server_launch
    argv, child = server_launch.prepare(dict(os.environ))
    assert argv[1:4] == ["-m", "mlflow", "server"], argv
    child.pop("MLFLOW_DIRECT_LAUNCH")
    reason = direct_launch.cli_reason(argv, child)
    direct = None if reason else direct_launch.command(argv, child)

    os.environ.clear()
    os.environ.update(child)
    sys.path.insert(0, os.path.join(sys.argv[1], "plugins"))  # as PYTHONPATH does for the real process
    import mlflow.utils.process

    class Captured(Exception):
        pass

    seen = {}
    def popen(cmd, env=None, **kw):
        seen.update(argv=list(cmd), env=dict(env))
        raise Captured
    mlflow.utils.process.subprocess.Popen = popen
    from mlflow.cli import cli
    try:
        cli.main(args=argv[3:], standalone_mode=False)
    except Captured:
        pass
    print("RESULT " + json.dumps({"reason": reason, "direct": direct, "mlflow": seen}))
""")

BOOT_ID = re.compile(r"[0-9a-f]{32}")


def parity(tmp_path, env: dict | None = None) -> dict:
    """Run PARITY for an embedded-mode entrypoint environment plus `env`; returns its RESULT."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    full = {**_base_env(), "HOME": str(tmp_path), "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(free_port()),
            "MLFLOW_STATE_DIR": str(tmp_path / "state"), "MLFLOW_SPOOL_DIR": str(tmp_path / "spool"),
            "MLFLOW_DIRECT_LAUNCH": "false", **(env or {})}
    done = subprocess.run([PYTHON, "-c", PARITY, str(IMAGE)], env=full, cwd=work,
                          capture_output=True, text=True, timeout=180)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def assert_same_start(result: dict) -> None:
    assert result["reason"] is None, result["reason"]
    (argv, env), mlflow_ = result["direct"], result["mlflow"]
    assert argv == mlflow_["argv"]
    ours, theirs = dict(env), dict(mlflow_["env"])
    assert BOOT_ID.fullmatch(ours.pop("_MLFLOW_SERVER_BOOT_ID")) and BOOT_ID.fullmatch(theirs.pop("_MLFLOW_SERVER_BOOT_ID"))
    missing = {k: v for k, v in theirs.items() if k not in ours}
    extra = {k: v for k, v in ours.items() if k not in theirs}
    differ = {k: (ours[k], theirs[k]) for k in ours.keys() & theirs.keys() if ours[k] != theirs[k]}
    assert (missing, extra, differ) == ({}, {}, {})


@pytest.mark.parametrize("env", [
    {},  # embedded defaults: artifacts proxied to the state dir
    {"MLFLOW_SERVE_ARTIFACTS": "false"},
    {"MLFLOW_SERVE_ARTIFACTS": "false", "MLFLOW_ARTIFACTS_DESTINATION": "{tmp}/elsewhere"},
    {"MLFLOW_SERVER_ALLOWED_HOSTS": "mlflow.example.com,10.0.0.7:5000", "MLFLOW_SERVER_X_FRAME_OPTIONS": "DENY",
     "MLFLOW_UVICORN_OPTS": "--log-level warning", "MLFLOW_WORKERS": "3"},
    {"MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": "https://ui.example.com",
     "MLFLOW_UVICORN_OPTS": "--log-config={tmp}/log.yaml"},
], ids=["embedded", "no-proxy", "no-proxy-destination", "hosts-frame-uvicorn-opts", "cors-log-config"])
def test_the_entrypoint_starts_uvicorn_as_mlflow_server_would(tmp_path, env):
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    assert_same_start(parity(tmp_path, env))


@pytest.mark.parametrize("serve", ["true", "false"])
def test_a_database_server_and_an_s3_destination_start_as_mlflow_server_would(fresh, s3, tmp_path, serve):
    """What a task runs: MySQL or PostgreSQL made by the admin step, s3:// artifacts (proxied or not),
    MLflow's own store checks against the real database."""
    f = fresh()
    bucket = s3.create_bucket(f"direct-{uuid.uuid4().hex[:8]}")
    result = parity(tmp_path, {**f.env(), **s3_env(s3, bucket), "MLFLOW_SERVE_ARTIFACTS": serve})
    assert_same_start(result)
    assert result["direct"][1]["_MLFLOW_SERVER_FILE_STORE"].startswith(("mysql+pymysql://", "postgresql"))


# every option of `mlflow server` without an environment variable, and why the direct launch may ignore it
NO_ENVVAR = {
    "waitress_opts": "Windows only; the entrypoint never passes it",
    "dev": "never passed",
    "app_name": "passed on the argv; direct_launch only takes basic-auth-fastpath",
    "secrets_cache_ttl": "default mirrored (SECRETS_CACHE)",
    "secrets_cache_max_size": "default mirrored (SECRETS_CACHE)",
    "enable_workspaces": "read from MLFLOW_ENABLE_WORKSPACES, which is CLI_ONLY",
}


def test_every_option_of_mlflow_server_is_mirrored_or_sends_the_start_through_it():
    """An MLflow upgrade that adds an option to `mlflow server` fails here until direct_launch.py says
    what to do with it."""
    from mlflow.cli import server

    launch = load_entrypoint().direct_launch
    unclassified = []
    for p in server.params:
        envvar = p.envvar
        if envvar and envvar not in launch.MIRRORED + launch.CLI_ONLY:
            unclassified.append(envvar)
        if not envvar and p.name not in NO_ENVVAR:
            unclassified.append(p.name)
    assert unclassified == []
    defaults = {p.name: p.default for p in server.params}
    assert (str(defaults["secrets_cache_ttl"]), str(defaults["secrets_cache_max_size"])) == tuple(
        launch.SECRETS_CACHE.values())
    assert defaults["x_frame_options"] == launch.X_FRAME_OPTIONS_DEFAULT
    assert defaults["artifacts_destination"] == launch.ARTIFACTS_DESTINATION_DEFAULT
    from mlflow.store.db.trace_rollups import _BUILT_FAMILIES, FAMILY_MODEL

    assert launch.ROLLUP_TABLES == tuple(FAMILY_MODEL[f].__tablename__ for f in _BUILT_FAMILIES)


@pytest.mark.parametrize("name", load_entrypoint().direct_launch.CLI_ONLY)
def test_what_is_not_mirrored_goes_through_mlflow_server(name):
    """A value option counts whatever it says (MLflow takes MLFLOW_EXPOSE_PROMETHEUS=false as the
    directory "false"); a switch unless click and MLflow both read it as off."""
    launch = load_entrypoint().direct_launch
    argv = [PYTHON, "-m", "mlflow", "server", "--app-name", "basic-auth-fastpath", "--host", "127.0.0.1"]
    base = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    assert launch.cli_reason(argv, base) is None
    assert launch.cli_reason(argv, {**base, name: " "}) is None
    assert launch.cli_reason(argv, {**base, name: "1"}) == f"{name} is set"
    assert launch.cli_reason(argv, {**base, name: "no"}) == f"{name} is set"
    off = launch.cli_reason(argv, {**base, name: "false"})
    assert off == (None if name in launch.CLI_ONLY_SWITCHES else f"{name} is set")


def test_an_argv_it_does_not_know_goes_through_mlflow_server():
    launch = load_entrypoint().direct_launch
    argv = [PYTHON, "-m", "mlflow", "server", "--app-name", "basic-auth-fastpath", "--host", "127.0.0.1"]
    quiet = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    assert launch.cli_reason(argv, quiet) is None
    assert "does not mirror" in launch.cli_reason(argv + ["--static-prefix", "/x"], quiet)
    assert "does not mirror" in launch.cli_reason(argv + ["--dev"], quiet)
    assert "does not mirror" in launch.cli_reason(argv + ["--port"], quiet)


def test_a_bad_switch_is_one_line_before_any_wait():
    """MLFLOW_DIRECT_LAUNCH is checked with the other settings, not after the database wait (here a
    database that is not there and a 600 s wait: the line comes at once)."""
    done = run_entrypoint({"MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": "127.0.0.1", "MLFLOW_DB_PORT": str(free_port()),
                           "MLFLOW_DB_USER": "u", "MLFLOW_DB_PASSWORD": "p", "MLFLOW_DB_WAIT_SECONDS": "600",
                           "MLFLOW_DIRECT_LAUNCH": "maybe"}, timeout=60)
    assert done.returncode == 2 and done.error_lines == ["mlflow-entrypoint: error: MLFLOW_DIRECT_LAUNCH='maybe' is not a "
                                                         "boolean (true/false)"], done.output


def test_basic_auth_telemetry_and_the_switch_go_through_mlflow_server():
    launch = load_entrypoint().direct_launch
    argv = [PYTHON, "-m", "mlflow", "server", "--app-name", "basic-auth-fastpath"]
    quiet = {"MLFLOW_DISABLE_TELEMETRY": "true"}
    assert "basic-auth" in launch.cli_reason(argv[:-1] + ["basic-auth"], quiet)
    assert "telemetry" in launch.cli_reason(argv, {})
    assert launch.cli_reason(argv, {**quiet, "MLFLOW_DIRECT_LAUNCH": "false"}) == "MLFLOW_DIRECT_LAUNCH=false"


def _embedded_state(tmp_path):
    """An embedded state dir whose schemas a first start created; returns (its tracking DB URI, engine)."""
    import sqlalchemy as sa

    with Server({"MLFLOW_STATE_DIR": str(tmp_path / "state")}) as srv:
        srv.stop()
    uri = f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}"
    return uri, sa.create_engine(uri)


def _refused(tmp_path, match: str) -> None:
    srv = Server({"MLFLOW_STATE_DIR": str(tmp_path / "state")})
    try:
        srv.spawn()
        assert srv.proc.wait(timeout=120) == 2
        srv._join_reader()
        errors = [line for line in srv.output().splitlines() if "error" in line]
        assert len(errors) == 1 and match in errors[0], srv.output_tail()
    finally:
        srv.close()


def test_leftover_rollup_rows_stop_the_start_as_mlflow_server_does(tmp_path):
    """mlflow/tracing/trace_rollup_service.py validate_sql_trace_rollup_startup: with rollups off,
    rows a server with them on left behind stop the start; the direct launch checks the same, in one
    line, exit 2."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.db.trace_rollups import _BUILT_FAMILIES, FAMILY_MODEL
    from mlflow.tracing.trace_rollup_service import validate_sql_trace_rollup_startup

    launch = load_entrypoint().direct_launch
    uri, engine = _embedded_state(tmp_path)
    launch.check_store(engine)  # none yet
    validate_sql_trace_rollup_startup(uri)
    table = FAMILY_MODEL[_BUILT_FAMILIES[0]].__table__
    row = {c.name: _dummy(c) for c in table.columns if not c.nullable and c.default is None and c.server_default is None}
    with engine.begin() as conn:
        conn.execute(table.insert().values(**row))
    with pytest.raises(MlflowException, match="rollup rows exist"):
        validate_sql_trace_rollup_startup(uri)
    with pytest.raises(launch.Fatal, match="rollup rows exist"):
        launch.check_store(engine)
    _refused(tmp_path, "rollup rows exist")


@pytest.mark.parametrize("table", ["experiments", "registered_models"])
def test_objects_in_another_workspace_stop_the_start_as_mlflow_server_does(tmp_path, table):
    """The stores' _initialize_store_state with workspaces off (mlflow/store/tracking/sqlalchemy_store.py,
    model_registry/sqlalchemy_store.py): MLflow's own store refuses to open, and `mlflow server` exits
    before uvicorn; the direct launch stops the same way (else every call would be a 500 after /health)."""
    import sqlalchemy as sa
    from mlflow.exceptions import MlflowException

    launch = load_entrypoint().direct_launch
    uri, engine = _embedded_state(tmp_path)
    with engine.begin() as conn:
        if table == "experiments":
            conn.execute(sa.text("INSERT INTO experiments (experiment_id, name, lifecycle_stage, workspace) "
                                 "VALUES (7, 'theirs', 'active', 'team-a')"))
        else:
            conn.execute(sa.text("INSERT INTO registered_models (name, workspace, creation_time, last_updated_time) "
                                 "VALUES ('their-model', 'team-a', 0, 0)"))
    store = (__import__("mlflow.store.tracking.sqlalchemy_store", fromlist=["SqlAlchemyStore"]).SqlAlchemyStore
             if table == "experiments" else
             __import__("mlflow.store.model_registry.sqlalchemy_store", fromlist=["SqlAlchemyStore"]).SqlAlchemyStore)
    with pytest.raises(MlflowException, match="Cannot disable workspaces"):
        store(uri, str(tmp_path / "artifacts")) if table == "experiments" else store(uri)
    with pytest.raises(launch.Fatal, match="Cannot disable workspaces"):
        launch.check_store(engine)
    _refused(tmp_path, "Cannot disable workspaces")


def test_a_missing_default_experiment_is_created_by_the_workers(tmp_path):
    """`mlflow server`'s store check creates experiment 0 when it is missing (a new database); with the
    direct launch the workers do it on their first store access (MLflow's insert tolerates two at once)."""
    import sqlalchemy as sa

    _, engine = _embedded_state(tmp_path)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM experiments WHERE experiment_id = 0"))
    state = tmp_path / "state"
    password = (state / "admin_password").read_text().strip()
    with Server({"MLFLOW_STATE_DIR": str(state)}) as srv:
        assert srv.cmdlines()[srv.proc.pid][1:3] == ["-m", "uvicorn"]
        r = requests.get(srv.url + "/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"},
                         auth=("admin", password), timeout=30)
        assert r.status_code == 200 and r.json()["experiment"]["name"] == "Default", r.text
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM experiments WHERE experiment_id = 0")).scalar() == "Default"


def _dummy(column):
    import datetime

    kind = column.type.python_type
    return {int: 1, float: 1.0, str: "x", bool: False, datetime.datetime: datetime.datetime(2026, 1, 1),
            datetime.date: datetime.date(2026, 1, 1)}[kind]


def test_the_started_server_is_uvicorn_itself_and_stops_cleanly_on_sigterm(tmp_path):
    """No `mlflow server` process: the entrypoint exec'd uvicorn (PID of the entrypoint), which
    answers /health and the API and ends with 0 on SIGTERM (uvicorn's graceful shutdown)."""
    with Server({"MLFLOW_STATE_DIR": str(tmp_path / "state")}) as srv:
        cmdlines = srv.cmdlines()
        assert cmdlines[srv.proc.pid][1:3] == ["-m", "uvicorn"], cmdlines
        assert not [a for a in cmdlines.values() if a[1:4] == ["-m", "mlflow", "server"]], cmdlines
        assert "--factory" in cmdlines[srv.proc.pid] and cmdlines[srv.proc.pid][-1] == "mlflow_auth_fastpath:create_app"
        assert requests.get(srv.url + "/health", timeout=10).status_code == 200
        assert requests.post(srv.url + "/api/2.0/mlflow/experiments/search", json={}, timeout=10).status_code == 401
        assert srv.stop() == 0, srv.output_tail()


def test_the_switch_starts_through_mlflow_server(tmp_path):
    with Server({"MLFLOW_STATE_DIR": str(tmp_path / "state"), "MLFLOW_DIRECT_LAUNCH": "false"}) as srv:
        assert srv.cmdlines()[srv.proc.pid][1:4] == ["-m", "mlflow", "server"]
        assert "started through `mlflow server` (MLFLOW_DIRECT_LAUNCH=false)" in srv.output()
        assert srv.stop() == 0, srv.output_tail()

