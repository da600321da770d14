"""The embedded default: no database, no bucket, nothing configured. Also --healthcheck and SIGTERM."""

from __future__ import annotations

import re
import time

import mlflow
import requests
from mlflow import MlflowClient

from tests.support.server import client_env
from tests.support.peers import free_port
from tests.support.server import Server, run_entrypoint

GENERATED = re.compile(r"generated the password of admin user 'admin': (\S+) ")


def test_starts_with_no_configuration_auth_on_and_a_client_logs_a_run(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    srv = Server({"MLFLOW_STATE_DIR": None}, cwd=work)  # state in ./.local-mlflow of the working dir
    try:
        srv.start()
        out = srv.output()
        passwords = GENERATED.findall(out)
        assert len(passwords) == 1, out
        password = passwords[0]
        state = work / ".local-mlflow"
        assert (state / "admin_password").read_text().strip() == password
        assert oct((state / "admin_password").stat().st_mode & 0o777) == "0o600"
        assert {"mlflow.db", "basic_auth.db", "flask_secret_key"} <= {p.name for p in state.iterdir()}
        ini = state / ".entrypoint" / "basic_auth.ini"  # embedded: in the state dir, not the shared temp dir
        assert oct(ini.stat().st_mode & 0o777) == "0o600" and "auth_cache_ttl_seconds = 60" in ini.read_text()

        assert requests.post(srv.url + "/api/2.0/mlflow/experiments/search", json={}, timeout=10).status_code == 401
        with client_env(srv.client_env("admin", password)):
            mlflow.set_tracking_uri(srv.url)
            mlflow.set_experiment("laptop")
            with mlflow.start_run() as run:
                mlflow.log_param("p", 1)
                mlflow.log_metric("m", 0.5)
                mlflow.log_text("hello", "notes/hello.txt")
            mlflow.set_tracking_uri(None)
            client = MlflowClient(srv.url)
            assert client.get_run(run.info.run_id).data.metrics == {"m": 0.5}
            assert (state / "artifacts").is_dir() and list((state / "artifacts").rglob("hello.txt"))

        # a restart keeps everything and prints no password again
        srv.stop()
        srv.start()
        assert GENERATED.findall(srv.output()) == []
        assert "password in" in srv.output()
        with client_env(srv.client_env("admin", password)):
            assert MlflowClient(srv.url).get_run(run.info.run_id).data.params == {"p": "1"}
    finally:
        srv.close()


def test_admin_password_from_the_environment_is_used_and_not_printed(tmp_path):
    password = "my-own-admin-password"
    with Server({"MLFLOW_AUTH_ADMIN_PASSWORD": password}) as srv:
        assert password not in srv.output() and not GENERATED.findall(srv.output())
        assert not (srv.tmp / "state" / "admin_password").exists()
        r = requests.get(srv.url + "/api/2.0/mlflow/users/current", auth=("admin", password), timeout=10)
        assert r.status_code == 200


def test_healthcheck_and_sigterm(tmp_path):
    with Server({"MLFLOW_AUTH_ADMIN_PASSWORD": "my-own-admin-password"}) as srv:
        assert run_entrypoint({"MLFLOW_PORT": str(srv.port)}, ("--healthcheck",), timeout=30).returncode == 0
        assert "--timeout-keep-alive 65" in srv.output() or "keep-alive 65 s" in srv.output()
        t0 = time.monotonic()
        code = srv.stop()
        stopped_in = time.monotonic() - t0
        assert stopped_in < 10, f"SIGTERM took {stopped_in:.1f} s"
        assert code is not None
    result = run_entrypoint({"MLFLOW_PORT": str(free_port())}, ("--healthcheck",), timeout=30)
    assert result.returncode == 1 and result.output == ""
