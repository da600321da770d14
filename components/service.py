"""Service: the MLflow server on ECS Fargate behind an Application Load Balancer.

- Fargate task definition: cpu/memory (a valid Fargate pair), ephemeral storage (the artifact
  spool, mounted as volume ``spool`` at ``/var/spool/mlflow``), CPU architecture, read-only root
  file system, all Linux capabilities dropped, the image's non-root user, a container health
  check, awslogs with a retention.
- Configuration by environment only, per the README's container contract: plain values in ``environment``;
  the application user's database password, the admin user/password and the Flask secret key only
  in ``secrets`` (ECS reads them from Secrets Manager, ``<secret-arn>:<json-key>::``). The server
  connects as the application user over verified TLS and never receives the database master secret.
- Task role: get/put/delete/list on the artifact prefix of the bucket, nothing else.
  Execution role: pull the image, write its log group, read its own three secrets
  (:mod:`components.service_roles`).
- The database admin step (:mod:`components.admin_step`): a second task definition of the same
  image (command ``admin``, the master secret), run once per new revision by ``pulumi up`` and
  waited for before the service changes.
- Service in private subnets without public IP (or, ``taskSubnets: public``, in public subnets with
  one: no NAT needed; :attr:`ServiceArgs.task_subnets`), optionally only in working hours
  (:mod:`components.work_hours`), circuit breaker with rollback, CPU-target
  autoscaling between min and max tasks. Created after the database writer, every secret value it
  reads, its roles' policies and a successful admin step (``depends_on``); ``pulumi up`` waits for a
  steady state, so a deployment the circuit breaker rolls back fails the update
  (:data:`ROLLOUT_TIMEOUTS`).
- ALB, certificate and DNS: :mod:`components.load_balancer`; the containers:
  :mod:`components.container_definition`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.admin_step import build_admin_step
from components.admin_task import DEFAULT_TIMEOUT_SECONDS, TIMEOUT_RANGE
from components.container_definition import (  # noqa: F401 (re-exported: the contract's names)
    CONTAINER_NAME, CONTAINER_PORT, HEALTHCHECK_COMMAND, SPOOL_PATH, SPOOL_VOLUME, STOP_TIMEOUT_SECONDS,
    container_definition)
from components.load_balancer import DEREGISTRATION_DELAY_SECONDS, build_load_balancer  # noqa: F401
from components.gc_schedule import DAYS_MAX as GC_DAYS_MAX
from components.gc_schedule import DEFAULT_SCHEDULE as GC_DEFAULT_SCHEDULE
from components.gc_schedule import build_gc_schedule, check_schedule
from components.service_roles import server_roles
from components.takeover import Takeover
from components.work_hours import WorkHours, build_actions

WORK_HOURS_IGNORED = ["minCapacity", "maxCapacity"]
"""``aws.appautoscaling.Target`` inputs the ``schedule``'s actions set (pulumi-aws ``min_capacity`` /
``max_capacity``): Pulumi leaves them to the actions once the target exists."""
HEALTH_CHECK_GRACE_SECONDS = 420
"""How long ECS ignores a new task's failed load balancer health checks: the entrypoint's database
wait (300 s), the server's start and a margin."""
ROLLOUT_TIMEOUTS = pulumi.CustomTimeouts(create="40m", update="70m", delete="30m")
"""How long ``pulumi up`` waits for the ECS service's steady state (the provider's default is
20 minutes). One task start is 12.5 minutes at worst: image pull (about 5), the service's 420 s
grace period (longer than the container health check's 300 s start period and 3 × 30 s retries,
which outlast the entrypoint's 300 s database wait), then 2 × 15 s of target group health checks.
Create: the circuit breaker's 3 failed starts (37.5 min) before ECS fails the deployment. Update:
those, the rollback's start, the old tasks' draining (:data:`DEREGISTRATION_DELAY_SECONDS`) and
stop (:data:`STOP_TIMEOUT_SECONDS`): 67 min. Delete: draining and stopping (17 min)."""
FARGATE_MEMORY: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}
"""Fargate's valid cpu units -> memory MiB."""
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                      2557, 2922, 3288, 3653)
ARCHITECTURES = ("X86_64", "ARM64")


