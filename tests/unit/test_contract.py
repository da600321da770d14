"""The container contract (docs/container-contract.md) is the one list of variables: each task
definition (the server's, the database admin step's) sets exactly what the table says it sets, each
the way it says (``environment`` or ``secrets``), and the image's entrypoint reads no name the table
lacks. "Set on AWS by" cells: ``task `environment``` (server), ``both tasks' `environment``` (server
and admin step), ``admin task `environment``` (admin step only), ``Secret`` (server) and ``admin task
Secret`` (admin step only)."""

from __future__ import annotations

import re

import pytest

from tests.unit.harness import ROOT

CONTRACT = ROOT / "docs" / "container-contract.md"
ENTRYPOINT = ROOT / "image" / "entrypoint.py"


def contract_rows() -> dict[str, str]:
    """variable -> 'Set on AWS by' cell."""
    section = CONTRACT.read_text()
    rows = {}
    for line in section.splitlines():
        m = re.match(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|(.*)\|\s*$", line)
        if m:
            rows[m.group(1)] = m.group(2).split("|")[-1].strip()
    return rows


SERVER_ENV = ("task `environment`", "both tasks' `environment`")
ADMIN_ENV = ("admin task `environment`", "both tasks' `environment`")


def task_container(run, task: str = "mlflow-service-task"):
    (c,) = run.named(task).container_definitions()
    return c


@pytest.fixture(scope="module")
def rows():
    rows = contract_rows()
    assert len(rows) > 20, "contract table not parsed"
    return rows


def test_task_environment_is_exactly_the_contracts_environment_rows(rows, dev, prod):
    wanted = {k for k, v in rows.items() if v.startswith(SERVER_ENV)}
    for run in (dev, prod):
        env = {e["name"] for e in task_container(run)["environment"]}
        assert env == wanted, f"not in the contract: {env - wanted}; missing: {wanted - env}"


def test_task_secrets_are_exactly_the_contracts_secret_rows(rows, dev, prod):
    wanted = {k for k, v in rows.items() if v.startswith("Secret")}
    assert wanted == {"MLFLOW_DB_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
                      "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    for run in (dev, prod):
        assert {s["name"] for s in task_container(run)["secrets"]} == wanted


@pytest.mark.skipif(not ENTRYPOINT.exists(), reason="image/entrypoint.py not written yet")
def test_entrypoint_reads_only_contract_names(rows):
    # entrypoint.py and the modules it imports its steps from (image/env_settings.py, server_launch.py, ...)
    source = ENTRYPOINT.read_text()
    modules = [ENTRYPOINT.parent / f"{m}.py" for m in re.findall(r"^from (\w+) import", source, re.M)]
    assert any(m.name == "env_settings.py" for m in modules), modules  # where Settings reads the environment
    source += "".join(m.read_text() for m in modules if m.exists())
    used = set(re.findall(r"""["'](MLFLOW_[A-Z0-9_]+|AWS_REGION)["']""", source))
    # Variables MLflow itself defines and the entrypoint may set for the server process are
    # documented by MLflow; the contract lists what crosses the image boundary.
    crossing = {u for u in used if u.startswith(("MLFLOW_DB_", "MLFLOW_AUTH_", "MLFLOW_LB_", "MLFLOW_SPOOL",
                                                 "MLFLOW_STATE"))}
    assert crossing <= set(rows), f"entrypoint reads names missing from the contract table (docs/container-contract.md): {crossing - set(rows)}"


def test_admin_task_environment_is_exactly_the_contracts_admin_rows(rows, dev, prod):
    wanted = {k for k, v in rows.items() if v.startswith(ADMIN_ENV)}
    assert {"MLFLOW_DB_APP_SECRET_ARN", "MLFLOW_DB_TLS_CA", "MLFLOW_DB_USER"} <= wanted
    for run in (dev, prod):
        env = {e["name"] for e in task_container(run, "mlflow-service-dbadmin-task")["environment"]}
        assert env == wanted, f"not in the contract: {env - wanted}; missing: {wanted - env}"


def test_admin_task_secrets_are_exactly_the_contracts_admin_secret_rows(rows, dev, prod):
    wanted = {k for k, v in rows.items() if v.startswith("admin task Secret")}
    assert wanted == {"MLFLOW_DB_ADMIN_USER", "MLFLOW_DB_ADMIN_PASSWORD"}
    for run in (dev, prod):
        assert {s["name"] for s in task_container(run, "mlflow-service-dbadmin-task")["secrets"]} == wanted
