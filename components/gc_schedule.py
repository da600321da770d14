"""Scheduled garbage collection of deleted runs (docs/housekeeping.md), built by
:class:`components.service.Service` with itself as parent when ``gcOlderThanDays`` > 0.

- Task definition (family ``<project>-<stack>-<name>-gc``): the server's image with the command
  ``gc`` (``image/gc_step.py``), a small Fargate size, no port, no health check, read-only root file
  system, all capabilities dropped, the spool volume, awslogs to the service's log group with the
  stream prefix ``gc``. Environment: the database settings, the artifact destination and
  ``MLFLOW_GC_OLDER_THAN_DAYS``; the one secret, the application user's password, via ``secrets``.
- Task role, least privilege for what gc does on S3 (MLflow 3.17.2 S3ArtifactRepository:
  ``list_artifacts`` and ``delete_artifacts`` are ListObjectsV2 with a prefix under the run's folder,
  then DeleteObjects, which S3 authorizes as ``s3:DeleteObject`` on each key): ``s3:ListBucket`` on
  the bucket only for ``s3:prefix`` values under the artifact prefix (gc makes no HeadBucket, so the
  condition can be used here, unlike the server's role), ``s3:DeleteObject`` on ``<prefix>/*``.
  Nothing else: no Get/Put, no version deletes (versioned buckets keep noncurrent versions until
  the bucket's lifecycle rule expires them). Execution role: pull the image, write the log group,
  read the application user's secret only.
- Schedule (EventBridge Scheduler, ``aws.scheduler.Schedule``): ECS RunTask target on the service's
  cluster (Fargate, the service's task subnets and security group: private without a public IP, or
  public with one when ``taskSubnets`` is ``public``), expression
  ``gcSchedule`` in UTC, a flexible window of :data:`FLEXIBLE_WINDOW_MINUTES`, and a retry policy
  for RunTask calls that fail (Scheduler retries the API call, not a task that exits non-zero).
  Scheduler role (trusts ``scheduler.amazonaws.com`` of this account): ``ecs:RunTask`` on the gc
  family's revisions, only in the service's cluster (``ecs:cluster``), and ``iam:PassRole`` on the gc
  task's two roles, only to ECS tasks (``iam:PassedToService``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import pulumi
import pulumi_aws as aws

from components.container_definition import SPOOL_PATH, SPOOL_VOLUME, database_environment, one_off_container
from components.naming import fitted_name
from components.service_roles import _document, _start_statements, _trust, statement

if TYPE_CHECKING:
    from components.service import ServiceArgs

GC_CONTAINER_NAME = "mlflow-gc"
GC_COMMAND = ["gc"]
"""Appended to the image's ENTRYPOINT (``python3 /app/entrypoint.py``)."""
GC_LOG_PREFIX = "gc"
GC_CPU = 512
GC_MEMORY = 1024
"""Fargate size (MiB): one process importing MLflow's store, as the admin step."""
DEFAULT_SCHEDULE = "cron(0 3 * * ? *)"
"""Daily at 03:00 UTC."""
FLEXIBLE_WINDOW_MINUTES = 60
"""Scheduler may start the task any time within this window: spreads load, nothing waits for gc."""
RETRY_ATTEMPTS = 3
RETRY_MAX_EVENT_AGE_SECONDS = 3600
DAYS_MAX = 36500
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/#L W-]+$")
_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")