@dataclass(frozen=True, kw_only=True)
class ServiceArgs:
    # --- network -----------------------------------------------------------------------------
    vpc_id: pulumi.Input[str]
    """VPC of the load balancer and the tasks."""
    public_subnet_ids: list[pulumi.Input[str]]
    """Subnets of an internet-facing load balancer."""
    private_subnet_ids: list[pulumi.Input[str]]
    """Subnets of the tasks (and of an internal load balancer)."""
    service_security_group_id: pulumi.Input[str]
    """Security group of the tasks (created by the composition; this component admits the ALB)."""
    task_subnets: str = "private"
    """Where the server, admin and gc tasks run: ``private`` (no public IP; ECR, Logs, Secrets Manager
    through NAT or interface endpoints) or ``public`` (a public IP each, reaching them through the
    internet gateway: no NAT needed; the security group still admits only the load balancer)."""
    region: str
    """AWS region (awslogs, ``AWS_REGION``)."""
    account_id: str
    """AWS account (scopes the roles' trust policy)."""
    # --- image -------------------------------------------------------------------------------
    image_ref: pulumi.Input[str]
    """Digest reference of the server image."""
    repository_arn: Optional[pulumi.Input[str]] = None
    """ECR repository of the image (execution role may pull from it); ``None`` outside ECR."""
    # --- task --------------------------------------------------------------------------------
    cpu: int = 1024
    """Fargate cpu units."""
    memory: int = 2048
    """Fargate memory (MiB), valid for ``cpu``."""
    ephemeral_storage_gib: int = 30
    """Task ephemeral storage 21..200 GiB: the artifact spool."""
    cpu_architecture: str = "X86_64"
    """``X86_64`` or ``ARM64``."""
    workers: int = 2
    """uvicorn workers (``MLFLOW_WORKERS``)."""
    pool_size: int = 10
    """``MLFLOW_SQLALCHEMYSTORE_POOL_SIZE``."""
    max_overflow: int = 0
    """``MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW``."""
    enable_job_execution: bool = False
    """``MLFLOW_SERVER_ENABLE_JOB_EXECUTION``."""
    db_idle_release_seconds: int = 300
    """``MLFLOW_DB_IDLE_RELEASE_SECONDS``: idle time before a task closes its database connections (0 = never)."""
    log_retention_days: int = 30
    """CloudWatch Logs retention."""
    # --- scaling -----------------------------------------------------------------------------
    desired_count: int = 1
    """Tasks started by a deployment."""
    min_tasks: int = 1
    """Autoscaling minimum."""
    max_tasks: int = 1
    """Autoscaling maximum (autoscaling when greater than ``min_tasks``)."""
    cpu_target_percent: int = 60
    """Target average CPU utilisation."""
    work_hours: Optional[WorkHours] = None
    """Run tasks only in this weekly window (:mod:`components.work_hours`); ``None`` = always."""
    # --- database ----------------------------------------------------------------------------
    db_engine: str
    """``mysql`` or ``postgresql``."""
    db_host: pulumi.Input[str]
    """Writer endpoint."""
    db_port: int
    """Engine port."""
    db_name: str = "mlflow"
    """Tracking database."""
    db_user: str = "mlflow_app"
    """The application user (the server's database user)."""
    db_app_secret_arn: pulumi.Input[str]
    """The application user's secret (JSON ``username``, ``password``; written by the admin step)."""
    db_master_secret_arn: pulumi.Input[str]
    """RDS's master user secret (JSON ``username``, ``password``): the admin step's only."""
    db_cluster_identifier: pulumi.Input[str]
    """The Aurora cluster's identifier: the admin step snapshots it before an upgrade."""
    admin_timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    """How long ``pulumi up`` waits for the admin step's task to stop."""
    auth_db_name: str = "mlflow_auth"
    """Database of the basic-auth user store (same server)."""
    gc_older_than_days: int = 0
    """Scheduled gc of runs deleted more than this many days ago (:mod:`components.gc_schedule`); 0 = off."""
    gc_schedule: str = GC_DEFAULT_SCHEDULE
    """EventBridge Scheduler expression (UTC) of the gc task."""
    # --- artifacts ---------------------------------------------------------------------------
    bucket_name: pulumi.Input[str]
    """Artifact bucket."""
    bucket_arn: pulumi.Input[str]
    """ARN of the artifact bucket."""
    artifact_prefix: str = "artifacts"
    """Key prefix of the artifacts; the task role is scoped to it."""
    bucket_kms_key_arn: Optional[str] = None
    """KMS key of the bucket (task role may use it), if any."""
    takeover: Optional[Takeover] = None
    """Dumps of an old MLflow under ``takeover/`` that the admin step imports (:mod:`components.takeover`)."""
    # --- auth --------------------------------------------------------------------------------
    admin_username: str = "admin"
    """MLflow admin user created on first start."""
    auth_default_permission: str = "READ"
    """``MLFLOW_AUTH_DEFAULT_PERMISSION``."""
    auth_cache_ttl_seconds: int = 60
    """``MLFLOW_AUTH_CACHE_TTL_SECONDS``."""
    protect: bool = True
    """Pulumi ``protect`` on the admin credentials (password and secret)."""
    # --- load balancer -----------------------------------------------------------------------
    alb_scheme: str = "internet-facing"
    """``internet-facing`` or ``internal``."""
    allowed_cidrs: tuple[str, ...]
    """Networks admitted on 80/443 of the load balancer (no default: plain HTTP would carry the
    admin password to whoever it admits)."""
    certificate_arn: Optional[str] = None
    """ACM certificate of this region covering ``domain_name``: HTTPS listener + HTTP redirect."""
    hosted_zone_id: Optional[str] = None
    """Route 53 zone of ``domain_name``: an alias record to the ALB, and (without
    ``certificate_arn``) a DNS-validated ACM certificate. Neither: plain HTTP (dev only)."""
    domain_name: Optional[str] = None
    """The tracking URI's host and the only allowed Host header (required with a certificate)."""
    idle_timeout_seconds: int = 900
    """ALB idle timeout; the server keeps connections alive longer."""
    deletion_protection: bool = False
    """ALB deletion protection."""
    container_insights: bool = False
    """CloudWatch Container Insights on the ECS cluster (extra cost)."""
    access_logs_bucket: Optional[pulumi.Input[str]] = None
    """S3 bucket of the load balancer's access logs (:class:`components.monitoring.AlbAccessLogs`); ``None`` = off."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What the ECS service and the admin step must wait for besides their own resources: the
    database writer instance (``Database.ready``)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags on every resource."""

    @property
    def https(self) -> bool:
        return self.certificate_arn is not None or self.hosted_zone_id is not None

    @property
    def task_subnet_ids(self) -> list[pulumi.Input[str]]:
        """Subnets of the server, admin and gc tasks (:attr:`task_subnets`)."""
        return self.public_subnet_ids if self.task_subnets == "public" else self.private_subnet_ids

    @property
    def assign_public_ip(self) -> bool:
        return self.task_subnets == "public"

    def __post_init__(self) -> None:
        if self.memory not in FARGATE_MEMORY.get(self.cpu, ()):
            raise ValueError(f"cpu/memory: not a Fargate pair: cpu {self.cpu}, memory {self.memory}")
        if not 21 <= self.ephemeral_storage_gib <= 200:
            raise ValueError(f"ephemeral_storage_gib: 21 to 200, got {self.ephemeral_storage_gib!r}")
        if self.cpu_architecture not in ARCHITECTURES:
            raise ValueError(f"cpu_architecture: one of {ARCHITECTURES}, got {self.cpu_architecture!r}")
        if not (0 <= self.min_tasks <= self.desired_count <= self.max_tasks and self.max_tasks >= 1):
            raise ValueError(f"tasks: 0 <= min <= desired <= max, max >= 1; got "
                             f"{self.min_tasks}/{self.desired_count}/{self.max_tasks}")
        if not 10 <= self.cpu_target_percent <= 90:
            raise ValueError(f"cpu_target_percent: 10 to 90, got {self.cpu_target_percent!r}")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(f"log_retention_days: one of {LOG_RETENTION_DAYS}, got {self.log_retention_days!r}")
        if self.alb_scheme not in ("internet-facing", "internal"):
            raise ValueError(f"alb_scheme: internet-facing or internal, got {self.alb_scheme!r}")
        if not self.allowed_cidrs:
            raise ValueError("allowed_cidrs: at least one network")
        for cidr in self.allowed_cidrs:
            ipaddress.ip_network(cidr, strict=True)
        if not 1 <= self.idle_timeout_seconds <= 4000:
            raise ValueError(f"idle_timeout_seconds: 1 to 4000, got {self.idle_timeout_seconds!r}")
        if self.db_engine not in ("mysql", "postgresql"):
            raise ValueError(f"db_engine: mysql or postgresql, got {self.db_engine!r}")
        if self.workers < 1 or self.pool_size < 1 or self.max_overflow < 0:
            raise ValueError("workers and pool_size: at least 1; max_overflow: at least 0")
        if not 0 <= self.db_idle_release_seconds <= 86400:
            raise ValueError(f"db_idle_release_seconds: 0 to 86400, got {self.db_idle_release_seconds!r}")
        if len(self.public_subnet_ids) < 2 or len(self.private_subnet_ids) < 2:
            raise ValueError("subnets: at least two zones for the load balancer")
        if not TIMEOUT_RANGE[0] <= self.admin_timeout_seconds <= TIMEOUT_RANGE[1]:
            raise ValueError(f"admin_timeout_seconds: {TIMEOUT_RANGE[0]} to {TIMEOUT_RANGE[1]}, "
                             f"got {self.admin_timeout_seconds!r}")
        if not 0 <= self.gc_older_than_days <= GC_DAYS_MAX:
            raise ValueError(f"gc_older_than_days: 0 (off) to {GC_DAYS_MAX}, got {self.gc_older_than_days!r}")
        check_schedule(self.gc_schedule)
        if self.task_subnets not in ("private", "public"):
            raise ValueError(f"task_subnets: private or public, got {self.task_subnets!r}")
        if self.work_hours is not None and self.min_tasks < 1:
            raise ValueError("min_tasks: at least 1 with work_hours (target tracking cannot start a service "
                             f"from 0 tasks), got {self.min_tasks!r}")
        if self.https and not self.domain_name:
            raise ValueError("domain_name: required with certificate_arn or hosted_zone_id (the name clients verify)")


