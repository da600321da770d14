"""The upgrade path of the database admin step: writers stopped, a cluster snapshot, then the migration.

The admin step (``entrypoint.py admin``) exits :data:`UPGRADE_EXIT` (3), changing nothing, when an
existing MLflow schema (tracking or auth) is below the new image's heads. Only then does
:func:`upgrade` run, from :class:`components.admin_task.DatabaseAdminRunProvider`, in this order:

1. **Stop the writers.** Every service of the ECS cluster (``ListServices``, ``DescribeServices``):
   its ``desiredCount`` is recorded; if Application Auto Scaling has a scalable target for it
   (``DescribeScalableTargets``, resource ``service/<cluster>/<service>``), its ``SuspendedState``
   is recorded and dynamic and scheduled scaling suspended (``RegisterScalableTarget``), so that no
   scale-out (to the target's minimum) starts an old task in the middle of the migration. Then
   ``UpdateService desiredCount=0`` and a bounded wait (:data:`STOP_WAIT_SECONDS`) until every task
   of the service is ``STOPPED`` (ECS Developer Guide, "Amazon ECS task lifecycle": RUNNING ->
   DEACTIVATING (load balancer draining, :data:`~components.load_balancer.DEREGISTRATION_DELAY_SECONDS`)
   -> STOPPING (SIGTERM, then SIGKILL after the container's ``stopTimeout``) -> DEPROVISIONING ->
   STOPPED).
2. **Snapshot.** ``CreateDBClusterSnapshot`` ``<cluster id>-pre-upgrade-<UTC yyyymmddHHMMSS>``
   (tagged), then ``DescribeDBClusterSnapshots`` until ``available`` (bounded,
   :data:`SNAPSHOT_WAIT_SECONDS`).
3. **Migrate.** The admin task again, with the container command overridden to
   :data:`UPGRADE_COMMAND` (``admin --upgrade``). Exit 0 required.
4. **Start the new image.** ``UpdateService`` with the *new* server task definition and the recorded
   count, then the recorded ``SuspendedState`` back. The Pulumi ``aws.ecs.Service`` update that
   follows finds that task definition already in place and waits for the steady state.

Failures: writers that do not stop, or a snapshot that fails or times out, leave the schema
untouched: the services get their recorded count back (their task definition is still the old
image's, which matches the old schema, so restarting it is safe) and scaling resumes, then the
update fails. A failed migration leaves the services at 0 tasks and scaling suspended (an old task
against a half-migrated schema, or a new one against an old schema, are both worse than no task):
the error names the snapshot and points to ``docs/upgrading.md`` "Restore".

Permissions besides the admin step's (:mod:`components.admin_task`): ``ecs:ListServices``,
``ecs:DescribeServices``, ``ecs:UpdateService``, ``ecs:ListTasks``; ``rds:CreateDBClusterSnapshot``,
``rds:DescribeDBClusterSnapshots``, ``rds:AddTagsToResource`` (the snapshot's tags);
``application-autoscaling:DescribeScalableTargets``, ``application-autoscaling:RegisterScalableTarget``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from botocore.exceptions import BotoCoreError, ClientError

from components.container_definition import STOP_TIMEOUT_SECONDS
from components.load_balancer import DEREGISTRATION_DELAY_SECONDS

UPGRADE_EXIT = 3
"""The admin step's exit code for "an existing schema is below the image's heads" (nothing changed)."""
UPGRADE_COMMAND = ["admin", "--upgrade"]
"""The container command of the migration run (the image's entrypoint prefixes it)."""
STOP_WAIT_SECONDS = DEREGISTRATION_DELAY_SECONDS + STOP_TIMEOUT_SECONDS + 300
"""How long the tasks may take to stop: load balancer draining, the container's stop timeout, and
5 minutes of margin for deprovisioning (ENI release)."""
STOP_POLL_SECONDS = 10
SNAPSHOT_WAIT_SECONDS = 60 * 60
"""How long the snapshot may stay ``creating`` (boto3's ``db_cluster_snapshot_available`` waiter
gives up after 30 min; an Aurora snapshot of a large volume can take longer)."""
SNAPSHOT_POLL_SECONDS = 30
"""The interval of boto3's ``db_cluster_snapshot_available`` waiter."""
SNAPSHOT_FAILED = ("failed", "deleted", "deleting", "incompatible-restore", "incompatible-parameters")
"""Statuses that will never become ``available`` (the failure states of boto3's waiter)."""
SUSPEND_ALL = {"DynamicScalingInSuspended": True, "DynamicScalingOutSuspended": True,
               "ScheduledScalingSuspended": True}