def check_schedule(expression: str) -> str:
    """``expression`` if EventBridge Scheduler accepts it as a recurring schedule, else ValueError
    with one line (Scheduler User Guide, "Schedule types": ``cron(min hour day-of-month month
    day-of-week year)`` with ``?`` in one of the two day fields, or ``rate(value unit)`` with a
    positive value and minute(s)/hour(s)/day(s)). One-time ``at(...)`` is refused, and so is a
    rate under an hour (a collection may use its whole time budget)."""
    text = expression.strip()
    m = _RATE.match(text)
    if m:
        value, unit = int(m.group(1)), m.group(2)
        if value < 1 or (value == 1) != (not unit.endswith("s")):
            raise ValueError(f"{text!r}: rate value must be positive, with a singular unit for 1 (rate(1 day), "
                             f"rate(2 days))")
        if unit.startswith("minute") and value < 60:
            raise ValueError(f"{text!r}: at most once an hour (a collection may run for up to an hour)")
        return text
    if text.startswith("cron(") and text.endswith(")"):
        fields = text[5:-1].split()
        if len(fields) == 6 and all(_CRON_FIELD.match(f) for f in fields) and "?" in (fields[2], fields[4]):
            return text
    raise ValueError(f"{text!r} is not a recurring EventBridge Scheduler expression: cron(minutes hours "
                     f"day-of-month month day-of-week year) with ? in one day field, e.g. {DEFAULT_SCHEDULE}, "
                     f"or rate(N hours|days)")


@dataclass(frozen=True)
class GcSchedule:
    task_definition: aws.ecs.TaskDefinition
    schedule: aws.scheduler.Schedule
    task_role: aws.iam.Role
    execution_role: aws.iam.Role
    scheduler_role: aws.iam.Role


def gc_container_definition(args: "ServiceArgs", *, prefix: str, log_group_name: pulumi.Input[str]) -> dict[str, Any]:
    """The gc container (the contract's "gc task"), as a ``containerDefinitions`` entry."""
    env = {
        **database_environment(args),
        "MLFLOW_ARTIFACTS_DESTINATION": pulumi.Output.concat("s3://", args.bucket_name, f"/{prefix}"),
        "MLFLOW_GC_OLDER_THAN_DAYS": str(args.gc_older_than_days),
        "MLFLOW_SPOOL_DIR": SPOOL_PATH,
    }
    secrets = {"MLFLOW_DB_PASSWORD": pulumi.Output.concat(args.db_app_secret_arn, ":password::")}
    return one_off_container(args, name=GC_CONTAINER_NAME, command=GC_COMMAND, environment=env, secrets=secrets,
                             log_group_name=log_group_name, log_prefix=GC_LOG_PREFIX)


def _family_revisions(cluster_arn: pulumi.Input[str], family: str) -> pulumi.Output[str]:
    """``arn:<partition>:ecs:<region>:<account>:task-definition/<family>:*`` (every revision), built
    from the cluster's ARN (same partition, region and account)."""
    return pulumi.Output.from_input(cluster_arn).apply(
        lambda arn: f"{':'.join(arn.split(':')[:5])}:task-definition/{family}:*")


