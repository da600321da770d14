"""The database admin step, run by ``pulumi up`` as a one-off ECS task and waited for.

What the step does is the image's (``python3 /app/entrypoint.py admin``, README "The admin step"):
as the master user, over TLS, it creates the databases and the application user, grants it exactly
read/write on the tracking and auth databases, sets its password from its secret (generating and
storing one the first time) and upgrades both schemas under the schema lock. Exit 0 = done.

How it runs (this module): :class:`DatabaseAdminRun`, a dynamic resource, calls ECS ``RunTask`` for
the admin task definition (Fargate, the service's task subnets and security group, a public IP
only with ``assign_public_ip`` (``taskSubnets: public``), the service's cluster), then polls ``DescribeTasks`` every :data:`POLL_SECONDS` until the task
is STOPPED, at most ``timeout_seconds`` (default :data:`DEFAULT_TIMEOUT_SECONDS`). It succeeds only
when the admin container's ``exitCode`` is 0; otherwise it raises with the exit code (or, for a
task that never started, ECS's ``stopCode``/``stoppedReason``) and the last :data:`LOG_LINES` lines
of the container's CloudWatch log stream (``<prefix>/<container>/<task id>``). A task still running
at the timeout is left alone (a migration cut in the middle is worse than one left to finish); the
error names it.

Upgrades (:mod:`components.upgrade`): the step exits 3, changing nothing, when an existing schema
is below the image's heads. Only then does the resource stop the cluster's services, take a
cluster snapshot, run the task again with the command ``admin --upgrade`` and start the new server
task definition (input ``server_task_definition``) with the count the services had. Exit 0 (heads
equal, or a fresh database) stops nothing.

When it runs: on create, and again whenever the admin task definition's ARN, the ECS cluster or
the DB cluster (``db_cluster``, its identifier: a restore replaces it) changes; other input changes
are recorded without a run. Delete does nothing. The ECS service depends on this resource, so no server task of a new
image starts before its schemas are in place; and because it is a task of its own, it also runs
with the service scaled to zero (upgrades with every writer stopped). Chosen over an init
container in the server's task: that would run the step once per task start (N tasks = N
concurrent migrations, and master credentials in every task) and not with the service stopped.
Run it by hand: ``pulumi up --replace '<urn of ...-dbadmin-run>'`` or ``aws ecs run-task`` with
the same network configuration.

Permissions of whoever runs ``pulumi up`` (besides what the AWS provider needs): ``ecs:RunTask``
on the admin task definition, ``ecs:DescribeTasks`` on the cluster's tasks, ``iam:PassRole`` on the
admin task's execution role and task role, ``logs:GetLogEvents`` on the service's log group; for
an upgrade also those listed in :mod:`components.upgrade` (docs/upgrading.md).
Credentials: boto3's default chain of the process running ``pulumi`` (as for
:mod:`components.ecr_copy`). The provider is pickled by reference: keep this module importable as
``components.admin_task`` with no side effects on import, and keep the class names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, Optional

import boto3
import pulumi
import pulumi.dynamic as dyn
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from components.upgrade import UPGRADE_COMMAND, UPGRADE_EXIT, Clients, UpgradeError, upgrade

DEFAULT_TIMEOUT_SECONDS = 20 * 60
"""How long ``pulumi up`` waits for the admin task: image pull (about 5 min, as for the server), the
database's wait (``MLFLOW_DB_WAIT_SECONDS``, 300 s by default, for a resuming 0-ACU cluster or a new
writer), and the migrations themselves."""
TIMEOUT_RANGE = (60, 4 * 3600)
POLL_SECONDS = 6
"""DescribeTasks interval (the one boto3's ``tasks_stopped`` waiter uses)."""
LOG_LINES = 20
"""Log lines quoted when the step fails."""
LOG_ATTEMPTS = 3
"""GetLogEvents attempts while a stream that should exist is missing or empty (ingestion lag)."""
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
"""What the engine passes for a value not known yet (``pulumi.runtime.rpc.UNKNOWN``)."""
RERUN_ON = ("task_definition", "cluster", "db_cluster")
"""Inputs whose change runs the step again."""
RECORDED = ("server_task_definition", "region", "subnets", "security_groups", "container_name", "log_group", "log_stream_prefix",
            "timeout_seconds", "assign_public_ip")
"""Inputs whose change is recorded without a run (the engine's ``__provider`` blob is neither)."""

ClientsFor = Callable[[str], Any]
"""Region -> :class:`components.upgrade.Clients` (or an ``(ecs, logs)`` pair): boto3's, or stand-ins."""
OUTPUTS = ("task_arn", "exit_code", "stopped_at", "check_exit_code", "upgrade")
"""What a run records (kept by an update that does not run the step)."""


class AdminStepError(Exception):
    """The admin step did not succeed. The message names the task and why; a failed container's
    last log lines follow on further lines."""


def boto_clients(region: str) -> Clients:
    """boto3's ECS, CloudWatch Logs, RDS and Application Auto Scaling clients for ``region``, bounded
    timeouts, standard retries."""
    config = Config(connect_timeout=20, read_timeout=60, retries={"max_attempts": 5, "mode": "standard"})
    return Clients(*(boto3.client(name, region_name=region, config=config)
                     for name in ("ecs", "logs", "rds", "application-autoscaling")))


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _client_error(err: Exception) -> str:
    """``<AWS error code>: <message>`` on one line."""
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return f"{error.get('Code', '?')}: {_one_line(error.get('Message', err))}"
    return f"{type(err).__name__}: {_one_line(err)}"


def run_admin_task(ecs: Any, logs: Any, props: dict[str, Any], *, clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep, command: Optional[list[str]] = None,
                   ok_codes: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Start the admin task (``command`` overrides the container's), wait until it stopped, require an
    exit code in ``ok_codes``.

    :returns: ``{"task_arn", "exit_code", "stopped_at"}``.
    :raises AdminStepError: ECS refused or could not place the task, the task did not stop within
        ``timeout_seconds``, or the admin container exited non-zero or never started.
    """
    extra = {}
    if command is not None:
        extra["overrides"] = {"containerOverrides": [{"name": props["container_name"], "command": list(command)}]}
    try:
        started = ecs.run_task(
            cluster=props["cluster"], taskDefinition=props["task_definition"], launchType="FARGATE",
            platformVersion="LATEST", count=1, startedBy="pulumi-db-admin",
            networkConfiguration={"awsvpcConfiguration": {
                "subnets": list(props["subnets"]), "securityGroups": list(props["security_groups"]),
                "assignPublicIp": "ENABLED" if props.get("assign_public_ip") else "DISABLED"}}, **extra)
    except (ClientError, BotoCoreError) as err:
        raise AdminStepError(f"database admin step: ECS refused to start {props['task_definition']}: "
                             f"{_client_error(err)}") from None
    if not started.get("tasks"):
        reasons = "; ".join(_one_line(f"{f.get('reason', '?')} {f.get('detail', '')}".strip())
                            for f in started.get("failures") or []) or "no task and no reason"
        raise AdminStepError(f"database admin step: ECS could not start {props['task_definition']}: {reasons}")
    task_arn = started["tasks"][0]["taskArn"]
    task_id = task_arn.rsplit("/", 1)[1]
    timeout = float(props.get("timeout_seconds") or DEFAULT_TIMEOUT_SECONDS)
    try:
        task, status = _wait_stopped(ecs, props["cluster"], task_arn, timeout, clock, sleep)
    except ClientError as err:  # refused after boto3's retries (e.g. no ecs:DescribeTasks): waiting cannot help
        raise AdminStepError(f"database admin step: cannot follow task {task_arn} (it keeps running): "
                             f"{_client_error(err)}") from None
    if task is None:
        raise AdminStepError(
            f"database admin step: task {task_arn} not stopped after {timeout:g} s (last status {status}); it keeps "
            f"running: follow it with `aws ecs describe-tasks --cluster {props['cluster']} --tasks {task_arn}`; "
            f"the next `pulumi up` runs the step again{_log_tail(logs, props, task_id, sleep, attempts=1)}")
    container = next((c for c in task.get("containers", []) if c.get("name") == props["container_name"]), {})
    exit_code = container.get("exitCode")
    if exit_code in ok_codes:
        return {"task_arn": task_arn, "exit_code": exit_code, "stopped_at": str(task.get("stoppedAt", ""))}
    stopped = f"{task.get('stopCode', '?')}: {_one_line(task.get('stoppedReason', ''))}"
    if exit_code is None:
        why = (f"task {task_id} stopped with no exit code of container {props['container_name']!r} (it never "
               f"started): {stopped}")
        if container.get("reason"):
            why += f" (container: {_one_line(container['reason'])})"
        tail = _log_tail(logs, props, task_id, sleep, attempts=1)
    else:
        why = f"task {task_id}: container {props['container_name']!r} exited with exit code {exit_code} ({stopped})"
        tail = _log_tail(logs, props, task_id, sleep, attempts=LOG_ATTEMPTS)
    raise AdminStepError(f"database admin step failed: {why}{tail}")


def _wait_stopped(ecs: Any, cluster: str, task_arn: str, timeout: float, clock: Callable[[], float],
                  sleep: Callable[[float], None]) -> tuple[Optional[dict[str, Any]], str]:
    """Poll until the task is STOPPED: ``(task, "STOPPED")``, or ``(None, last status)`` at the deadline."""
    deadline = clock() + timeout
    status = "PROVISIONING"
    while True:
        try:
            found = ecs.describe_tasks(cluster=cluster, tasks=[task_arn]).get("tasks") or []
        except BotoCoreError as err:  # no answer after boto3's retries: keep waiting until the deadline
            found, status = [], f"{status.split(' (')[0]} (DescribeTasks: {_client_error(err)})"
        if found:  # else MISSING: ECS is eventually consistent right after RunTask
            status = found[0].get("lastStatus", status)
            if status == "STOPPED":
                return found[0], status
        if clock() >= deadline:
            return None, status
        sleep(max(1.0, min(POLL_SECONDS, deadline - clock())))


def _log_tail(logs: Any, props: dict[str, Any], task_id: str, sleep: Callable[[float], None], attempts: int) -> str:
    """A newline, then the last :data:`LOG_LINES` lines of the container's stream (or why there are none)."""
    stream = f"{props['log_stream_prefix']}/{props['container_name']}/{task_id}"
    where = f"log group {props['log_group']}, stream {stream}"
    for attempt in range(attempts):
        try:
            events = logs.get_log_events(logGroupName=props["log_group"], logStreamName=stream,
                                         startFromHead=False, limit=LOG_LINES).get("events") or []
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                return f"\n(cannot read {where}: {_client_error(err)})"
            events = []
        except BotoCoreError as err:
            return f"\n(cannot read {where}: {_client_error(err)})"
        if events:
            lines = [str(e.get("message", "")).rstrip("\n") for e in events][-LOG_LINES:]
            return f"\nlast {len(lines)} lines of {where}:\n" + "\n".join(f"  {line}" for line in lines)
        if attempt + 1 < attempts:
            sleep(5)  # CloudWatch Logs ingests a few seconds after the container wrote
    return f"\n(no log stream {stream} in {props['log_group']}, or it is empty: the container wrote nothing)"


# --------------------------------------------------------------------------- the Pulumi resource


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _known(value: Any) -> bool:
    return value is not None and value != UNKNOWN and not (isinstance(value, list) and UNKNOWN in value)


class DatabaseAdminRunProvider(dyn.ResourceProvider):
    """Dynamic provider behind :class:`DatabaseAdminRun` (see the module docstring)."""

    serialize_as_secret_always = False

    def __init__(self, clients: Optional[ClientsFor] = None, clock: Optional[Callable[[], float]] = None,
                 sleep: Optional[Callable[[float], None]] = None,
                 now: Optional[Callable[[], datetime]] = None) -> None:
        super().__init__()
        self._clients, self._clock, self._sleep, self._now = clients, clock, sleep, now

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        failures = []
        timeout = news.get("timeout_seconds")
        if _known(timeout) and not (isinstance(timeout, (int, float)) and
                                    TIMEOUT_RANGE[0] <= timeout <= TIMEOUT_RANGE[1]):
            failures.append(dyn.CheckFailure("timeout_seconds", f"{TIMEOUT_RANGE[0]} to {TIMEOUT_RANGE[1]} seconds, "
                                                                f"got {timeout!r}"))
        for key in ("subnets", "security_groups"):
            if _known(news.get(key)) and not news.get(key):
                failures.append(dyn.CheckFailure(key, "at least one"))
        for key in ("container_name", "log_group", "log_stream_prefix", "region", "db_cluster",
                    "server_task_definition"):
            if _known(news.get(key)) and not news.get(key):
                failures.append(dyn.CheckFailure(key, "required"))
        return dyn.CheckResult(news, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        replaces = [k for k in RERUN_ON if olds.get(k) != news.get(k)]
        changed = replaces or [k for k in RECORDED if olds.get(k) != news.get(k)]
        return dyn.DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        """Run the step; on exit 3 (an upgrade), the upgrade path of :mod:`components.upgrade`."""
        clients = (self._clients or boto_clients)(props["region"])
        if isinstance(clients, tuple):
            clients = Clients(*clients)
        clock, sleep = self._clock or time.monotonic, self._sleep or time.sleep
        try:
            result = run_admin_task(clients.ecs, clients.logs, props, clock=clock, sleep=sleep,
                                    ok_codes=(0, UPGRADE_EXIT))
            outs = {**result, "check_exit_code": result["exit_code"], "upgrade": None}
            if result["exit_code"] == UPGRADE_EXIT:
                done = upgrade(clients, props, now=(self._now or _utcnow)(), clock=clock, sleep=sleep,
                               migrate=lambda: run_admin_task(clients.ecs, clients.logs, props, clock=clock,
                                                              sleep=sleep, command=UPGRADE_COMMAND))
                outs.update(task_arn=done["migration_task_arn"], exit_code=0, upgrade=done)
        except (AdminStepError, UpgradeError) as err:
            raise type(err)(str(err)) from None  # the engine shows the traceback: keep it to the message
        return dyn.CreateResult(outs["task_arn"], {**props, **outs})

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.UpdateResult:
        """Inputs that do not run the step again (see :data:`RERUN_ON`): recorded as they are."""
        return dyn.UpdateResult({**news, **{k: olds.get(k) for k in OUTPUTS}})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Nothing to undo: the task has stopped; its log stream expires with the log group's retention."""


class DatabaseAdminRun(dyn.Resource, module="mlflowtracking", name="DatabaseAdminRun"):
    """One successful run of the admin task definition (type token
    ``pulumi-python:dynamic/mlflowtracking:DatabaseAdminRun``)."""

    task_arn: pulumi.Output[str]
    """The ECS task that ran the step (also the resource's ID)."""
    exit_code: pulumi.Output[int]
    """Always 0 (a failed step fails the update)."""
    check_exit_code: pulumi.Output[int]
    """The first run's exit code: 0, or 3 when an upgrade followed."""
    upgrade: pulumi.Output[Optional[dict]]
    """``None``, or what the upgrade did: ``snapshot_identifier``, ``snapshot_arn``, ``stopped_tasks``,
    ``migration_task_arn``, ``services`` (name, count, task definition started)."""

    def __init__(self, name: str, *, region: str, cluster: pulumi.Input[str], task_definition: pulumi.Input[str],
                 subnets: list[pulumi.Input[str]], security_groups: list[pulumi.Input[str]], container_name: str,
                 log_group: pulumi.Input[str], log_stream_prefix: str, db_cluster: pulumi.Input[str],
                 server_task_definition: pulumi.Input[str], timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
                 assign_public_ip: bool = False, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        if not TIMEOUT_RANGE[0] <= timeout_seconds <= TIMEOUT_RANGE[1]:
            raise ValueError(f"timeout_seconds: {TIMEOUT_RANGE[0]} to {TIMEOUT_RANGE[1]}, got {timeout_seconds!r}")
        super().__init__(DatabaseAdminRunProvider(), name, {
            "region": region, "cluster": cluster, "task_definition": task_definition, "subnets": subnets,
            "security_groups": security_groups, "container_name": container_name, "log_group": log_group,
            "log_stream_prefix": log_stream_prefix, "timeout_seconds": timeout_seconds, "db_cluster": db_cluster,
            "server_task_definition": server_task_definition, "assign_public_ip": assign_public_ip,
            **{k: None for k in OUTPUTS},
        }, opts)
