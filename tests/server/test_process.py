"""What the entrypoint hands to the server (uvicorn, as `mlflow server` would start it): argv, secrets,
uvicorn options, the auth ini."""

from __future__ import annotations

import os
from urllib.parse import quote

from tests.server.conftest import ADMIN_PASSWORD, DB_PASSWORD, SECRET_KEY
from tests.support.server import ENTRYPOINT, load_entrypoint


def test_processes_argv_has_no_secret_and_the_uvicorn_options(stack):
    cmdlines = stack.a.cmdlines()
    assert len(cmdlines) >= 3, cmdlines  # uvicorn supervisor (the exec'd entrypoint), 2 workers
    text = "\n".join(" ".join(argv) for argv in cmdlines.values())
    for s in (DB_PASSWORD, quote(DB_PASSWORD, safe=""), ADMIN_PASSWORD, SECRET_KEY):
        assert s not in text
    # uvicorn started as `mlflow server --app-name basic-auth-fastpath` would start it (direct_launch.py)
    assert not [a for a in cmdlines.values() if a[1:4] == ["-m", "mlflow", "server"]], cmdlines
    uvicorn = cmdlines[stack.a.proc.pid]
    assert uvicorn[1:3] == ["-m", "uvicorn"] and uvicorn[-2:] == ["--factory", "mlflow_auth_fastpath:create_app"]
    joined = " ".join(uvicorn)
    for opt in ("--loop uvloop", "--http httptools", "--timeout-keep-alive 65", "--workers 2"):
        assert opt in joined, joined
    env = dict(kv.split("=", 1) for kv in open(f"/proc/{stack.a.proc.pid}/environ").read().split("\0") if "=" in kv)
    assert env["_MLFLOW_SERVER_ARTIFACT_DESTINATION"] == f"s3://{stack.bucket}/artifacts"
    assert (env["_MLFLOW_SERVER_SERVE_ARTIFACTS"], env["_MLFLOW_SERVER_ARTIFACT_ROOT"]) == ("true", "mlflow-artifacts:/")


def test_server_environment(stack):
    pid = next(p for p, a in stack.a.cmdlines().items() if a[1:3] == ["-m", "uvicorn"])
    env = dict(kv.split("=", 1) for kv in open(f"/proc/{pid}/environ").read().split("\0") if "=" in kv)
    assert env["TMPDIR"] == str(stack.a.spool)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "MLFLOW_DB_PASSWORD" not in env
    # the auth fast path's entry point is found on PYTHONPATH; the pool is 10 kept, no overflow
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ENTRYPOINT.parent / "plugins")
    assert (env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"], env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]) == ("10", "0")
    ini = env["MLFLOW_AUTH_CONFIG_PATH"]
    assert ini.startswith(str(stack.a.spool)) and oct(os.stat(ini).st_mode & 0o777) == "0o600"
    # read the way MLflow reads it (configparser with interpolation): the password survives
    import configparser

    from sqlalchemy.engine import make_url

    config = configparser.ConfigParser()
    config.read(ini)
    url = make_url(config["mlflow"]["database_uri"])
    assert (url.password, url.database, url.port) == (DB_PASSWORD, "mlflow_auth", stack.db.port)
    assert "%%" in open(ini).read()
    assert config["mlflow"]["auth_cache_ttl_seconds"] == "60" and config["mlflow"]["default_permission"] == "READ"


def test_auth_app_choice():
    """`basic-auth-fastpath` by default; MLflow's `basic-auth` when asked, and when the job runner
    is on (MLflow sets up the runner's internal token only for the app named `basic-auth`)."""
    entrypoint = load_entrypoint()

    def app(**env):
        return entrypoint.auth_app(entrypoint.Settings({"MLFLOW_BACKEND_STORE_URI": "sqlite:////tmp/x.db", **env}))

    assert app() == "basic-auth-fastpath"
    assert app(MLFLOW_AUTH_FASTPATH="false") == "basic-auth"
    assert app(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="true") == "basic-auth"
    assert app(MLFLOW_AUTH_FASTPATH="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false") == "basic-auth-fastpath"