NOT_SUSPENDED = {"DynamicScalingInSuspended": False, "DynamicScalingOutSuspended": False,
                 "ScheduledScalingSuspended": False}
RESTORE_DOC = 'docs/upgrading.md "Restore"'
SNAPSHOT_ID_MAX = 63
"""CreateDBClusterSnapshot's limit on ``DBClusterSnapshotIdentifier`` (RDS API Reference; botocore's rds model)."""
SNAPSHOT_TAG = "mlflow-tracking:purpose"


class UpgradeError(Exception):
    """The upgrade path stopped. The first line says what state the stack is left in."""


@dataclass
class Clients:
    """boto3 clients (or stand-ins) of one region."""

    ecs: Any
    logs: Any
    rds: Any = None
    scaling: Any = None


@dataclass
class Writer:
    """One ECS service of the cluster, as it was before the upgrade."""

    arn: str
    name: str
    desired: int
    task_definition: str
    scaling: Optional[dict[str, bool]] = None
    """The scalable target's ``SuspendedState`` before the upgrade; ``None``: no scalable target."""
    tasks: set[str] = field(default_factory=set)


def _err(err: Exception) -> str:
    if isinstance(err, ClientError):
        e = err.response.get("Error", {})
        return f"{e.get('Code', '?')}: {' '.join(str(e.get('Message', err)).split())}"
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def snapshot_identifier(cluster_id: str, now: datetime) -> str:
    """``<cluster id>-pre-upgrade-<UTC yyyymmddHHMMSS>``, valid per CreateDBClusterSnapshot
    (``DBClusterSnapshotIdentifier``: 1-63 letters, digits and hyphens, a letter first, no trailing
    hyphen, no two hyphens in a row; RDS stores it in lower case). 63, not the 255 of a DB
    (instance) snapshot: the cluster id is cut to fit before the suffix."""
    suffix = f"-pre-upgrade-{now.strftime('%Y%m%d%H%M%S')}"
    base = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", cluster_id.lower())).strip("-")
    if not base[:1].isalpha():
        base = f"mlflow-{base}".rstrip("-")
    return base[: SNAPSHOT_ID_MAX - len(suffix)].rstrip("-") + suffix


def _family(task_definition: str) -> str:
    """``arn:...:task-definition/<family>:<revision>`` -> family."""
    return task_definition.rsplit("/", 1)[-1].rsplit(":", 1)[0]


def _cluster_name(cluster_arn: str) -> str:
    return cluster_arn.rsplit("/", 1)[-1]


def _resource_id(cluster_arn: str, service: str) -> str:
    return f"service/{_cluster_name(cluster_arn)}/{service}"


def writers(ecs: Any, cluster: str) -> list[Writer]:
    """The cluster's ACTIVE services (ListServices, paginated; DescribeServices, 10 per call)."""
    arns: list[str] = []
    token: Optional[str] = None
    while True:
        page = ecs.list_services(cluster=cluster, maxResults=100, **({"nextToken": token} if token else {}))
        arns += page.get("serviceArns") or []
        token = page.get("nextToken")
        if not token:
            break
    found = []
    for i in range(0, len(arns), 10):
        for s in ecs.describe_services(cluster=cluster, services=arns[i:i + 10]).get("services") or []:
            if s.get("status") == "ACTIVE":
                found.append(Writer(s["serviceArn"], s["serviceName"], int(s.get("desiredCount", 0)),
                                    s.get("taskDefinition", "")))
    return found


def _service_tasks(ecs: Any, cluster: str, service: str) -> list[str]:
    """The service's tasks that may still run: desired RUNNING, and desired STOPPED (a task ECS was
    already stopping, still draining or within its stop timeout, has desiredStatus STOPPED while its
    lastStatus is not yet; ListTasks returns each desiredStatus separately, RUNNING by default)."""
    arns: list[str] = []
    for desired in ("RUNNING", "STOPPED"):
        token: Optional[str] = None
        while True:
            page = ecs.list_tasks(cluster=cluster, serviceName=service, desiredStatus=desired, maxResults=100,
                                  **({"nextToken": token} if token else {}))
            arns += page.get("taskArns") or []
            token = page.get("nextToken")
            if not token:
                break
    return arns


