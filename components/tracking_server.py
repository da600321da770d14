"""MlflowTrackingServer: the composition of Network, Database, ArtifactStore, ContainerImage and
Service. It creates only what joins them: the service security group (here, so that the
database and the load balancer can both reference it without a cycle) and its rules.

Security groups reference security groups: ALB SG -> service SG (port 5000) -> database SG
(engine port). The service may also leave on 443 (ECR, Secrets Manager, CloudWatch Logs,
S3 through the gateway endpoint). The database admin step's one-off task runs in the service
security group too: it needs exactly the same paths (the database, Secrets Manager, ECR, Logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.artifact_store import ArtifactStore, ArtifactStoreArgs
from components.container_image import ContainerImage, ContainerImageArgs
from components.database import DEFAULT_ENGINE_VERSION, Database, DatabaseArgs
from components.naming import check_resource_name
from components.monitoring import AlarmThresholds, AlbAccessLogs, AlbAccessLogsArgs, Monitoring, MonitoringArgs
from components.network import Network, NetworkArgs
from components.service import Service, ServiceArgs
from components.sso import SingleSignOn, callback_url
from components.takeover import Takeover
from components.work_hours import WorkHours
from components.sizing import pool_sizing


@dataclass(frozen=True, kw_only=True)
class MlflowTrackingServerArgs:
    # --- where ---------------------------------------------------------------------------------
    availability_zones: tuple[str, ...]
    """Zones to span (2 to 4), resolved once by the program."""
    region: str
    """AWS region."""
    account_id: str
    """AWS account id (scopes the roles' trust policy)."""
    # --- network -------------------------------------------------------------------------------
    vpc_cidr: str = "10.0.0.0/16"
    """VPC range (/16 to /20)."""
    nat_mode: str = "single"
    """``none`` | ``single`` | ``perAz``."""
    network_implementation: str = "awsx"
    """``awsx`` or ``legacy`` (the hand-built network, for stacks that keep it)."""
    task_subnets: str = "private"
    """Where the tasks run: ``private`` or ``public`` (a public IP each, no NAT needed)."""
    # --- database ------------------------------------------------------------------------------
    db_engine: str = "mysql"
    """``mysql`` | ``postgresql``."""
    db_engine_version: str
    """Exact Aurora engine version, resolved once by the program (used at creation only)."""
    db_parameter_group_family: str
    """Parameter group family of that version (the data source's ``parameter_group_family``)."""
    db_min_acu: float = 0.5
    """Minimum ACUs (0 = auto-pause)."""
    db_max_acu: float = 4.0
    """Maximum ACUs."""
    db_auto_pause_seconds: int = 3600
    """Idle seconds before pausing (with 0 ACU)."""
    db_reader: bool = False
    """A reader in the second zone."""
    db_backup_retention_days: int = 7
    """Backup retention."""
    deletion_protection: bool = True
    """RDS and ALB deletion protection."""
    final_snapshot: bool = True
    """Final snapshot when the cluster is deleted."""
    db_restore_snapshot: Optional[str] = None
    """DB cluster snapshot the cluster is created from (a restore: replaces the cluster, keeps the old)."""
    # --- artifacts -----------------------------------------------------------------------------
    bucket_force_destroy: bool = False
    """Let destroy empty the bucket."""
    bucket_versioning: bool = True
    """S3 versioning."""
    noncurrent_version_days: int = 30
    """Expiry of noncurrent versions."""
    bucket_kms_key_arn: Optional[str] = None
    """SSE-KMS key; ``None`` = SSE-S3."""
    takeover: Optional[Takeover] = None
    """An old MLflow's dumps for the admin step to import (:mod:`components.takeover`, docs/takeover.md)."""
    # --- image ---------------------------------------------------------------------------------
    image_ref: Optional[str] = None
    """Digest reference to run (nothing built); ``None`` = build ``image_context``."""
    image_context: str = "image"
    """Docker build context."""
    image_tag: Optional[str] = None
    """Tag of the build (default: a content hash of ``image_context``)."""
    ecr_images_kept: int = 10
    """ECR lifecycle: images kept."""
    # --- service -------------------------------------------------------------------------------
    cpu: int = 1024
    """Fargate cpu units."""
    memory: int = 2048
    """Fargate memory MiB."""
    ephemeral_storage_gib: int = 30
    """Artifact spool, 21..200 GiB."""
    cpu_architecture: str = "X86_64"
    """``X86_64`` | ``ARM64`` (task and image build)."""
    desired_count: int = 1
    """Tasks started by a deployment."""
    min_tasks: int = 1
    """Autoscaling minimum."""
    max_tasks: int = 1
    """Autoscaling maximum."""
    cpu_target_percent: int = 60
    """Autoscaling CPU target."""
    work_hours: Optional[WorkHours] = None
    """Run the tasks only in this weekly window (``schedule``); ``None`` = always."""
    server_workers: int = 2
    """uvicorn workers per task."""
    enable_job_execution: bool = False
    """MLflow's GenAI job runner."""
    db_idle_release_seconds: int = 300
    """Idle time after which a task closes its database connections (0 = never)."""
    gc_older_than_days: int = 0
    """Scheduled gc of runs deleted more than this many days ago (docs/housekeeping.md); 0 = off."""
    gc_schedule: str = "cron(0 3 * * ? *)"
    """EventBridge Scheduler expression (UTC) of the gc task."""
    log_retention_days: int = 30
    """Container log retention."""
    container_insights: bool = False
    """ECS Container Insights."""
    admin_username: str = "admin"
    """MLflow admin user."""
    auth_default_permission: str = "READ"
    """Permission on resources a user does not own."""
    auth_cache_ttl_seconds: int = 60
    """Credential cache lifetime."""
    # --- load balancer -------------------------------------------------------------------------
    alb_scheme: str = "internet-facing"
    """``internet-facing`` | ``internal``."""
    allowed_cidrs: tuple[str, ...]
    """Networks admitted on 80/443 (no default: see ``ServiceArgs.allowed_cidrs``)."""
    certificate_arn: Optional[str] = None
    """ACM certificate of this region covering ``domain_name`` (HTTPS + redirect)."""
    hosted_zone_id: Optional[str] = None
    """Route 53 zone of ``domain_name``: alias record, and a DNS-validated certificate unless
    ``certificate_arn``. Neither: plain HTTP."""
    domain_name: Optional[str] = None
    """Tracking URI host and only allowed Host header (required with HTTPS)."""
    idle_timeout_seconds: int = 900
    """ALB idle timeout."""
    # --- monitoring (components/monitoring.py, docs/operations.md) -------------------------------
    alarm_thresholds: AlarmThresholds = AlarmThresholds()
    """Percentages at which the alarms fire."""
    alarm_email: Optional[str] = None
    """E-mail address subscribed to the alarms topic."""
    alb_access_logs: bool = False
    """Load balancer access logs to an S3 bucket."""
    alb_access_log_days: int = 90
    """Days the access logs are kept."""
    waf_rate_limit: int = 0
    """WAF rate limit per client IP (requests per 5 minutes); 0 = no web ACL."""
    sso: Optional[SingleSignOn] = None
    """Single sign-on for the web UI through the load balancer (docs/sso.md); ``None`` = off."""
    # --- protection ----------------------------------------------------------------------------
    protect_data: bool = True
    """Pulumi ``protect`` on the database cluster and instances, the bucket and the data secrets."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags on every resource."""

    def __post_init__(self) -> None:
        if self.db_engine not in DEFAULT_ENGINE_VERSION:
            raise ValueError(f"db_engine: mysql or postgresql, got {self.db_engine!r}")
        # Fails early (ValueError) when the fleet cannot fit the database's connection limit.
        self.pool()

    def pool(self):
        return pool_sizing(engine=self.db_engine, min_acu=self.db_min_acu, max_acu=self.db_max_acu,
                           max_tasks=self.max_tasks, workers=self.server_workers,
                           job_execution=self.enable_job_execution)


class MlflowTrackingServer(pulumi.ComponentResource):
    tracking_uri: pulumi.Output[str]
    """``MLFLOW_TRACKING_URI`` for clients."""
    load_balancer_dns_name: pulumi.Output[str]
    """DNS name of the ALB."""
    artifact_bucket_name: pulumi.Output[str]
    """Artifact bucket."""
    database_endpoint: pulumi.Output[str]
    """Aurora writer endpoint (reachable from the service only)."""
    image_ref: pulumi.Output[str]
    """Digest reference of the running image."""
    admin_secret_arn: pulumi.Output[str]
    """Secret holding the admin ``username`` and ``password`` (never the password itself)."""
    service_security_group_id: pulumi.Output[str]
    """Security group of the tasks."""

    def __init__(self, name: str, args: MlflowTrackingServerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        check_resource_name(name)  # before registering anything: it prefixes every AWS name below
        super().__init__("mlflowtracking:index:MlflowTrackingServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)

        network = Network(f"{name}-network", NetworkArgs(
            availability_zones=args.availability_zones, region=args.region, cidr_block=args.vpc_cidr,
            nat_mode=args.nat_mode, implementation=args.network_implementation, task_subnets=args.task_subnets,
            tags=tags), opts=child)

        service_sg = aws.ec2.SecurityGroup(f"{name}-service-sg", vpc_id=network.vpc_id,
                                           description="MLflow tasks: port 5000 from the ALB only",
                                           tags={**tags, "Name": f"{name}-service"}, opts=child)
        aws.vpc.SecurityGroupEgressRule(f"{name}-service-https-out", security_group_id=service_sg.id,
                                        ip_protocol="tcp", from_port=443, to_port=443, cidr_ipv4="0.0.0.0/0",
                                        description="ECR, Secrets Manager, CloudWatch Logs, S3", opts=child)
        if network.endpoint_security_group_id is not None:
            aws.vpc.SecurityGroupIngressRule(f"{name}-endpoints-from-service",
                                             security_group_id=network.endpoint_security_group_id,
                                             ip_protocol="tcp", from_port=443, to_port=443,
                                             referenced_security_group_id=service_sg.id,
                                             description="MLflow tasks", opts=child)

        database = Database(f"{name}-database", DatabaseArgs(
            vpc_id=network.vpc_id, subnet_ids=network.isolated_subnet_ids,
            availability_zones=args.availability_zones, client_security_group_id=service_sg.id,
            engine=args.db_engine, engine_version=args.db_engine_version,
            parameter_group_family=args.db_parameter_group_family, min_acu=args.db_min_acu,
            max_acu=args.db_max_acu, auto_pause_seconds=args.db_auto_pause_seconds, reader=args.db_reader,
            backup_retention_days=args.db_backup_retention_days, deletion_protection=args.deletion_protection,
            final_snapshot=args.final_snapshot, restore_snapshot=args.db_restore_snapshot, protect=args.protect_data,
            tags=tags), opts=child)
        aws.vpc.SecurityGroupEgressRule(f"{name}-service-to-database", security_group_id=service_sg.id,
                                        ip_protocol="tcp", from_port=database.port, to_port=database.port,
                                        referenced_security_group_id=database.security_group_id,
                                        description="Aurora", opts=child)

        artifacts = ArtifactStore(f"{name}-artifacts", ArtifactStoreArgs(
            force_destroy=args.bucket_force_destroy, versioning=args.bucket_versioning,
            noncurrent_version_days=args.noncurrent_version_days, kms_key_arn=args.bucket_kms_key_arn,
            protect=args.protect_data, tags=tags), opts=child)

        image = ContainerImage(f"{name}-image", ContainerImageArgs(
            image_ref=args.image_ref, context=args.image_context, tag=args.image_tag, cpu_architecture=args.cpu_architecture,
            images_kept=args.ecr_images_kept, force_delete=not args.protect_data, protect=args.protect_data,
            tags=tags), opts=child)

        access_logs = AlbAccessLogs(f"{name}-alb-logs", AlbAccessLogsArgs(
            region=args.region, account_id=args.account_id, expire_days=args.alb_access_log_days,
            protect=args.protect_data, tags=tags), opts=child) if args.alb_access_logs else None

        pool = args.pool()
        service = Service(f"{name}-service", ServiceArgs(
            vpc_id=network.vpc_id, public_subnet_ids=network.public_subnet_ids,
            private_subnet_ids=network.private_subnet_ids, service_security_group_id=service_sg.id,
            task_subnets=args.task_subnets, work_hours=args.work_hours,
            region=args.region, account_id=args.account_id,
            image_ref=image.image_ref, repository_arn=image.repository_arn,
            cpu=args.cpu, memory=args.memory, ephemeral_storage_gib=args.ephemeral_storage_gib,
            cpu_architecture=args.cpu_architecture, workers=args.server_workers,
            pool_size=pool.pool_size, max_overflow=pool.max_overflow,
            enable_job_execution=args.enable_job_execution, log_retention_days=args.log_retention_days,
            db_idle_release_seconds=args.db_idle_release_seconds,
            gc_older_than_days=args.gc_older_than_days, gc_schedule=args.gc_schedule,
            desired_count=args.desired_count, min_tasks=args.min_tasks, max_tasks=args.max_tasks,
            cpu_target_percent=args.cpu_target_percent,
            db_engine=args.db_engine, db_host=database.endpoint, db_port=database.port,
            db_name=database.database_name, db_user=database.app_username,
            db_app_secret_arn=database.app_secret_arn, db_master_secret_arn=database.master_secret_arn,
            db_cluster_identifier=database.cluster_identifier,
            bucket_name=artifacts.bucket_name, bucket_arn=artifacts.bucket_arn, artifact_prefix=artifacts.prefix,
            bucket_kms_key_arn=args.bucket_kms_key_arn, takeover=args.takeover,
            admin_username=args.admin_username, auth_default_permission=args.auth_default_permission,
            auth_cache_ttl_seconds=args.auth_cache_ttl_seconds, protect=args.protect_data,
            alb_scheme=args.alb_scheme, allowed_cidrs=args.allowed_cidrs, certificate_arn=args.certificate_arn,
            hosted_zone_id=args.hosted_zone_id, domain_name=args.domain_name,
            idle_timeout_seconds=args.idle_timeout_seconds, deletion_protection=args.deletion_protection,
            container_insights=args.container_insights, depends_on=database.ready, sso=args.sso,
            access_logs_bucket=access_logs.bucket_name if access_logs else None, tags=tags), opts=child)

        Monitoring(f"{name}-monitoring", MonitoringArgs(
            region=args.region, account_id=args.account_id, load_balancer_arn=service.load_balancer_arn,
            load_balancer_arn_suffix=service.load_balancer_arn_suffix,
            target_group_arn_suffix=service.target_group_arn_suffix, cluster_name=service.cluster_name,
            service_name=service.service_name, service_arn=service.service_arn,
            db_cluster_identifier=database.cluster_identifier, db_connection_limit=pool.connection_limit,
            container_insights=args.container_insights, min_tasks=args.min_tasks, work_hours=args.work_hours,
            thresholds=args.alarm_thresholds,
            alarm_email=args.alarm_email, waf_rate_limit=args.waf_rate_limit, tags=tags), opts=child)

        self.tracking_uri = service.tracking_uri
        self.load_balancer_dns_name = service.load_balancer_dns_name
        self.artifact_bucket_name = artifacts.bucket_name
        self.database_endpoint = database.endpoint
        self.image_ref = image.image_ref
        self.admin_secret_arn = service.admin_secret_arn
        self.service_security_group_id = service_sg.id
        self.sso_callback_url = (pulumi.Output.from_input(callback_url(args.domain_name))
                                 if args.sso is not None and args.domain_name else None)
        self.register_outputs({
            "trackingUri": self.tracking_uri,
            "loadBalancerDnsName": self.load_balancer_dns_name,
            "artifactBucketName": self.artifact_bucket_name,
            "databaseEndpoint": self.database_endpoint,
            "imageRef": self.image_ref,
            "adminSecretArn": self.admin_secret_arn,
        })
