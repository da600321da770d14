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
  :mod:`components.container_definition`; the arguments and their validation: :mod:`components.service_args`.
"""

from __future__ import annotations

import re
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.admin_step import build_admin_step
from components.container_definition import (  # noqa: F401 (re-exported: the contract's names)
    CONTAINER_NAME, CONTAINER_PORT, HEALTHCHECK_COMMAND, SPOOL_PATH, SPOOL_VOLUME, STOP_TIMEOUT_SECONDS,
    container_definition)
from components.load_balancer import DEREGISTRATION_DELAY_SECONDS, build_load_balancer  # noqa: F401
from components.gc_schedule import build_gc_schedule
from components.service_args import (ARCHITECTURES, FARGATE_MEMORY, LOG_RETENTION_DAYS,  # noqa: F401 (re-exported)
                                     ServiceArgs)
from components.service_roles import server_roles
from components.work_hours import build_actions

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
            access_logs_bucket=args.access_logs_bucket, sso=args.sso, tags=tags)

        # --- task definition ---------------------------------------------------------------
        # The domain is the only name a certificate covers, so with one it is the only Host the
        # server admits; the ALB's own DNS name then fails TLS verification anyway. The ALB's
        # health checks need no allowed host: MLflow exempts /health from the host check.
        container = container_definition(
            args, prefix=prefix, log_group_name=log_group.name, admin_secret_arn=admin_secret.arn,
            flask_secret_arn=flask_secret.arn, allowed_hosts=lb.host, signer_arn=lb.alb.arn)
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
