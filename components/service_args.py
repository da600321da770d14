"""The service's arguments (:class:`ServiceArgs`): every input of :class:`components.service.Service`,
its meaning, default and validation (Fargate's cpu/memory pairs, log retention values, CPU
architectures), checked when the arguments are made, before any resource is registered."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

import pulumi

from components.admin_task import DEFAULT_TIMEOUT_SECONDS, TIMEOUT_RANGE
from components.gc_schedule import DAYS_MAX as GC_DAYS_MAX
from components.gc_schedule import DEFAULT_SCHEDULE as GC_DEFAULT_SCHEDULE
from components.gc_schedule import check_schedule
from components.sso import SingleSignOn
from components.takeover import Takeover
from components.work_hours import WorkHours

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
    sso: Optional[SingleSignOn] = None
    """Single sign-on for the web UI (:mod:`components.sso`): the HTTPS listener's login, the rules that
    keep programmatic paths off it, the server's ``MLFLOW_SSO_*`` variables; ``None`` = off."""
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
        if self.sso is not None and not self.https:
            raise ValueError("sso: needs HTTPS (certificate_arn or hosted_zone_id): the load balancer authenticates "
                             "on HTTPS listeners only")
        if self.https and not self.domain_name:
            raise ValueError("domain_name: required with certificate_arn or hosted_zone_id (the name clients verify)")
