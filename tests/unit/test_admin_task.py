"""The admin step's runner: one ECS task started with RunTask and waited for until it stopped.

Runs ``components.admin_task`` against ``tests/unit/fake_ecs.py``, a stand-in as strict as the
*Amazon ECS API Reference* and the *CloudWatch Logs API Reference* (task lifecycle, ``MISSING`` right
after RunTask, no exit code for a container that never started, a log stream only once the
container ran), on a clock of its own.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from pulumi.runtime.rpc import UNKNOWN

from components import admin_task
from components.admin_task import (DEFAULT_TIMEOUT_SECONDS, LOG_LINES, AdminStepError, DatabaseAdminRunProvider,
                                   run_admin_task)
from tests.unit.fake_ecs import LIFECYCLE, REGION, FakeAws, Outcome

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTAINER = "mlflow-admin"
GROUP = "mlflow-service-logs-1a2b3c4d"
PREFIX = "admin"
SUBNETS = ["subnet-prv-a", "subnet-prv-b"]
SERVICE_SG = "sg-service0001"
CANNOT_PULL = ("CannotPullContainerError: pull image manifest has been retried 5 time(s): failed to resolve ref "
               "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow@sha256:0000: not found")


@pytest.fixture
def aws() -> FakeAws:
    return FakeAws()


def props(aws: FakeAws, revision: int = 1, **kw) -> dict:
    cluster = aws.cluster("mlflow-service-cluster-1a2b")
    definition = aws.task_definition("mlflow-tracking-dev-mlflow-service-admin", CONTAINER, GROUP, PREFIX, revision)
    return {"region": REGION, "cluster": cluster, "task_definition": definition, "subnets": SUBNETS,
            "security_groups": [SERVICE_SG], "container_name": CONTAINER, "log_group": GROUP,
            "log_stream_prefix": PREFIX, "timeout_seconds": DEFAULT_TIMEOUT_SECONDS, **kw}


def provider(aws: FakeAws) -> DatabaseAdminRunProvider:
    return DatabaseAdminRunProvider(clients=lambda region: (aws.ecs(), aws.logs()), clock=aws.clock.time,
                                    sleep=aws.clock.sleep)


def run(aws: FakeAws, p: dict) -> dict:
    return run_admin_task(aws.ecs(), aws.logs(), p, clock=aws.clock.time, sleep=aws.clock.sleep)


def failure(aws: FakeAws, p: dict) -> str:
    with pytest.raises(AdminStepError) as err:
        run(aws, p)
    return str(err.value)


def test_a_successful_run_is_one_fargate_task_in_the_private_subnets_waited_for_until_stopped(aws):
    """ECS API Reference, RunTask: FARGATE, ``awsvpcConfiguration`` with the service's private subnets
    and security group (which the database admits), no public IP; the command comes from the task
    definition. ECS Developer Guide, "Amazon ECS task lifecycle": done means ``lastStatus`` STOPPED."""
    p = props(aws)
    outs = run(aws, p)

    (req,) = aws.ops("RunTask")
    assert req["cluster"] == p["cluster"] and req["taskDefinition"] == p["task_definition"]
    assert req["launchType"] == "FARGATE" and req["count"] == 1
    assert req["networkConfiguration"] == {"awsvpcConfiguration": {
        "subnets": SUBNETS, "securityGroups": [SERVICE_SG], "assignPublicIp": "DISABLED"}}
    assert "overrides" not in req  # same command and settings as the registered task definition
    (task,) = aws.tasks.values()
    assert outs["task_arn"] == task.arn and outs["exit_code"] == 0
    assert aws.status(task) == "STOPPED"
    assert aws.clock.time() >= sum(task.outcome.durations)
    assert max(aws.clock.sleeps) <= admin_task.POLL_SECONDS


def test_the_first_describe_may_not_know_the_task_yet(aws):
    """ECS is eventually consistent: DescribeTasks right after RunTask may answer ``MISSING``."""
    aws.outcomes.append(Outcome(missing_polls=3))
    assert run(aws, props(aws))["exit_code"] == 0


def test_a_failed_admin_step_fails_with_its_exit_code_and_the_last_log_lines(aws):
    """The contract: exit 2 and one line on stderr. The awslogs stream is ``<prefix>/<container>/<task
    id>`` (ECS Developer Guide, "Using the awslogs log driver"); GetLogEvents with
    ``startFromHead=False`` returns the newest events."""
    lines = tuple(f"[admin] step {i}" for i in range(30)) + ("[admin] error: user mlflow may not CREATE USER",)
    aws.outcomes.append(Outcome(exit_code=2, log_lines=lines))
    p = props(aws)
    msg = failure(aws, p)

    (task,) = aws.tasks.values()
    task_id = task.arn.rsplit("/", 1)[1]
    assert "exit code 2" in msg and task_id in msg
    assert "[admin] error: user mlflow may not CREATE USER" in msg
    assert f"[admin] step {31 - LOG_LINES}" in msg and f"[admin] step {30 - LOG_LINES}\n" not in msg + "\n"
    (logs,) = aws.ops("GetLogEvents")
    assert logs == {"logGroupName": GROUP, "logStreamName": f"{PREFIX}/{CONTAINER}/{task_id}",
                    "startFromHead": False, "limit": LOG_LINES}


def test_a_task_that_never_started_reports_what_ecs_says(aws):
    """ECS Developer Guide, "Amazon ECS stopped task error messages": a task that failed to start
    stops with ``stopCode`` TaskFailedToStart, its container has a ``reason`` and no ``exitCode``, and
    the awslogs stream was never created (GetLogEvents: ResourceNotFoundException)."""
    aws.outcomes.append(Outcome(exit_code=None, stop_code="TaskFailedToStart", stopped_reason=CANNOT_PULL,
                                container_reason=CANNOT_PULL, durations=(20, 40, 0, 0, 5, 5, 10)))
    msg = failure(aws, props(aws))
    assert "TaskFailedToStart" in msg and "CannotPullContainerError" in msg
    assert "no exit code" in msg and "no log stream" in msg
    assert "exit code 0" not in msg


def test_the_wait_is_bounded_and_leaves_the_task_alone(aws):
    """A task still running at the timeout fails the update with its ARN and last status; it is not
    stopped (a schema migration cut in the middle is worse than one left to finish; the next run
    waits for the schema lock)."""
    aws.outcomes.append(Outcome(durations=(20, 30, 5, float("inf")), log_lines=("[admin] upgrading the schema",)))
    msg = failure(aws, props(aws, timeout_seconds=600))
    (task,) = aws.tasks.values()
    assert "600 s" in msg and "RUNNING" in msg and task.arn in msg
    assert "[admin] upgrading the schema" in msg
    assert 600 <= aws.clock.time() <= 600 + admin_task.POLL_SECONDS
    assert {op for op, _ in aws.calls} == {"RunTask", "DescribeTasks", "GetLogEvents"}


def test_a_task_ecs_cannot_place_is_reported(aws):
    """ECS API Reference, RunTask: tasks that cannot be placed come back in ``failures``."""
    aws.outcomes.append(Outcome(placement_failure={
        "arn": "arn:aws:ecs:eu-west-1:123456789012:cluster/mlflow-service-cluster-1a2b",
        "reason": "Capacity is unavailable at this time. Please try again later or in a different availability zone"}))
    msg = failure(aws, props(aws))
    assert "Capacity is unavailable" in msg and "\n" not in msg
    assert not aws.ops("DescribeTasks")


def test_a_refused_run_task_is_one_line(aws):
    p = props(aws, cluster="arn:aws:ecs:eu-west-1:123456789012:cluster/gone")
    msg = failure(aws, p)
    assert "ClusterNotFoundException" in msg and "\n" not in msg


@pytest.mark.parametrize("op", ["DescribeTasks", "GetLogEvents"])
def test_missing_permissions_of_whoever_runs_pulumi_fail_at_once_and_say_so(aws, op):
    """IAM: without ``ecs:DescribeTasks`` the step cannot be followed (fail now, not after the
    timeout); without ``logs:GetLogEvents`` a failed step still reports its exit code."""
    aws.denied.add(op)
    aws.outcomes.append(Outcome(exit_code=3, log_lines=("[admin] error",)))
    msg = failure(aws, props(aws))
    assert "AccessDeniedException" in msg and f":{op}" in msg
    if op == "DescribeTasks":
        assert aws.clock.time() < 60 and "\n" not in msg and "keeps running" in msg
    else:
        assert "exit code 3" in msg and "cannot read" in msg


# --------------------------------------------------------------------------- the dynamic provider


def test_create_runs_the_step_and_the_task_is_the_id(aws):
    created = provider(aws).create(props(aws))
    (task,) = aws.tasks.values()
    assert created.id == task.arn and created.outs["task_arn"] == task.arn and created.outs["exit_code"] == 0


def test_create_fails_the_update_when_the_step_fails(aws):
    aws.outcomes.append(Outcome(exit_code=2, log_lines=("[admin] error: cannot reach the database",)))
    with pytest.raises(AdminStepError, match="exit code 2"):
        provider(aws).create(props(aws))


def test_it_runs_again_only_when_the_task_definition_changes(aws):
    """A new image digest or new admin settings register a new task definition revision (a new
    ARN): run again. Anything else (timeout, subnets) is recorded without running."""
    p = provider(aws)
    old = p.create(props(aws)).outs
    assert p.diff("id", old, props(aws)).changes is False
    # the engine passes the pickled provider as __provider; another dill's bytes are no reason to run
    assert p.diff("id", {**old, "__provider": "b2xk"}, {**props(aws), "__provider": "bmV3"}).changes is False
    new_revision = p.diff("id", old, props(aws, revision=2))
    assert new_revision.changes is True and new_revision.replaces == ["task_definition"]
    assert new_revision.delete_before_replace is False
    preview = p.diff("id", old, {**props(aws), "task_definition": UNKNOWN})
    assert preview.replaces == ["task_definition"]
    other = p.diff("id", old, props(aws, timeout_seconds=900))
    assert other.changes is True and other.replaces == []
    runs = len(aws.ops("RunTask"))
    updated = p.update("id", old, props(aws, timeout_seconds=900))
    assert len(aws.ops("RunTask")) == runs and updated.outs["task_arn"] == old["task_arn"]
    assert updated.outs["timeout_seconds"] == 900


def test_delete_does_nothing(aws):
    p = provider(aws)
    created = p.create(props(aws))
    aws.calls.clear()
    p.delete(created.id, created.outs)
    assert aws.calls == []


@pytest.mark.parametrize("bad", [{"timeout_seconds": 0}, {"timeout_seconds": 86400}, {"subnets": []},
                                 {"security_groups": []}, {"container_name": ""}])
def test_check_refuses_inputs_that_cannot_run(aws, bad):
    (fail,) = provider(aws).check({}, props(aws, **bad)).failures
    assert fail.property == next(iter(bad)) and "\n" not in fail.reason


def test_check_accepts_unknowns_at_preview(aws):
    p = {**props(aws), "task_definition": UNKNOWN, "subnets": UNKNOWN, "cluster": UNKNOWN}
    assert provider(aws).check({}, p).failures == []


def test_the_engine_loads_the_provider_by_reference_from_the_project():
    """Pulumi stores the provider pickled (dill) in the state and loads it in another process:
    by reference, so the state holds no bytecode (see test_ecr_copy.py)."""
    from pulumi.dynamic.dynamic import serialize_provider

    blob = serialize_provider(DatabaseAdminRunProvider())
    assert len(base64.b64decode(blob)) < 400, "the provider was pickled by value"
    code = ("import base64, dill, sys; p = dill.loads(base64.b64decode(sys.argv[1])); "
            "print(type(p).__module__ + '.' + type(p).__qualname__)")
    out = subprocess.run([sys.executable, "-c", code, blob], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "components.admin_task.DatabaseAdminRunProvider", out.stderr[-2000:]


def test_boto3_clients_have_bounded_timeouts(monkeypatch):
    seen = []

    def fake_client(service, region_name, config):
        seen.append((service, region_name, config.connect_timeout, config.read_timeout))
        return object()

    monkeypatch.setattr(admin_task.boto3, "client", fake_client)
    admin_task.boto_clients("eu-central-1")
    assert sorted(s for s, *_ in seen) == ["application-autoscaling", "ecs", "logs", "rds"]
    assert all(r == "eu-central-1" and 0 < c <= 60 and 0 < t <= 120 for _, r, c, t in seen)


def test_the_lifecycle_the_stand_in_walks_is_ecss():
    assert LIFECYCLE[0] == "PROVISIONING" and "RUNNING" in LIFECYCLE and LIFECYCLE[-1] == "DEPROVISIONING"