class Service(pulumi.ComponentResource):
    load_balancer_dns_name: pulumi.Output[str]
    """DNS name of the ALB."""
    load_balancer_arn: pulumi.Output[str]
    """ARN of the ALB."""
    tracking_uri: pulumi.Output[str]
    """What MLflow clients use: ``https://<domain>`` with a certificate, else ``http://<domain or ALB DNS>``."""
    admin_secret_arn: pulumi.Output[str]
    """Secret with the admin ``username`` and ``password`` (JSON)."""
    cluster_name: pulumi.Output[str]
    """ECS cluster."""
    service_name: pulumi.Output[str]
    """ECS service."""
    task_definition_arn: pulumi.Output[str]
    """Current task definition of the server."""
    admin_task_definition_arn: pulumi.Output[str]
    """Current task definition of the database admin step."""
    log_group_name: pulumi.Output[str]
    """CloudWatch log group of the container."""
    alb_security_group_id: pulumi.Output[str]
    """Security group of the ALB."""
    task_role_arn: pulumi.Output[str]
    """Role of the running server (artifact prefix only)."""
    execution_role_arn: pulumi.Output[str]
    """Role ECS uses to start the task (image, logs, secrets)."""

    def __init__(self, name: str, args: ServiceArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:Service", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        protected = pulumi.ResourceOptions(parent=self, protect=args.protect)
        tags = dict(args.tags)

        # --- application secrets ---------------------------------------------------------
        admin_password = random.RandomPassword(f"{name}-admin-password", length=32, special=False, opts=protected)
        admin_secret = aws.secretsmanager.Secret(
            f"{name}-admin", description="MLflow admin user (JSON: username, password)",
            recovery_window_in_days=7 if args.protect else 0, tags=tags, opts=protected)
        admin_value = aws.secretsmanager.SecretVersion(
            f"{name}-admin-value", secret_id=admin_secret.id,
            secret_string=pulumi.Output.json_dumps({"username": args.admin_username,
                                                    "password": admin_password.result}),
            opts=protected)
        flask_key = random.RandomPassword(f"{name}-flask-key", length=64, special=False, opts=child)
        flask_secret = aws.secretsmanager.Secret(
            f"{name}-flask-secret-key", description="MLflow Flask session/CSRF key (JSON: secret_key)",
            recovery_window_in_days=7 if args.protect else 0, tags=tags, opts=child)
        flask_value = aws.secretsmanager.SecretVersion(
            f"{name}-flask-secret-key-value", secret_id=flask_secret.id,
            secret_string=pulumi.Output.json_dumps({"secret_key": flask_key.result}), opts=child)

        # --- logs and roles ----------------------------------------------------------------
        log_group = aws.cloudwatch.LogGroup(f"{name}-logs", retention_in_days=args.log_retention_days, tags=tags,
                                            opts=child)
        prefix = args.artifact_prefix.strip("/")
        roles = server_roles(name, parent=self, account_id=args.account_id, log_group_arn=log_group.arn,
                             secret_arns=[args.db_app_secret_arn, admin_secret.arn, flask_secret.arn],
                             repository_arn=args.repository_arn, bucket_arn=args.bucket_arn, prefix=prefix,
                             bucket_kms_key_arn=args.bucket_kms_key_arn, tags=tags)

        # --- load balancer (components/load_balancer.py) -------------------------------------
        internal = args.alb_scheme == "internal"
        lb = build_load_balancer(
            name, parent=self, vpc_id=args.vpc_id,
            subnet_ids=args.private_subnet_ids if internal else args.public_subnet_ids, internal=internal,
            service_security_group_id=args.service_security_group_id, container_port=CONTAINER_PORT,
            allowed_cidrs=args.allowed_cidrs, certificate_arn=args.certificate_arn,
            hosted_zone_id=args.hosted_zone_id, domain_name=args.domain_name,
            idle_timeout_seconds=args.idle_timeout_seconds, deletion_protection=args.deletion_protection,
            access_logs_bucket=args.access_logs_bucket, tags=tags)

        # --- task definition ---------------------------------------------------------------
        # The domain is the only name a certificate covers, so with one it is the only Host the
        # server admits; the ALB's own DNS name then fails TLS verification anyway. The ALB's
        # health checks need no allowed host: MLflow exempts /health from the host check.
        container = container_definition(
            args, prefix=prefix, log_group_name=log_group.name, admin_secret_arn=admin_secret.arn,
            flask_secret_arn=flask_secret.arn, allowed_hosts=lb.host)
        task = aws.ecs.TaskDefinition(
            f"{name}-task",
            # Families are per account and region: the project and stack keep dev and prod apart.
            family=re.sub(r"[^A-Za-z0-9_-]", "-", f"{pulumi.get_project()}-{pulumi.get_stack()}-{name}")[:255],
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            cpu=str(args.cpu),
            memory=str(args.memory),
            ephemeral_storage={"size_in_gib": args.ephemeral_storage_gib},
            runtime_platform={"cpu_architecture": args.cpu_architecture, "operating_system_family": "LINUX"},
            volumes=[{"name": SPOOL_VOLUME}],
            execution_role_arn=roles.execution_role.arn,
            task_role_arn=roles.task_role.arn,
            container_definitions=pulumi.Output.json_dumps([container]),
            tags=tags,
            opts=child,
        )

        # --- cluster, service, autoscaling -------------------------------------------------
        cluster = aws.ecs.Cluster(f"{name}-cluster", settings=[{
                                      "name": "containerInsights",
                                      "value": "enabled" if args.container_insights else "disabled"}],
                                  tags=tags, opts=child)
        admin = build_admin_step(name, args, parent=self, cluster_arn=cluster.arn, log_group=log_group, tags=tags,
                                 server_task_definition_arn=task.arn)
        gc = build_gc_schedule(name, args, parent=self, cluster_arn=cluster.arn, log_group=log_group, prefix=prefix,
                               tags=tags, after=[admin.run])  # None when gc_older_than_days is 0
        autoscaling = args.max_tasks > args.min_tasks
        scaled = autoscaling or args.work_hours is not None  # a scalable target owns the running count
        service = aws.ecs.Service(
            f"{name}-service",
            cluster=cluster.arn,
            task_definition=task.arn,
            launch_type="FARGATE",
            platform_version="LATEST",
            desired_count=args.desired_count,
            network_configuration={"subnets": args.task_subnet_ids,
                                   "security_groups": [args.service_security_group_id],
                                   "assign_public_ip": args.assign_public_ip},
            load_balancers=[{"target_group_arn": lb.target_group.arn, "container_name": CONTAINER_NAME,
                             "container_port": CONTAINER_PORT}],
            deployment_circuit_breaker={"enable": True, "rollback": True},
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            health_check_grace_period_seconds=HEALTH_CHECK_GRACE_SECONDS,
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            # A deployment the circuit breaker rolls back must fail `pulumi up`, not look done.
            wait_for_steady_state=True,
            tags=tags,
            # Tasks need the listener (target group attached), a writer that accepts connections,
            # every secret value they read at start, their roles' policies, and the schemas the
            # admin step creates or upgrades. With autoscaling, the scaler owns the running count
            # after creation.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*lb.listeners, *args.depends_on, admin_value,
                                                                 flask_value, *roles.policies, admin.run],
                                        custom_timeouts=ROLLOUT_TIMEOUTS,
                                        ignore_changes=["desiredCount"] if scaled else None),
        )
        if scaled:
            resource_id = pulumi.Output.concat("service/", cluster.name, "/", service.name)
            # With a schedule its actions own min/max (0..0 after stop): a refresh or an update of the
            # target must not write minTasks..maxTasks back off-hours (docs/cost.md).
            target = aws.appautoscaling.Target(
                f"{name}-scaling-target", service_namespace="ecs", scalable_dimension="ecs:service:DesiredCount",
                resource_id=resource_id, min_capacity=args.min_tasks, max_capacity=args.max_tasks, tags=tags,
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=WORK_HOURS_IGNORED
                                            if args.work_hours is not None else None))
            if args.work_hours is not None:
                build_actions(name, args.work_hours, target=target, min_tasks=args.min_tasks,
                              max_tasks=args.max_tasks, parent=self)
        if autoscaling:
            aws.appautoscaling.Policy(
                f"{name}-cpu-scaling", policy_type="TargetTrackingScaling", service_namespace="ecs",
                scalable_dimension="ecs:service:DesiredCount", resource_id=target.resource_id,
                target_tracking_scaling_policy_configuration={
                    "target_value": args.cpu_target_percent,
                    "predefined_metric_specification": {"predefined_metric_type": "ECSServiceAverageCPUUtilization"},
                    "scale_in_cooldown": 300,
                    "scale_out_cooldown": 60,
                },
                opts=child)

        self.load_balancer_dns_name = lb.alb.dns_name
        self.load_balancer_arn = lb.alb.arn
        self.load_balancer_arn_suffix = lb.alb.arn_suffix
        self.target_group_arn_suffix = lb.target_group.arn_suffix
        self.service_arn = service.arn
        self.tracking_uri = pulumi.Output.concat("https://" if lb.https else "http://", lb.host)
        self.admin_secret_arn = admin_secret.arn
        self.cluster_name = cluster.name
        self.service_name = service.name
        self.task_definition_arn = task.arn
        self.log_group_name = log_group.name
        self.alb_security_group_id = lb.security_group_id
        self.admin_task_definition_arn = admin.task_definition.arn
        self.gc_task_definition_arn = gc.task_definition.arn if gc else None
        self.task_role_arn = roles.task_role.arn
        self.execution_role_arn = roles.execution_role.arn
        self.register_outputs({
            "loadBalancerDnsName": self.load_balancer_dns_name,
            "trackingUri": self.tracking_uri,
            "adminSecretArn": self.admin_secret_arn,
            "clusterName": self.cluster_name,
            "serviceName": self.service_name,
            "taskDefinitionArn": self.task_definition_arn,
            "adminTaskDefinitionArn": self.admin_task_definition_arn,
            "logGroupName": self.log_group_name,
        })
