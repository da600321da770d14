"""The admin step's environment (tests/server/test_database_admin.py has what it does): the
application user's password generated into, or taken from, its Secrets Manager secret (moto); a
bad or incomplete environment is one line that prints no secret; a database that is not up yet is
waited for.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from urllib.parse import quote

import psycopg2
import pymysql
import pytest
import requests

from tests.server.admin_target import CHANGES, assert_no_secret, make_target, one_error_line
from tests.server.admin_target import target  # noqa: F401  (a fixture)
from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.support.dbadmin import ensure_master, run_admin_step
from tests.support.peers import S3_TEST_CREDENTIALS, free_port
from tests.support.server import Server


# --- the application user's secret (Secrets Manager, moto) -------------------------------------
@pytest.fixture
def app_secret(s3):
    """A secret created without a value, as the program creates it (aws.secretsmanager.Secret
    with no SecretVersion): GetSecretValue answers ResourceNotFoundException until a version exists
    (AWS Secrets Manager API Reference, GetSecretValue and PutSecretValue)."""
    client = s3.client("secretsmanager")
    arn = client.create_secret(Name=f"mlflow-app-{uuid.uuid4().hex[:8]}")["ARN"]
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_secret_value(SecretId=arn)
    yield client, arn
    client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)


def secret_env(s3) -> dict[str, str]:
    return {**S3_TEST_CREDENTIALS, "AWS_ENDPOINT_URL_SECRETS_MANAGER": s3.endpoint_url}


def test_the_admin_step_generates_stores_and_reuses_the_application_password(target, app_secret, s3, tmp_path):
    client, arn = app_secret
    first = run_admin_step(target.admin_env(None, MLFLOW_DB_APP_SECRET_ARN=arn, **secret_env(s3)))
    assert first.returncode == 0, first.output
    stored = client.get_secret_value(SecretId=arn)
    value = json.loads(stored["SecretString"])
    assert value["username"] == target.user and len(value["password"]) >= 32
    assert "stored a generated password" in first.stdout
    assert_no_secret(first.output, value["password"])

    second = run_admin_step(target.admin_env(None, MLFLOW_DB_APP_SECRET_ARN=arn, **secret_env(s3)))
    assert second.returncode == 0, second.output
    assert client.get_secret_value(SecretId=arn)["VersionId"] == stored["VersionId"]  # reused, not replaced
    assert len(client.list_secret_version_ids(SecretId=arn)["Versions"]) == 1
    assert not [line for line in second.stdout.splitlines() if any(w in line for w in CHANGES)], second.stdout
    assert_no_secret(second.output, value["password"])

    with Server(target.server_env(tmp_path, value["password"])) as srv:
        r = requests.post(f"{srv.url}/api/2.0/mlflow/experiments/search", json={"max_results": 1},
                          auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
        assert r.status_code == 200, r.text

    # a new value in the secret (rotation step 1): the next run sets the user's password to it
    client.put_secret_value(SecretId=arn, SecretString=json.dumps({"username": target.user,
                                                                   "password": "rotated-" + value["password"]}))
    third = run_admin_step(target.admin_env(None, MLFLOW_DB_APP_SECRET_ARN=arn, **secret_env(s3)))
    assert third.returncode == 0 and f"set the password of user '{target.user}'" in third.stdout, third.output
    with contextlib.closing(target.connect(target.name, password="rotated-" + value["password"])):
        pass
    with pytest.raises((pymysql.err.OperationalError, psycopg2.OperationalError)):
        target.connect(target.name, password=value["password"])


def test_a_missing_secret_is_one_line(target, s3):
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-secret-AbCdEf"
    line = one_error_line(run_admin_step(target.admin_env(None, MLFLOW_DB_APP_SECRET_ARN=arn, **secret_env(s3))))
    assert "MLFLOW_DB_APP_SECRET_ARN" in line and "does not exist" in line, line


# --- bad admin environments: one line, no secret ------------------------------------------------
@pytest.mark.parametrize("case", ["wrong master password", "no master user", "no application password",
                                  "both passwords", "bad user name", "unreachable"])
def test_a_bad_admin_environment_is_one_line(case, target):
    env = target.admin_env()
    words: tuple[str, ...]
    if case == "wrong master password":
        env["MLFLOW_DB_ADMIN_PASSWORD"] = "Wr0ng@:/?#%&+master"
        words = ("refused the login", "mlflow_master")
    elif case == "no master user":
        env.pop("MLFLOW_DB_ADMIN_USER")
        words = ("MLFLOW_DB_ADMIN_USER",)
    elif case == "no application password":
        env.pop("MLFLOW_DB_PASSWORD")
        words = ("MLFLOW_DB_APP_SECRET_ARN", "MLFLOW_DB_PASSWORD")
    elif case == "both passwords":
        env["MLFLOW_DB_APP_SECRET_ARN"] = "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf"
        words = ("MLFLOW_DB_APP_SECRET_ARN", "MLFLOW_DB_PASSWORD", "not both")
    elif case == "bad user name":
        env["MLFLOW_DB_USER"] = "app'; DROP USER root; --"
        words = ("MLFLOW_DB_USER",)
    else:
        env["MLFLOW_DB_PORT"] = str(free_port())
        words = ("cannot reach", "MLFLOW_DB_WAIT_SECONDS=0")
    result = run_admin_step({**env, "MLFLOW_DB_WAIT_SECONDS": "0"}, timeout=120)
    line = one_error_line(result)
    assert all(w in line for w in words), line
    assert_no_secret(result.output, "Wr0ng@:/?#%&+master", quote("Wr0ng@:/?#%&+master", safe=""))


def test_the_admin_step_waits_for_a_database_that_is_not_up_yet(database, tmp_path):
    """The admin task can start before the cluster's writer answers (Aurora User Guide, "Creating
    an Amazon Aurora DB cluster": the endpoint exists before the instance is available): it waits
    (MLFLOW_DB_WAIT_SECONDS, the server's bounded wait), logging each attempt, then does its work."""
    import threading

    peer = type(database)(port=free_port())
    try:
        peer.start()
        ensure_master(peer)
        peer.stop()
        t = make_target(peer)
        done: list = []
        worker = threading.Thread(target=lambda: done.append(run_admin_step(
            t.admin_env(MLFLOW_DB_WAIT_SECONDS="120"), timeout=240)))
        worker.start()
        worker.join(timeout=8)
        assert not done, done[0].output if done else ""  # still waiting
        peer.start()
        worker.join(timeout=240)
        assert done and done[0].returncode == 0, done[0].output if done else "no result"
        assert "database not ready" in done[0].stdout and "admin step: done" in done[0].stdout, done[0].stdout
    finally:
        peer.close()
