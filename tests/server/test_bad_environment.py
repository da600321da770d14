"""A bad environment ends the entrypoint quickly: non-zero exit, ONE line on stderr naming the
problem, and no secret anywhere in its output."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from tests.server.conftest import ADMIN_PASSWORD, DB_PASSWORD, SECRET_KEY
from tests.support.peers import free_port
from tests.support.server import run_entrypoint, s3_env

WRONG_PASSWORD = "Wr0ng@:/?#%&+password"
SECRETS = [DB_PASSWORD, quote(DB_PASSWORD, safe=""), WRONG_PASSWORD, quote(WRONG_PASSWORD, safe=""),
           ADMIN_PASSWORD, SECRET_KEY]


def fails_with(env: dict, *words: str, timeout: float = 60):
    t0 = time.monotonic()
    # a port of its own: the entrypoint checks its listen port first, and 5000 may be taken here
    result = run_entrypoint({"MLFLOW_PORT": str(free_port()), **env}, timeout=timeout)
    elapsed = time.monotonic() - t0
    assert result.returncode != 0, result.output
    assert len(result.error_lines) == 1, f"stderr must be one line:\n{result.stderr}"
    line = result.error_lines[0]
    assert line.startswith("mlflow-entrypoint: error: ")
    for word in words:
        assert word in line, line
    for s in SECRETS:
        assert s not in result.output, f"secret printed: {result.output}"
    assert elapsed < 30, f"took {elapsed:.0f} s"
    return line


@pytest.fixture
def good(fresh, tmp_path):
    """A complete, working environment on a fresh database (tests break one thing in it)."""
    f = fresh()
    return {**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}


def test_unreachable_database(good):
    """With no wait (MLFLOW_DB_WAIT_SECONDS=0): one attempt, then the line. The wait itself:
    tests/server/test_database_wait.py."""
    line = fails_with({**good, "MLFLOW_DB_PORT": str(free_port()), "MLFLOW_DB_WAIT_SECONDS": "0"},
                      "cannot reach", "127.0.0.1", "connection refused")
    assert "MLFLOW_DB_WAIT_SECONDS=0" in line


def test_wrong_database_password(good):
    fails_with({**good, "MLFLOW_DB_PASSWORD": WRONG_PASSWORD}, "refused the login", good["MLFLOW_DB_USER"])


def test_auth_database_missing_and_user_may_not_create_it(fresh, tmp_path):
    f = fresh(create_any=False)
    fails_with({**f.env(), "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "a")},
               f"'{f.auth_name}' does not exist", "may not create it")


def test_missing_bucket(good, s3):
    fails_with({**good, **s3_env(s3, "no-such-bucket")}, "'no-such-bucket'", "does not exist")


def test_admin_password_missing_on_a_new_user_store(good):
    fails_with({**good, "MLFLOW_AUTH_ADMIN_PASSWORD": None}, "MLFLOW_AUTH_ADMIN_PASSWORD", "does not exist yet")


@pytest.mark.parametrize("port", ["70000", "0", "http", "-1"])
def test_invalid_port(port):
    fails_with({"MLFLOW_PORT": port}, "MLFLOW_PORT")


@pytest.mark.parametrize("env,words", [
    ({"MLFLOW_DB_ENGINE": "oracle"}, ("MLFLOW_DB_ENGINE", "'oracle'", "not supported")),
    ({"MLFLOW_BACKEND_STORE_URI": f"mssql+pyodbc://sa:{quote(DB_PASSWORD, safe='')}@127.0.0.1:1433/mlflow"},
     ("'mssql'", "not supported")),
], ids=["engine", "uri"])
def test_unsupported_engine(env, words):
    fails_with({**env, "MLFLOW_DB_PASSWORD": DB_PASSWORD, "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY}, *words)


def test_database_mode_needs_the_shared_secret_key():
    fails_with({"MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": "127.0.0.1", "MLFLOW_DB_USER": "u",
                "MLFLOW_DB_PASSWORD": DB_PASSWORD, "MLFLOW_ARTIFACTS_DESTINATION": "/tmp/x"},
               "MLFLOW_FLASK_SERVER_SECRET_KEY")


def test_unknown_permission_and_arguments():
    fails_with({"MLFLOW_AUTH_DEFAULT_PERMISSION": "ALL"}, "MLFLOW_AUTH_DEFAULT_PERMISSION")


def test_fastpath_switch_is_a_boolean():
    fails_with({"MLFLOW_AUTH_FASTPATH": "sometimes"}, "MLFLOW_AUTH_FASTPATH", "true/false")
