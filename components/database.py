"""Database: Aurora Serverless v2 (MySQL or PostgreSQL), the backend and auth store of MLflow.

Private by construction: subnet group on the isolated subnets, instances not publicly
accessible, its own security group admitting the engine port only from the client (service)
security group. Storage encrypted. TLS required by the cluster itself: a cluster parameter group
of the engine version's family with ``require_secure_transport = ON`` (Aurora MySQL) or
``rds.force_ssl = 1`` (Aurora PostgreSQL), both dynamic parameters.

Two database users (README "Database users"):

- The master user. RDS manages its password (``manage_master_user_password``): RDS generates it,
  keeps it in a Secrets Manager secret of its own (JSON ``username``, ``password``) and rotates it
  every 7 days by default. No password is in the program or its state. Only the admin step (a
  one-off ECS task, :mod:`components.admin_task`) reads that secret, fresh at every run.
- The application user (:attr:`DatabaseArgs.app_username`), which the server uses. Its secret is
  created here *without a value*: the admin step generates the password, stores it (JSON
  ``username``, ``password``) and makes the database user's password match it on every run.

Versions: the caller passes the exact version it resolved (the program asks the
``aws_rds_engine_version`` data source once) and that version's parameter group family. The version
is used at creation only: ``engineVersion`` is in ``ignore_changes``, so AWS's automatic minor
upgrades (and newer minors found later) never plan a downgrade, which RDS refuses. Instances follow
their cluster's version. A major upgrade is a deliberate operation outside this program (it also
needs a parameter group of the new family).

Changes to the cluster apply immediately (``apply_immediately``), not in the maintenance window:
what this program changes on a running cluster (capacity, backups, windows, protection, the managed
password, the parameter group) causes no outage, and the admin step needs the managed secret in the
same ``pulumi up``.

Restore (docs/upgrading.md "Restore"): :attr:`DatabaseArgs.restore_snapshot` creates the cluster
from a DB cluster snapshot (``snapshot_identifier``, which replaces the cluster: terraform-provider-aws
marks it ForceNew, and suppresses the diff when it is removed again, so clearing the setting later
changes nothing). The provider's restore (``RestoreDBClusterFromSnapshot``) takes the subnet group,
security group, parameter group, port, engine version and database name from here; the master user
name comes from the snapshot (it cannot change on a restore: keep ``master_username``); the managed
master password, backups, windows and capacity are applied by a ``ModifyDBCluster`` right after, so
the restored cluster gets a new RDS-managed master secret. With ``protect`` the cluster and its
instances are also ``retain_on_delete``: a replacement (a restore) leaves the old cluster and its
instances in AWS, untouched, instead of deleting them; Pulumi decides that from the *state* of the
old resource, so the option must be in the state before the restore (it is, from the first ``pulumi
up`` with this version). The same option keeps an instance that a change replaces (a new zone)
running in the cluster: delete it by hand.

Windows (UTC): backups 02:00-03:00 daily, maintenance (minor upgrades, patches) Sunday
03:30-04:30 on the cluster and every instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import re

import pulumi
import pulumi_aws as aws
import pulumi_random as random

ENGINES = {"mysql": ("aurora-mysql", 3306), "postgresql": ("aurora-postgresql", 5432)}
"""Engine setting -> (Aurora engine name, port)."""
DEFAULT_ENGINE_VERSION = {"mysql": "8.0.mysql_aurora.3", "postgresql": "16"}
"""Major lines used when none is given; the program resolves each to its newest minor (both lines'
current minors support 0 ACU)."""
BACKUP_WINDOW = "02:00-03:00"
"""Daily automated backups (UTC)."""
MAINTENANCE_WINDOW = "sun:03:30-sun:04:30"
"""Weekly maintenance (UTC), clear of the backup window (RDS refuses overlapping windows)."""
TLS_PARAMETER = {"mysql": ("require_secure_transport", "ON"), "postgresql": ("rds.force_ssl", "1")}
"""The DB cluster parameter that makes each engine refuse connections without TLS (both dynamic)."""
APP_USERNAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
"""A user name both engines take unquoted (MySQL: at most 32 characters)."""


@dataclass(frozen=True, kw_only=True)
class DatabaseArgs:
    vpc_id: pulumi.Input[str]
    """VPC of the database security group."""
    subnet_ids: list[pulumi.Input[str]]
    """Isolated subnets (at least two zones) for the DB subnet group."""
    availability_zones: tuple[str, ...]
    """Zones of those subnets; the writer goes in the first, a reader in the second."""
    client_security_group_id: pulumi.Input[str]
    """The only security group admitted on the engine port (the ECS service's)."""
    engine: str = "mysql"
    """``mysql`` (Aurora MySQL 3) or ``postgresql``."""
    engine_version: str
    """Exact Aurora engine version, used at creation (min 0 ACU needs MySQL >= 3.08 / PostgreSQL >=
    13.15, 14.12, 15.7, 16.3); later changes are ignored (see the module docstring)."""
    parameter_group_family: str
    """Parameter group family of ``engine_version`` (``aurora-mysql8.0``, ``aurora-postgresql16``),
    as the ``aws_rds_engine_version`` data source reports it."""
    min_acu: float = 0.5
    """Serverless v2 minimum capacity, 0 to 256 in steps of 0.5 (0 = pause when idle)."""
    max_acu: float = 4.0
    """Serverless v2 maximum capacity, 1 to 256 and at least ``min_acu``."""
    auto_pause_seconds: int = 3600
    """Idle seconds before pausing (300 to 86400); used only when ``min_acu`` is 0."""
    reader: bool = False
    """Add a reader instance in the second zone (failover target)."""
    backup_retention_days: int = 7
    """Automated backup retention, 1 to 35 days."""
    deletion_protection: bool = True
    """RDS deletion protection on the cluster."""
    final_snapshot: bool = True
    """Take a final snapshot when the cluster is deleted."""
    protect: bool = True
    """Pulumi ``protect`` on the cluster, its instances and the application user's secret."""
    database_name: str = "mlflow"
    """Tracking database created with the cluster."""
    master_username: str = "mlflow"
    """Master user (the admin step's; changing it replaces the cluster)."""
    restore_snapshot: Optional[str] = None
    """DB cluster snapshot (identifier, ``rds:<automated snapshot>`` or ARN) the cluster is created
    from; setting or changing it replaces the cluster (see the module docstring)."""
    app_username: str = "mlflow_app"
    """Application user: reads and writes the tracking and auth databases, nothing else."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags on every resource."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine: one of {tuple(ENGINES)}, got {self.engine!r}")
        if len(self.subnet_ids) < 2 or len(self.availability_zones) < 2:
            raise ValueError("subnet_ids/availability_zones: at least two zones")
        if not (0 <= self.min_acu <= 256 and (self.min_acu * 2).is_integer()):
            raise ValueError(f"min_acu: 0 to 256 in steps of 0.5, got {self.min_acu!r}")
        if not (1 <= self.max_acu <= 256 and (self.max_acu * 2).is_integer() and self.max_acu >= self.min_acu):
            raise ValueError(f"max_acu: 1 to 256 in steps of 0.5 and >= min_acu, got {self.max_acu!r}")
        if not 300 <= self.auto_pause_seconds <= 86400:
            raise ValueError(f"auto_pause_seconds: 300 to 86400, got {self.auto_pause_seconds!r}")
        if not 1 <= self.backup_retention_days <= 35:
            raise ValueError(f"backup_retention_days: 1 to 35, got {self.backup_retention_days!r}")
        if not self.parameter_group_family.startswith(ENGINES[self.engine][0]):
            raise ValueError(f"parameter_group_family: a family of {ENGINES[self.engine][0]}, "
                             f"got {self.parameter_group_family!r}")
        if not APP_USERNAME_RE.match(self.app_username) or self.app_username == self.master_username:
            raise ValueError(f"app_username: 1-32 lower-case letters, digits and underscores, starting with a "
                             f"letter, not the master user; got {self.app_username!r}")

    @property
    def port(self) -> int:
        return ENGINES[self.engine][1]


class Database(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]
    """Writer endpoint (host name)."""
    reader_endpoint: pulumi.Output[str]
    """Reader endpoint (host name)."""
    port: int
    """Engine port (3306 / 5432)."""
    database_name: str
    """Tracking database name."""
    master_username: str
    """Master user name."""
    master_secret_arn: pulumi.Output[str]
    """RDS's secret of the master user (JSON ``username``, ``password``): the admin step only."""
    app_username: str
    """Application user name (the server's)."""
    app_secret_arn: pulumi.Output[str]
    """Secret of the application user (JSON ``username``, ``password``), written by the admin step."""
    engine: str
    """``mysql`` or ``postgresql``."""
    cluster_arn: pulumi.Output[str]
    """ARN of the Aurora cluster."""
    cluster_identifier: pulumi.Output[str]
    """Identifier of the Aurora cluster (what RDS's snapshot API takes)."""
    security_group_id: pulumi.Output[str]
    """The database's security group."""
    ready: list[pulumi.Resource]
    """What a client must wait for before its first connection: the writer instance (the cluster
    endpoint exists minutes before it accepts connections). Pass as ``depends_on``; the one
    exception to "expose IDs, not resources"."""

    def __init__(self, name: str, args: DatabaseArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:Database", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        data = pulumi.ResourceOptions(parent=self, protect=args.protect)
        # A replacement (a restore) must never delete the cluster or its instances (module docstring).
        kept = pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect)
        tags = dict(args.tags)
        engine_name, port = ENGINES[args.engine]

        sg = aws.ec2.SecurityGroup(f"{name}-sg", vpc_id=args.vpc_id,
                                   description=f"Aurora {args.engine}: port {port} from the MLflow service only",
                                   tags={**tags, "Name": f"{name}-sg"}, opts=child)
        aws.vpc.SecurityGroupIngressRule(f"{name}-from-service", security_group_id=sg.id, ip_protocol="tcp",
                                         from_port=port, to_port=port,
                                         referenced_security_group_id=args.client_security_group_id,
                                         description="MLflow service", opts=child)
        subnet_group = aws.rds.SubnetGroup(f"{name}-subnets", subnet_ids=args.subnet_ids,
                                           description="Isolated subnets of the MLflow database", tags=tags, opts=child)

        tls_name, tls_value = TLS_PARAMETER[args.engine]
        params = aws.rds.ClusterParameterGroup(
            f"{name}-params", family=args.parameter_group_family,
            description=f"MLflow {args.engine}: TLS required ({tls_name} = {tls_value})",
            parameters=[{"name": tls_name, "value": tls_value, "apply_method": "immediate"}], tags=tags, opts=child)

        final_snapshot_id = None
        if args.final_snapshot:
            suffix = random.RandomId(f"{name}-final-snapshot-suffix", byte_length=4, opts=child)
            final_snapshot_id = pulumi.Output.concat(f"{name}-final-", suffix.hex)

        scaling: dict = {"min_capacity": args.min_acu, "max_capacity": args.max_acu}
        if args.min_acu == 0:
            scaling["seconds_until_auto_pause"] = args.auto_pause_seconds

        cluster = aws.rds.Cluster(
            f"{name}-cluster",
            engine=engine_name,
            engine_mode="provisioned",
            engine_version=args.engine_version,
            database_name=args.database_name,
            master_username=args.master_username,
            manage_master_user_password=True,
            db_cluster_parameter_group_name=params.name,
            apply_immediately=True,
            port=port,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[sg.id],
            storage_encrypted=True,
            serverlessv2_scaling_configuration=scaling,
            backup_retention_period=args.backup_retention_days,
            preferred_backup_window=BACKUP_WINDOW,
            preferred_maintenance_window=MAINTENANCE_WINDOW,
            copy_tags_to_snapshot=True,
            deletion_protection=args.deletion_protection,
            skip_final_snapshot=not args.final_snapshot,
            final_snapshot_identifier=final_snapshot_id,
            snapshot_identifier=args.restore_snapshot,
            tags=tags,
            # a restore takes the snapshot's version (program.resolve_restore_snapshot): Pulumi would
            # otherwise put the version recorded at creation into the replacement
            opts=pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(
                ignore_changes=None if args.restore_snapshot else ["engineVersion"])),
        )

        instances = [("writer", args.availability_zones[0], 0)]
        if args.reader:
            instances.append(("reader", args.availability_zones[1], 1))
        created = {}
        for role, zone, tier in instances:
            created[role] = aws.rds.ClusterInstance(
                f"{name}-{role}",
                cluster_identifier=cluster.id,
                engine=engine_name,
                instance_class="db.serverless",
                availability_zone=zone,
                promotion_tier=tier,
                publicly_accessible=False,
                db_subnet_group_name=subnet_group.name,
                auto_minor_version_upgrade=True,
                preferred_maintenance_window=MAINTENANCE_WINDOW,
                tags=tags,
                opts=kept,
            )

        # No version: the admin step writes the first one (see the module docstring).
        app_secret = aws.secretsmanager.Secret(
            f"{name}-app-credentials",
            description=f"MLflow database application user {args.app_username!r} (JSON: username, password); "
                        "written by the admin step",
            recovery_window_in_days=7 if args.protect else 0,
            tags=tags,
            opts=data,
        )

        self.endpoint = cluster.endpoint
        self.reader_endpoint = cluster.reader_endpoint
        self.port = port
        self.database_name = args.database_name
        self.master_username = args.master_username
        self.master_secret_arn = cluster.master_user_secrets.apply(_master_secret_arn)
        self.app_username = args.app_username
        self.app_secret_arn = app_secret.arn
        self.engine = args.engine
        self.cluster_arn = cluster.arn
        self.cluster_identifier = cluster.cluster_identifier
        self.security_group_id = sg.id
        self.ready = [created["writer"]]
        self.register_outputs({
            "endpoint": self.endpoint,
            "readerEndpoint": self.reader_endpoint,
            "port": self.port,
            "clusterArn": self.cluster_arn,
            "securityGroupId": self.security_group_id,
            "masterSecretArn": self.master_secret_arn,
            "appSecretArn": self.app_secret_arn,
        })


def _master_secret_arn(secrets: list[aws.rds.outputs.ClusterMasterUserSecret]) -> str:
    """The ARN of RDS's master user secret (``master_user_secrets[0].secret_arn``)."""
    if not secrets or not secrets[0].secret_arn:
        raise ValueError("the Aurora cluster reports no master user secret (manage_master_user_password "
                         "not applied yet?)")
    return secrets[0].secret_arn
