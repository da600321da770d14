"""Opt-in end-to-end test against real AWS: never run in CI here.

Runs only when all of these hold (checked without any network access, in this order):
``RUN_AWS_E2E=1``, the ``pulumi`` CLI is on PATH, and AWS credentials are configured (environment
variables, a profile, web identity or ``~/.aws/credentials``). It then, on an ephemeral stack
``e2e-<random>`` in this project: creates the stack, sets ``environment: dev``,
``protectData: false``, ``allowInsecureHttp: true`` and ``aws:region`` (``AWS_REGION``, default
``eu-west-1``), runs ``deploy.up``, waits for ``GET /health``, logs a run with a parameter, a
metric and an artifact through the MLflow client with the admin credentials read from Secrets
Manager, reads them back, and finally (always) destroys and removes the stack.

    RUN_AWS_E2E=1 AWS_PROFILE=... PULUMI_CONFIG_PASSPHRASE=... \\
        .venv/bin/python -m pytest tests/automation/test_e2e_aws.py -v -s

It creates billable resources (Aurora, NAT, ALB, Fargate) for about 20-30 minutes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.automation.conftest import ROOT


def _aws_credentials_present() -> bool:
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return True
    if env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    home = Path(env.get("AWS_SHARED_CREDENTIALS_FILE", Path.home() / ".aws" / "credentials"))
    return home.is_file()


def _why_skip() -> str | None:
    if os.environ.get("RUN_AWS_E2E") != "1":
        return "opt-in: set RUN_AWS_E2E=1 (needs the Pulumi CLI and AWS credentials; never run in CI here)"
    if shutil.which("pulumi") is None:
        return "the pulumi CLI is not on PATH"
    if not _aws_credentials_present():
        return "no AWS credentials configured"
    return None


_SKIP = _why_skip()
pytestmark = [pytest.mark.aws_e2e, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]


def _wait_for_health(url: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(10)
    raise AssertionError(f"{url} not healthy after {timeout:.0f}s: {last}")


def test_ephemeral_stack_up_log_a_run_destroy(tmp_path, monkeypatch):
    import boto3
    import mlflow
    import pulumi.automation as auto

    import deploy

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "eu-west-1"
    name = f"e2e-{secrets.token_hex(4)}"
    stack = auto.create_stack(name, work_dir=str(ROOT))
    try:
        stack.set_all_config({
            "mlflow-tracking:environment": auto.ConfigValue("dev"),
            "mlflow-tracking:protectData": auto.ConfigValue("false"),
            "mlflow-tracking:allowInsecureHttp": auto.ConfigValue("true"),
            "aws:region": auto.ConfigValue(region),
        })
        result = deploy.up(name, yes=True, on_output=print)
        assert result.result == "succeeded"
        outs = deploy.outputs(name, on_output=print)
        assert deploy.DIGEST_REF_RE.fullmatch(outs.image_ref), outs.image_ref
        uri = outs.tracking_uri.rstrip("/")
        _wait_for_health(f"{uri}/health")

        sm = boto3.client("secretsmanager", region_name=region)
        admin = json.loads(sm.get_secret_value(SecretId=outs.admin_secret_arn)["SecretString"])
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin["username"])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin["password"])
        # Through the server's proxy: this client has no route to S3 (DESIGN §4).
        monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "false")
        monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(f"e2e-{name}")
        artifact = tmp_path / "hello.txt"
        artifact.write_text("hello from the e2e test\n")
        with mlflow.start_run() as run:
            mlflow.log_param("stack", name)
            mlflow.log_metric("answer", 42.0)
            mlflow.log_artifact(str(artifact))

        client = mlflow.MlflowClient()
        got = client.get_run(run.info.run_id)
        assert got.data.params["stack"] == name and got.data.metrics["answer"] == 42.0
        back = Path(client.download_artifacts(run.info.run_id, "hello.txt", str(tmp_path / "dl")))
        assert back.read_text() == artifact.read_text()
    finally:
        try:
            deploy.destroy(name, yes=True, on_output=print)
        finally:
            stack.workspace.remove_stack(name)
