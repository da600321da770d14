"""Running the server as a local process (bin/serve, embedded mode): the port, the auth ini, telemetry."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import requests

from tests.server.conftest import DB_PASSWORD, SECRET_KEY
from tests.support.peers import LOOPBACK, free_port
from tests.support.server import Server, run_entrypoint

ADMIN_PASSWORD = "my-own-admin-password"
# This machine reaches nothing but 127.0.0.1: MLflow's telemetry stays off (DO_NOT_TRACK, which MLflow
# honours) even where a test runs an entrypoint that does not turn it off itself (the failing-first runs).
OFFLINE = {"DO_NOT_TRACK": "true"}


def server_environ(srv: Server) -> dict[str, str]:
    """The environment of the exec'd server's uvicorn process (/proc/<pid>/environ)."""
    pid = next(p for p, argv in srv.cmdlines().items() if argv[1:3] == ["-m", "uvicorn"])
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)


@pytest.mark.parametrize("mode", ["embedded", "database"])
def test_port_in_use_is_one_line_before_anything_else(mode, tmp_path):
    """A second server on a port that is taken (a second `bin/serve`): MLflow would print uvicorn's
    "Address already in use" and exit 0. The entrypoint checks first: exit 2, one line naming the
    port; in database mode before waiting for the database (here: nothing listens on its port)."""
    env = {**OFFLINE, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
    if mode == "database":
        env.update({"MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(free_port()),
                    "MLFLOW_DB_USER": "u", "MLFLOW_DB_PASSWORD": DB_PASSWORD,
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
                    "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")})
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        try:
            result = run_entrypoint({**env, "MLFLOW_PORT": str(port)}, timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the entrypoint was still running after 90 s with port {port} taken")
    assert result.returncode == 2, result.output
    assert len(result.error_lines) == 1, f"stderr must be one line:\n{result.stderr}"
    assert f"port {port} on {LOOPBACK} is in use" in result.error_lines[0], result.error_lines[0]
    assert "database not ready" not in result.stdout
    assert DB_PASSWORD not in result.output and ADMIN_PASSWORD not in result.output


def test_embedded_servers_keep_the_auth_ini_in_their_own_state_dir(tmp_path):
    """Two checkouts (two state dirs) on one machine, MLFLOW_SPOOL_DIR left to its default (the
    system temp dir, here a TMPDIR of the test's): each server's ini is its own, under its state
    dir, 0600; nothing of the entrypoint's is left in the shared temp dir."""
    shared_tmp = tmp_path / "system-tmp"
    shared_tmp.mkdir()
    servers = [Server({**OFFLINE, "MLFLOW_SPOOL_DIR": None, "TMPDIR": str(shared_tmp), "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                       "MLFLOW_STATE_DIR": str(tmp_path / name / ".local-mlflow")}) for name in ("one", "two")]
    try:
        inis = []
        for srv in servers:
            srv.start()
            inis.append(Path(server_environ(srv)["MLFLOW_AUTH_CONFIG_PATH"]))
        assert inis[0] != inis[1], inis
        for name, ini in zip(("one", "two"), inis):
            state = tmp_path / name / ".local-mlflow"
            assert ini.is_relative_to(state), f"{ini} is not under {state}"
            assert oct(ini.stat().st_mode & 0o777) == "0o600"
            assert "basic_auth.db" in ini.read_text() and str(state) in ini.read_text()
        assert not (shared_tmp / ".entrypoint").exists(), sorted(os.listdir(shared_tmp))
    finally:
        for srv in servers:
            srv.close()


def test_telemetry_is_off_unless_the_user_sets_it(tmp_path):
    """MLflow 3.x sends usage telemetry unless MLFLOW_DISABLE_TELEMETRY (mlflow/environment_variables.py)
    or DO_NOT_TRACK=true is set (mlflow/telemetry/utils.py, is_telemetry_disabled). The server
    gets MLFLOW_DISABLE_TELEMETRY=true unless the user set it; a value the user set is passed on
    as given, and so is DO_NOT_TRACK. (Only values that keep it off are run here.)"""
    with Server({**OFFLINE, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}) as srv:
        env = server_environ(srv)
        assert (env.get("MLFLOW_DISABLE_TELEMETRY"), env["DO_NOT_TRACK"]) == ("true", "true")
        # what the web UI asks before it sends anything: MLflow answers its built-in "off" config
        r = requests.get(srv.url + "/ajax-api/3.0/mlflow/ui-telemetry", auth=("admin", ADMIN_PASSWORD), timeout=10)
        assert r.status_code == 200 and r.json()["disable_ui_telemetry"] is True, r.text
    with Server({**OFFLINE, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_DISABLE_TELEMETRY": "1"}) as srv:
        assert server_environ(srv)["MLFLOW_DISABLE_TELEMETRY"] == "1"


def test_telemetry_setting_is_checked():
    """MLflow accepts true/false/1/0 only (its _BooleanEnvironmentVariable); anything else is one line."""
    try:
        result = run_entrypoint({**OFFLINE, "MLFLOW_DISABLE_TELEMETRY": "yes", "MLFLOW_PORT": str(free_port()),
                                 "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("MLFLOW_DISABLE_TELEMETRY=yes was not refused: the server started")
    assert result.returncode == 2 and len(result.error_lines) == 1, result.output
    assert "MLFLOW_DISABLE_TELEMETRY" in result.error_lines[0] and "true" in result.error_lines[0]
