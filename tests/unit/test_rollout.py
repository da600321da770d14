"""A deployment that fails must fail ``pulumi up``, and one that succeeds must not cut what is in
flight: ordering, steady-state wait and its time budget, draining, stopping, task families."""

from __future__ import annotations

import re

import pytest

from tests.unit.harness import Run

ECS_SERVICE = "aws:ecs/service:Service"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVER_TASK, ADMIN_TASK = "mlflow-service-task", "mlflow-service-dbadmin-task"
TG = "aws:lb/targetGroup:TargetGroup"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"

IMAGE_PULL_ALLOWANCE_SECONDS = 300
"""Time allowed for Fargate to pull the server image (about 1 GB) on each task start."""
CIRCUIT_BREAKER_FAILURES = 3
"""ECS Developer Guide, "Amazon ECS deployment circuit breaker": the failure threshold is
0.5 × desired count, at least 3 and at most 200 failed tasks."""


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request, dev, prod) -> tuple[str, Run]:
    return request.param, {"dev": dev, "prod": prod}[request.param]


def image_module(name: str):
    """A module of image/ (the entrypoint and the modules beside it, which import each other)."""
    import importlib
    import sys

    from tests.unit.harness import ROOT

    path = str(ROOT / "image")
    if path not in sys.path:
        sys.path.append(path)
    return importlib.import_module(name)


def seconds(duration: str) -> int:
    """A Pulumi custom timeout (``"30m"``, ``"1h"``, ``"90s"``) in seconds."""
    m = re.fullmatch(r"(\d+)([smh])", duration)
    assert m, f"not a timeout Pulumi accepts: {duration!r}"
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]


def attempt_seconds(r: Run) -> int:
    """One task start until the load balancer sends it traffic, from the graph's own values:
    pull, then the later of the container health check's start period plus its retries and the
    service's grace period, then the target group's healthy threshold."""
    (c,) = r.named(SERVER_TASK).container_definitions()
    hc = c["healthCheck"]
    grace = r.one(ECS_SERVICE).inputs["healthCheckGracePeriodSeconds"]
    tg = r.one(TG).inputs["healthCheck"]
    return (IMAGE_PULL_ALLOWANCE_SECONDS + max(hc["startPeriod"] + hc["retries"] * hc["interval"], grace)
            + tg["healthyThreshold"] * tg["interval"])


def test_service_waits_for_the_database_writer_and_every_secret_value(stack):
    """Aurora creates the cluster (and its endpoint) before the writer instance accepts
    connections (Aurora User Guide, "Creating an Amazon Aurora DB cluster": a cluster has no
    instance until one is added), and ECS reads ``secrets`` from Secrets Manager when a task
    starts (ECS Developer Guide, "Pass Secrets Manager secrets through Amazon ECS environment
    variables"): the service must be created after the writer and after every secret value."""
    _, r = stack
    deps = r.one(ECS_SERVICE).dependencies
    writer = r.named("mlflow-database-writer")
    assert writer.urn in deps, "the ECS service does not wait for the Aurora writer instance"
    versions = r.of_type(SECRET_VERSION)
    assert {v.name for v in versions} == {"mlflow-service-admin-value", "mlflow-service-flask-secret-key-value"}
    assert [v.name for v in versions if v.urn not in deps] == []


def test_a_failed_deployment_fails_the_update(stack):
    """Without ``wait_for_steady_state`` the provider returns as soon as ECS accepts the
    service, so a deployment the circuit breaker rolls back still reports success
    (terraform-provider-aws, ``aws_ecs_service``: "wait_for_steady_state ... Default false";
    default timeouts create/update/delete 20m)."""
    _, r = stack
    svc = r.one(ECS_SERVICE)
    assert svc.inputs["waitForSteadyState"] is True
    assert svc.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}


def test_steady_state_timeouts_cover_a_first_deployment_and_a_drained_update(stack):
    """The wait must outlast what it waits for, or a healthy first deployment is reported as
    failed: create = the circuit breaker's failed attempts (so that ECS, not Pulumi, decides);
    update = that, plus the rollback's start, plus draining the old tasks (target group
    deregistration delay) and stopping them (container ``stopTimeout``); delete = draining plus
    stopping."""
    _, r = stack
    t = r.one(ECS_SERVICE).custom_timeouts
    assert set(t) == {"create", "update", "delete"}, f"custom timeouts: {t}"
    attempt = attempt_seconds(r)
    drain = r.one(TG).inputs["deregistrationDelay"]
    (c,) = r.named(SERVER_TASK).container_definitions()
    stop = c["stopTimeout"]
    assert seconds(t["create"]) >= CIRCUIT_BREAKER_FAILURES * attempt
    assert seconds(t["update"]) >= (CIRCUIT_BREAKER_FAILURES + 1) * attempt + drain + stop
    assert seconds(t["delete"]) >= drain + stop
    assert seconds(t["create"]) >= 20 * 60 and seconds(t["update"]) > 20 * 60  # above the provider's defaults


