"""The database admin step's resources, built by :class:`components.service.Service` with itself as
parent: its task definition, its two roles (:func:`components.service_roles.admin_roles`) and its
run (:class:`components.admin_task.DatabaseAdminRun`, which the ECS service waits for).

The task definition: the server's image with the command ``admin``, a small Fargate size of its
own, the same CPU architecture, the spool volume (20 GiB of default ephemeral storage is plenty),
its own family (``<project>-<stack>-<name>-admin``) and log stream prefix. The run uses the
service's cluster, task subnets (``taskSubnets``: private, or public with a public IP) and security
group: the database's security group already admits that group on the engine port, and it reaches
ECR, Secrets Manager and CloudWatch Logs on 443 (through NAT, the interface endpoints or, public,
the internet gateway), so the step needs no network rule of its own.

Rotation, per secret (README "Database users"):

- Master secret (RDS's): RDS rotates it (every 7 days by default). ECS reads it when the admin task
  starts, so every run uses the current password; nothing else uses it. A run that starts while a
  rotation is in progress (about a minute) may get the old value and fail to log in: run ``pulumi
  up`` again.
- Application user's secret: rotating it is three steps. (1) ``aws secretsmanager put-secret-value``
  with a new ``{"username", "password"}``; (2) run the admin step, which sets the database user's
  password to the secret's; (3) ``aws ecs update-service --force-new-deployment``, because ECS reads
  ``MLFLOW_DB_PASSWORD`` only when a task starts. Between (2) and the end of (3) the running tasks
  keep the connections they hold (changing a password closes no session, on MySQL or PostgreSQL),
  but every new connection they open (pool growth, ``MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE`` every 280
  s, a reconnect after the idle release) uses the old password and is refused; and a task started
  between (1) and (2) fails to log in. So do the three steps back to back, in a quiet moment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws

from components.admin_task import DatabaseAdminRun
from components.container_definition import (ADMIN_CONTAINER_NAME, ADMIN_LOG_PREFIX, SPOOL_VOLUME,
                                             admin_container_definition)
from components.service_roles import admin_roles

if TYPE_CHECKING:
    from components.service import ServiceArgs

ADMIN_CPU = 512
ADMIN_MEMORY = 1024
"""Fargate size of the admin task (MiB): it imports MLflow's store for the migrations, one process."""


@dataclass(frozen=True)
class AdminStep:
    task_definition: aws.ecs.TaskDefinition
    run: DatabaseAdminRun
    """What the ECS service must wait for."""


def build_admin_step(name: str, args: "ServiceArgs", *, parent: pulumi.Resource, cluster_arn: pulumi.Input[str],
                     log_group: aws.cloudwatch.LogGroup, tags: dict[str, str],
                     server_task_definition_arn: pulumi.Input[str]) -> AdminStep:
    """Create the admin step's resources as children of ``parent``, named ``<name>-dbadmin-...``.

    The run also gets the DB cluster identifier (snapshotted before an upgrade) and the server's
    task definition ARN (started by the run after an upgrade: the service depends on the run, the
    task definition does not, so there is no cycle)."""
    child = pulumi.ResourceOptions(parent=parent)
    roles = admin_roles(name, parent=parent, account_id=args.account_id, log_group_arn=log_group.arn,
                        master_secret_arn=args.db_master_secret_arn, app_secret_arn=args.db_app_secret_arn,
                        repository_arn=args.repository_arn, tags=tags,
                        takeover_object_arns=args.takeover.object_arns(args.bucket_arn) if args.takeover else None,
                        bucket_kms_key_arn=args.bucket_kms_key_arn)
    container = admin_container_definition(args, log_group_name=log_group.name)
    task = aws.ecs.TaskDefinition(
        f"{name}-dbadmin-task",
        family=re.sub(r"[^A-Za-z0-9_-]", "-", f"{pulumi.get_project()}-{pulumi.get_stack()}-{name}-admin")[:255],
        requires_compatibilities=["FARGATE"],
        network_mode="awsvpc",
        cpu=str(ADMIN_CPU),
        memory=str(ADMIN_MEMORY),
        runtime_platform={"cpu_architecture": args.cpu_architecture, "operating_system_family": "LINUX"},
        volumes=[{"name": SPOOL_VOLUME}],
        execution_role_arn=roles.execution_role.arn,
        task_role_arn=roles.task_role.arn,
        container_definitions=pulumi.Output.json_dumps([container]),
        tags=tags,
        opts=child,
    )
    run = DatabaseAdminRun(
        f"{name}-dbadmin-run", region=args.region, cluster=cluster_arn, task_definition=task.arn,
        subnets=args.task_subnet_ids, assign_public_ip=args.assign_public_ip,
        security_groups=[args.service_security_group_id],
        container_name=ADMIN_CONTAINER_NAME, log_group=log_group.name, log_stream_prefix=ADMIN_LOG_PREFIX,
        timeout_seconds=args.admin_timeout_seconds, db_cluster=args.db_cluster_identifier,
        server_task_definition=server_task_definition_arn,
        # a writer that accepts connections, and the roles' policies in place before ECS assumes them
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[*args.depends_on, *roles.policies]))
    return AdminStep(task, run)