def _suspend(scaling: Any, cluster: str, w: Writer) -> None:
    rid = _resource_id(cluster, w.name)
    targets = scaling.describe_scalable_targets(ServiceNamespace="ecs", ResourceIds=[rid],
                                                ScalableDimension="ecs:service:DesiredCount").get("ScalableTargets")
    if not targets:
        return
    w.scaling = {**NOT_SUSPENDED, **(targets[0].get("SuspendedState") or {})}
    scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=rid,
                                     ScalableDimension="ecs:service:DesiredCount", SuspendedState=dict(SUSPEND_ALL))


def _resume(scaling: Any, cluster: str, w: Writer) -> None:
    if w.scaling is not None:
        scaling.register_scalable_target(ServiceNamespace="ecs", ResourceId=_resource_id(cluster, w.name),
                                         ScalableDimension="ecs:service:DesiredCount", SuspendedState=dict(w.scaling))


def stop_writers(c: Clients, cluster: str, ws: list[Writer], *, clock: Callable[[], float],
                 sleep: Callable[[float], None], timeout: float = STOP_WAIT_SECONDS) -> int:
    """Suspend scaling, set every service to 0 and wait until all its tasks are STOPPED.

    :returns: how many tasks stopped.
    :raises UpgradeError: a task still not STOPPED after ``timeout`` seconds.
    """
    for w in ws:
        _suspend(c.scaling, cluster, w)
        w.tasks = set(_service_tasks(c.ecs, cluster, w.name))
        c.ecs.update_service(cluster=cluster, service=w.name, desiredCount=0)
    deadline = clock() + timeout
    while True:
        pending: dict[str, str] = {}
        for w in ws:
            w.tasks |= set(_service_tasks(c.ecs, cluster, w.name))  # one started while we stopped the rest
            arns = sorted(w.tasks)
            for i in range(0, len(arns), 100):
                seen = c.ecs.describe_tasks(cluster=cluster, tasks=arns[i:i + 100]).get("tasks") or []
                statuses = {t["taskArn"]: t.get("lastStatus", "?") for t in seen}
                pending.update({a: statuses.get(a, "MISSING") for a in arns[i:i + 100]
                                if statuses.get(a) != "STOPPED"})
        if not pending:
            return sum(len(w.tasks) for w in ws)
        if clock() >= deadline:
            shown = ", ".join(f"{a.rsplit('/', 1)[-1]} {s}" for a, s in sorted(pending.items())[:5])
            raise UpgradeError(f"{len(pending)} task(s) not STOPPED after {timeout:g} s: {shown}")
        sleep(max(1.0, min(STOP_POLL_SECONDS, deadline - clock())))


def take_snapshot(rds: Any, db_cluster: str, identifier: str, tags: dict[str, str], *,
                  clock: Callable[[], float], sleep: Callable[[float], None],
                  timeout: float = SNAPSHOT_WAIT_SECONDS) -> str:
    """CreateDBClusterSnapshot and wait until ``available``. :returns: the snapshot's ARN."""
    created = rds.create_db_cluster_snapshot(
        DBClusterSnapshotIdentifier=identifier, DBClusterIdentifier=db_cluster,
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()])["DBClusterSnapshot"]
    arn, status = created.get("DBClusterSnapshotArn", identifier), created.get("Status", "creating")
    deadline = clock() + timeout
    while status != "available":
        if status in SNAPSHOT_FAILED:
            raise UpgradeError(f"snapshot {identifier} is {status}")
        if clock() >= deadline:
            raise UpgradeError(f"snapshot {identifier} still {status} after {timeout:g} s")
        sleep(max(1.0, min(SNAPSHOT_POLL_SECONDS, deadline - clock())))
        (snap,) = rds.describe_db_cluster_snapshots(DBClusterSnapshotIdentifier=identifier)["DBClusterSnapshots"]
        status = snap.get("Status", "?")
    return arn


def _restore(c: Clients, cluster: str, ws: list[Writer]) -> str:
    """Give every service its recorded count back (old task definition) and resume scaling."""
    problems = []
    for w in ws:
        try:
            c.ecs.update_service(cluster=cluster, service=w.name, desiredCount=w.desired)
            _resume(c.scaling, cluster, w)
        except (ClientError, BotoCoreError) as err:
            problems.append(f"{w.name}: {_err(err)}")
    if problems:
        return "; could not restore " + "; ".join(problems) + " (set the count with `aws ecs update-service`)"
    return "; ".join(f"{w.name} back to {w.desired} task(s)" for w in ws) or "no service to restore"