def test_in_flight_transfers_are_drained_then_stopped_gracefully(stack):
    """A deployment deregisters a task from the target group (in-flight requests continue for up
    to ``deregistration_delay``, ELB User Guide "Deregistration delay": 0-3600 s, default 300),
    then sends SIGTERM and kills after ``stopTimeout`` (ECS task definition parameters: Fargate
    maximum 120 s). 30 s of either cuts a multi-GB artifact transfer through the proxy."""
    _, r = stack
    drain = r.one(TG).inputs["deregistrationDelay"]
    assert 600 <= drain <= 3600
    (c,) = r.named(SERVER_TASK).container_definitions()
    assert c["stopTimeout"] == 120


def test_no_privileged_field_in_a_fargate_container(stack):
    """ECS Developer Guide, task definition parameters, ``privileged``: "not supported for
    Windows containers or tasks run on AWS Fargate"."""
    _, r = stack
    (c,) = r.named(SERVER_TASK).container_definitions()
    assert "privileged" not in c


def test_dev_and_prod_task_families_differ(dev, prod):
    """Task definition families are per account and region (ECS Developer Guide, "family"): two
    stacks in one account must not register revisions of one family."""
    families = {r.named(t).inputs["family"] for r in (dev, prod) for t in (SERVER_TASK, ADMIN_TASK)}
    assert len(families) == 4, families
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{1,255}", f) for f in families)


def test_a_task_waiting_for_its_database_is_not_killed_as_unhealthy(stack):
    """The entrypoint waits up to ``MLFLOW_DB_WAIT_SECONDS`` (image/db_wait.py ``WAIT_DEFAULT``,
    300 s: a new writer instance, a 0-ACU resume) before the server listens. ECS marks a container
    unhealthy after its health check's start period plus ``retries`` failed checks (ECS Developer
    Guide, task definition parameters, ``healthCheck``: startPeriod 0-300 s, failures during it not
    counted), and the service's ``healthCheckGracePeriodSeconds`` is how long ECS ignores the load
    balancer's failed health checks of a new task (ECS Developer Guide, "Service definition
    parameters"). Both must outlast the wait plus the server's own start (~10 s), or a task that is
    correctly waiting for its database is killed and counted by the circuit breaker."""
    db_wait = image_module("db_wait")
    _, r = stack
    (c,) = r.named(SERVER_TASK).container_definitions()
    env = {e["name"]: e["value"] for e in c["environment"]}
    wait = int(env.get("MLFLOW_DB_WAIT_SECONDS", db_wait.WAIT_DEFAULT))
    hc = c["healthCheck"]
    assert hc["startPeriod"] <= 300, "ECS refuses a health check start period above 300 s"
    assert hc["startPeriod"] + hc["retries"] * hc["interval"] >= wait + 30
    assert r.one(ECS_SERVICE).inputs["healthCheckGracePeriodSeconds"] >= wait + 30


def test_the_servers_graceful_shutdown_ends_within_the_stop_timeout(stack):
    """After SIGTERM, ECS kills the container when ``stopTimeout`` runs out (ECS task definition
    parameters: Fargate maximum 120 s). uvicorn's ``--timeout-graceful-shutdown`` (set by the
    entrypoint) is how long in-flight requests may finish: it must use most of that time, since
    a proxied multi-GB transfer takes minutes, and end ~10 s before the kill so the server exits
    cleanly."""
    import shlex
    from types import SimpleNamespace

    opts = shlex.split(image_module("entrypoint").uvicorn_opts(SimpleNamespace(lb_idle=60), ""))
    graceful = int(opts[opts.index("--timeout-graceful-shutdown") + 1])
    _, r = stack
    (c,) = r.named(SERVER_TASK).container_definitions()
    assert c["stopTimeout"] - 15 <= graceful <= c["stopTimeout"] - 5