def build_gc_schedule(name: str, args: "ServiceArgs", *, parent: pulumi.Resource, cluster_arn: pulumi.Input[str],
                      log_group: aws.cloudwatch.LogGroup, prefix: str, tags: dict[str, str],
                      after: Optional[list[pulumi.Resource]] = None) -> Optional[GcSchedule]:
    """The gc task, its roles and its schedule as children of ``parent`` (``<name>-gc-...``); None when off.

    ``after``: what the schedule waits for before it points at a new task definition revision (the
    admin step's run: a new image's gc must not start before its schemas are in place)."""
    if args.gc_older_than_days <= 0:
        return None
    child = pulumi.ResourceOptions(parent=parent)
    assume = _trust(args.account_id)
    exec_role = aws.iam.Role(
        f"{name}-gc-exec-role", assume_role_policy=assume, tags=tags,
        description="ECS: pull the MLflow image, write the gc task's logs, read the application user's secret",
        **fitted_name(f"{name}-gc-exec-role", 64, 38), opts=child)
    exec_statements = _start_statements(log_group.arn, args.repository_arn)
    exec_statements.insert(1, statement(["secretsmanager:GetSecretValue"], [args.db_app_secret_arn],
                                        sid="ReadAppUserSecret"))
    exec_policy = aws.iam.RolePolicy(f"{name}-gc-exec-policy", role=exec_role.id, policy=_document(exec_statements),
                                     opts=child)
    task_role = aws.iam.Role(
        f"{name}-gc-task-role", assume_role_policy=assume, tags=tags,
        description="MLflow gc: list and delete artifacts under the bucket prefix only",
        **fitted_name(f"{name}-gc-task-role", 64, 38), opts=child)
    task_policy = aws.iam.RolePolicy(f"{name}-gc-task-policy", role=task_role.id, opts=child, policy=_document([
        statement(["s3:ListBucket"], [args.bucket_arn], {"StringLike": {"s3:prefix": [f"{prefix}/*"]}},
                  sid="ListArtifactPrefix"),
        statement(["s3:DeleteObject"], [pulumi.Output.concat(args.bucket_arn, f"/{prefix}/*")],
                  sid="DeleteArtifacts"),
    ]))

    family = re.sub(r"[^A-Za-z0-9_-]", "-", f"{pulumi.get_project()}-{pulumi.get_stack()}-{name}-gc")[:255]
    task = aws.ecs.TaskDefinition(
        f"{name}-gc-task", family=family, requires_compatibilities=["FARGATE"], network_mode="awsvpc",
        cpu=str(GC_CPU), memory=str(GC_MEMORY),
        runtime_platform={"cpu_architecture": args.cpu_architecture, "operating_system_family": "LINUX"},
        volumes=[{"name": SPOOL_VOLUME}], execution_role_arn=exec_role.arn, task_role_arn=task_role.arn,
        container_definitions=pulumi.Output.json_dumps([
            gc_container_definition(args, prefix=prefix, log_group_name=log_group.name)]),
        tags=tags, opts=child)

    scheduler_trust = pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"}, "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"aws:SourceAccount": args.account_id}}}]})
    scheduler_role = aws.iam.Role(
        f"{name}-gc-scheduler-role", assume_role_policy=scheduler_trust, tags=tags,
        description="EventBridge Scheduler: start the MLflow gc task",
        **fitted_name(f"{name}-gc-scheduler-role", 64, 38), opts=child)
    scheduler_policy = aws.iam.RolePolicy(f"{name}-gc-scheduler-policy", role=scheduler_role.id, opts=child,
                                          policy=_document([
        statement(["ecs:RunTask"], [_family_revisions(cluster_arn, family)],
                  {"ArnEquals": {"ecs:cluster": cluster_arn}}, sid="RunGcTask"),
        statement(["iam:PassRole"], [exec_role.arn, task_role.arn],
                  {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}, sid="PassGcRoles"),
    ]))
    schedule = aws.scheduler.Schedule(
        f"{name}-gc-schedule", description="MLflow: remove runs deleted more than "
                                           f"{args.gc_older_than_days} days ago (docs/housekeeping.md)",
        schedule_expression=args.gc_schedule, schedule_expression_timezone="UTC", state="ENABLED",
        flexible_time_window={"mode": "FLEXIBLE", "maximum_window_in_minutes": FLEXIBLE_WINDOW_MINUTES},
        target={
            "arn": cluster_arn, "role_arn": scheduler_role.arn,
            "ecs_parameters": {
                "task_definition_arn": task.arn, "launch_type": "FARGATE", "task_count": 1,
                "network_configuration": {"subnets": args.task_subnet_ids,
                                          "security_groups": [args.service_security_group_id],
                                          "assign_public_ip": args.assign_public_ip}},
            "retry_policy": {"maximum_retry_attempts": RETRY_ATTEMPTS,
                             "maximum_event_age_in_seconds": RETRY_MAX_EVENT_AGE_SECONDS},
        },
        **fitted_name(f"{name}-gc-schedule", 64, 38),
        # the roles' policies in place before Scheduler assumes its role and ECS the task's
        # and the admin step's run (``after``): the schedule moves to a new image once its schemas are in place
        opts=pulumi.ResourceOptions(parent=parent,
                                    depends_on=[exec_policy, task_policy, scheduler_policy, *(after or [])]))
    return GcSchedule(task, schedule, task_role, exec_role, scheduler_role)