def _recovery(cluster: str, ws: list[Writer]) -> str:
    lines = []
    for w in ws:
        lines.append(f"  service {w.name}: was {w.desired} task(s) of {w.task_definition}; after the restore: aws ecs "
                     f"update-service --cluster {_cluster_name(cluster)} --service {w.name} --desired-count {w.desired}")
        if w.scaling is not None:
            state = ",".join(f"{k}={str(v).lower()}" for k, v in w.scaling.items())
            lines.append(f"  scaling suspended; resume: aws application-autoscaling register-scalable-target "
                         f"--service-namespace ecs --scalable-dimension ecs:service:DesiredCount --resource-id "
                         f"{_resource_id(cluster, w.name)} --suspended-state {state}")
    return "\n".join(lines)


def upgrade(c: Clients, props: dict[str, Any], *, migrate: Callable[[], dict[str, Any]], now: datetime,
            clock: Callable[[], float], sleep: Callable[[float], None]) -> dict[str, Any]:
    """Steps 1-4 of the module docstring. ``migrate`` runs the admin task with :data:`UPGRADE_COMMAND`
    (raising on a non-zero exit). :returns: what the resource records (``snapshot_identifier``, ...)."""
    cluster, db_cluster, server_td = props["cluster"], props["db_cluster"], props["server_task_definition"]
    try:
        ws = writers(c.ecs, cluster)
    except (ClientError, BotoCoreError) as err:
        raise UpgradeError(f"database upgrade not started (schema untouched): cannot list the services of "
                           f"{cluster}: {_err(err)}") from None
    # 1. writers
    try:
        stopped = stop_writers(c, cluster, ws, clock=clock, sleep=sleep)
    except (UpgradeError, ClientError, BotoCoreError) as err:
        why = str(err) if isinstance(err, UpgradeError) else _err(err)
        raise UpgradeError(f"database upgrade not started (schema untouched): writers not stopped: {why}; "
                           f"{_restore(c, cluster, ws)}") from None
    # 2. snapshot
    identifier = snapshot_identifier(db_cluster, now)
    tags = {SNAPSHOT_TAG: "pre-upgrade", "mlflow-tracking:admin-task-definition": props["task_definition"][-256:]}
    try:
        snapshot_arn = take_snapshot(c.rds, db_cluster, identifier, tags, clock=clock, sleep=sleep)
    except (UpgradeError, ClientError, BotoCoreError) as err:
        why = str(err) if isinstance(err, UpgradeError) else _err(err)
        raise UpgradeError(f"database upgrade not started (schema untouched): no snapshot of {db_cluster}: {why}; "
                           f"{_restore(c, cluster, ws)}") from None
    # 3. migration
    try:
        migration = migrate()
    except Exception as err:  # AdminStepError: the exit code and the container's last log lines
        raise UpgradeError(
            f"database upgrade failed; snapshot {identifier} holds the schema before it; the service is left at 0 "
            f"tasks (nothing new started): restore per {RESTORE_DOC}\n{_recovery(cluster, ws)}\n{err}") from None
    # 4. start the new image
    started = []
    for w in ws:
        td = server_td if _family(w.task_definition) == _family(server_td) else w.task_definition
        try:
            c.ecs.update_service(cluster=cluster, service=w.name, taskDefinition=td, desiredCount=w.desired)
            _resume(c.scaling, cluster, w)
        except (ClientError, BotoCoreError) as err:
            raise UpgradeError(
                f"database upgraded (snapshot {identifier}) but service {w.name} not started: {_err(err)}; run "
                f"`aws ecs update-service --cluster {cluster} --service {w.name} --task-definition {td} "
                f"--desired-count {w.desired}`\n{_recovery(cluster, ws)}") from None
        started.append({"service": w.name, "desired_count": w.desired, "task_definition": td,
                        "scaling_suspended_during_upgrade": w.scaling is not None})
    return {"snapshot_identifier": identifier, "snapshot_arn": snapshot_arn, "stopped_tasks": stopped,
            "migration_task_arn": migration.get("task_arn"), "services": started}
