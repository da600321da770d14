"""The connection budget the program promises, as the image delivers it: every engine a worker
opens (tracking, model registry, basic-auth; the jobs store with the job runner), the pool exactly
as configured, and the idle release that lets a 0-ACU database pause (Amazon Aurora User Guide,
"Scaling to Zero ACUs with automatic pause and resume for Aurora Serverless v2": it pauses only
when no user connection is open). tests/server/test_db_pools.py and test_db_idle.py measure the
same numbers against real databases."""

from __future__ import annotations

import pytest

import config
from components.sizing import pool_sizing, task_connections
from tests.unit.conftest import run_program


def env_of(run) -> dict[str, str]:
    (c,) = run.named("mlflow-service-task").container_definitions()
    return {e["name"]: e["value"] for e in c["environment"]}


def test_one_task_is_every_engine_of_every_worker_plus_the_server_process():
    assert task_connections(workers=2, pool_size=10, max_overflow=0) == 2 * 3 * 10 + 3
    assert task_connections(workers=2, pool_size=5, max_overflow=5) == 2 * 3 * 10 + 3
    assert task_connections(workers=2, pool_size=10, max_overflow=0, job_execution=True) == 2 * 4 * 10 + 3


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_stack_file_fits_aurora_at_full_scale_out(stack, dev, prod):
    run = {"dev": dev, "prod": prod}[stack]
    s = config.load_settings({k.split(":", 1)[1]: v for k, v in _stack_raw(stack).items()})
    p = pool_sizing(engine=s.db_engine, min_acu=s.db_min_acu, max_acu=s.db_max_acu, max_tasks=s.max_tasks,
                    workers=s.server_workers, job_execution=s.enable_job_execution)
    env = env_of(run)
    assert (env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"], env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]) == (
        str(p.pool_size), str(p.max_overflow))
    assert p.fleet_connections == s.max_tasks * task_connections(
        workers=s.server_workers, pool_size=p.pool_size, max_overflow=p.max_overflow)
    assert p.fleet_connections <= 0.8 * p.connection_limit - 5


def _stack_raw(stack: str) -> dict:
    from tests.unit.conftest import PROD_OVERRIDES
    from tests.unit.harness import stack_config

    raw = stack_config(stack, **(PROD_OVERRIDES if stack == "prod" else {}))
    return {k: v for k, v in raw.items() if k.startswith(config.NAMESPACE + ":")}


def test_the_idle_release_setting_reaches_the_server_container(dev, prod):
    assert env_of(dev)["MLFLOW_DB_IDLE_RELEASE_SECONDS"] == "300"
    assert env_of(prod)["MLFLOW_DB_IDLE_RELEASE_SECONDS"] == "300"  # the default
    run = run_program("dev", dbIdleReleaseSeconds="0")
    assert env_of(run)["MLFLOW_DB_IDLE_RELEASE_SECONDS"] == "0"


@pytest.mark.parametrize("value", ["-1", "86401", "5m"])
def test_a_bad_idle_release_is_refused_with_the_key(value):
    with pytest.raises(config.SettingsError, match=f"{config.NAMESPACE}:dbIdleReleaseSeconds"):
        config.load_settings({"allowedCidrs": "10.0.0.0/8", "dbIdleReleaseSeconds": value})


@pytest.mark.parametrize("jobs,pools", [("false", "3 pools"), ("true", "4 pools with enableJobExecution")])
def test_a_fleet_too_big_for_aurora_says_how_many_pools_a_worker_holds(jobs, pools):
    with pytest.raises(config.SettingsError) as info:
        config.load_settings({"allowedCidrs": "10.0.0.0/8", "maxTasks": "12", "minTasks": "1", "serverWorkers": "4",
                              "dbMaxAcu": "1", "dbMinAcu": "0.5", "enableJobExecution": jobs})
    assert f"each worker holds {pools}" in str(info.value)
