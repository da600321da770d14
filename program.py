"""The Pulumi program: settings -> one ``MlflowTrackingServer`` -> stack outputs.

``__main__.py`` calls :func:`define_stack`; the unit tests and the automation code run the same
function under mocks. Data sources (zones, region, account, the Aurora engine version) are
resolved here, once, and the rules that need them (zone count, certificate region, 0-ACU
support of the resolved version) fail here with one line naming the setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pulumi
import pulumi_aws as aws

import config
from components import outputs
from components.database import ENGINES
from components.container_image import build_tag
from components.tracking_server import MlflowTrackingServer, MlflowTrackingServerArgs

ROOT = Path(__file__).resolve().parent
IMAGE_CONTEXT = "image"
"""Build context of the server image, relative to the project directory (where Pulumi runs)."""
RESOURCE_NAME = "mlflow"


class ResolvedEngine(NamedTuple):
    version: str
    """The exact Aurora version (``version_actual``)."""
    parameter_group_family: str
    """Its parameter group family (``aurora-mysql8.0``, ``aurora-postgresql16``)."""


def server_args(settings: config.Settings, zones: list[str], region: str, account_id: str,
                engine: ResolvedEngine) -> MlflowTrackingServerArgs:
    """Map validated settings (and the resolved data sources) onto the composition's args."""
    s = settings
    return MlflowTrackingServerArgs(
        availability_zones=tuple(zones[: s.az_count]), region=region, account_id=account_id,
        vpc_cidr=s.vpc_cidr, nat_mode=s.nat_mode, network_implementation=s.network_implementation,
        task_subnets=s.task_subnets, work_hours=s.schedule,
        db_engine=s.db_engine, db_engine_version=engine.version,
        db_parameter_group_family=engine.parameter_group_family, db_min_acu=s.db_min_acu,
        db_max_acu=s.db_max_acu, db_auto_pause_seconds=s.db_auto_pause_seconds, db_reader=s.db_reader,
        db_backup_retention_days=s.db_backup_retention_days, deletion_protection=s.deletion_protection,
        final_snapshot=s.final_snapshot, db_restore_snapshot=s.db_restore_snapshot,
        bucket_force_destroy=s.bucket_force_destroy, bucket_versioning=s.bucket_versioning,
        noncurrent_version_days=s.noncurrent_version_days, bucket_kms_key_arn=s.bucket_kms_key_arn,
        image_ref=s.image_ref, image_context=IMAGE_CONTEXT,
        image_tag=None if s.image_ref else build_tag(ROOT / IMAGE_CONTEXT, s.cpu_architecture),
        ecr_images_kept=s.ecr_images_kept,
        cpu=s.cpu, memory=s.memory, ephemeral_storage_gib=s.ephemeral_storage_gib,
        cpu_architecture=s.cpu_architecture, desired_count=s.desired_count, min_tasks=s.min_tasks,
        max_tasks=s.max_tasks, cpu_target_percent=s.cpu_target_percent, server_workers=s.server_workers,
        enable_job_execution=s.enable_job_execution, log_retention_days=s.log_retention_days,
        db_idle_release_seconds=s.db_idle_release_seconds,
        gc_older_than_days=s.gc_older_than_days, gc_schedule=s.gc_schedule, takeover=s.takeover,
        container_insights=s.is_prod, admin_username=s.admin_username,
        alarm_thresholds=s.alarm_thresholds, alarm_email=s.alarm_email, alb_access_logs=s.alb_access_logs,
        alb_access_log_days=s.alb_access_log_days, waf_rate_limit=s.waf_rate_limit, sso=s.sso,
        auth_default_permission=s.auth_default_permission, auth_cache_ttl_seconds=s.auth_cache_ttl_seconds,
        alb_scheme=s.alb_scheme, allowed_cidrs=s.allowed_cidrs, certificate_arn=s.certificate_arn,
        hosted_zone_id=s.hosted_zone_id, domain_name=s.domain_name, idle_timeout_seconds=s.idle_timeout_seconds, protect_data=s.protect_data,
        tags={"project": config.NAMESPACE, "stack": pulumi.get_stack(), "environment": s.environment},
    )


def resolve_engine_version(settings: config.Settings) -> ResolvedEngine:
    """The exact Aurora version ``dbEngineVersion`` means in this region: the newest minor of a
    major line, or the exact version if the region offers it (``aws_rds_engine_version``;
    the parameter group family is an exact filter, unlike a partial ``version``), and that
    version's parameter group family (the cluster parameter group that requires TLS needs it).

    :raises config.SettingsError: when the region offers no such version, or (with dbMinAcu 0) the
        version it resolves to cannot auto-pause.
    """
    line = config.engine_line(settings.db_engine, settings.db_engine_version)
    query = {"engine": ENGINES[settings.db_engine][0], "parameter_group_family": line.parameter_group_family}
    query.update({"preferred_versions": [line.exact]} if line.exact else {"latest": True})
    try:
        result = aws.rds.get_engine_version(**query)
        resolved = result.version_actual
    except Exception as err:  # the provider's message names the criteria, not the setting
        raise config.SettingsError(
            f"invalid setting {config.NAMESPACE}:dbEngineVersion = '{settings.db_engine_version}'; allowed: a "
            f"version Aurora offers in this region for Serverless v2 ({str(err).splitlines()[0][:200]})") from None
    if not resolved:
        raise config.SettingsError(f"invalid setting {config.NAMESPACE}:dbEngineVersion = "
                                   f"'{settings.db_engine_version}'; allowed: a version Aurora offers in this region")
    config.check_zero_acu(settings, resolved)
    return ResolvedEngine(resolved, result.parameter_group_family)


def resolve_restore_snapshot(settings: config.Settings, engine: ResolvedEngine) -> ResolvedEngine:
    """With ``dbRestoreSnapshot``: the engine version to restore at, the snapshot's own.

    The cluster's ``engineVersion`` is in ``ignore_changes`` for AWS's automatic minor upgrades,
    and Pulumi applies that to a replacement too (the old recorded version would be asked for);
    RestoreDBClusterFromSnapshot restores at the snapshot's version or a newer one, and automatic
    minor upgrades will have moved the snapshot past the version recorded at creation. So a restore
    takes the version from the snapshot (``aws_rds_cluster_snapshot``), and the snapshot must exist
    in this region and be of ``dbEngine``; otherwise one line at preview.

    :raises config.SettingsError: no such snapshot, or one of another engine.
    """
    ident = settings.db_restore_snapshot
    setting = f"invalid setting {config.NAMESPACE}:dbRestoreSnapshot = '{ident}'"
    query: dict = {"db_cluster_snapshot_identifier": ident, "most_recent": True}
    if ident.startswith("rds:"):  # DescribeDBClusterSnapshots: an automated one needs its SnapshotType
        query["snapshot_type"] = "automated"
    elif ident.startswith("arn:"):  # possibly shared from another account
        query["include_shared"] = True
    try:
        snap = aws.rds.get_cluster_snapshot(**query)
    except Exception as err:
        raise config.SettingsError(f"{setting}; allowed: a DB cluster snapshot in this region "
                                   f"({str(err).splitlines()[0][:200]})") from None
    want = ENGINES[settings.db_engine][0]
    if snap.engine != want or not snap.engine_version:
        raise config.SettingsError(f"{setting}; allowed: a snapshot of {want} (dbEngine {settings.db_engine}), "
                                   f"got {snap.engine or 'no engine'}")
    try:
        family = aws.rds.get_engine_version(engine=want, version=snap.engine_version).parameter_group_family
    except Exception as err:
        raise config.SettingsError(f"{setting}; its engine version {snap.engine_version} is not offered in this "
                                   f"region ({str(err).splitlines()[0][:200]})") from None
    return ResolvedEngine(snap.engine_version, family or engine.parameter_group_family)


def resolve_server_args(settings: config.Settings) -> MlflowTrackingServerArgs:
    """Resolve zones/region/account/engine version (data sources) and map the settings onto the
    composition's args; shared with the component package (components/package.py).

    :raises config.SettingsError: on a setting the region rules out, before any resource is registered.
    """
    # Opted-in Local Zones are "available" too, and sort first; the database, NAT gateways and
    # the load balancer need the region's own zones.
    zones = aws.get_availability_zones(
        state="available", filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}]).names
    if len(zones) < settings.az_count:
        raise config.SettingsError(
            f"invalid setting {config.NAMESPACE}:azCount = '{settings.az_count}'; allowed: at most "
            f"{len(zones)} (the available zones of this region: {', '.join(zones)})")
    region = aws.get_region().region
    config.check_certificate_region(settings, region)
    config.check_sso_region(settings, region)
    account_id = aws.get_caller_identity().account_id
    engine = resolve_engine_version(settings)
    if settings.db_restore_snapshot:
        engine = resolve_restore_snapshot(settings, engine)
    return server_args(settings, list(zones), region, account_id, engine)


def define_stack() -> MlflowTrackingServer:
    """Load the settings, resolve zones/region/account/engine version, build the stack, export its
    outputs.

    :raises config.SettingsError: on a bad setting, before any resource is registered.
    """
    settings = config.load_settings()
    server = MlflowTrackingServer(RESOURCE_NAME, resolve_server_args(settings))

    pulumi.export(outputs.TRACKING_URI, server.tracking_uri)
    pulumi.export(outputs.LOAD_BALANCER_DNS, server.load_balancer_dns_name)
    pulumi.export(outputs.ARTIFACT_BUCKET, server.artifact_bucket_name)
    pulumi.export(outputs.DATABASE_ENDPOINT, server.database_endpoint)
    pulumi.export(outputs.IMAGE_REF, server.image_ref)
    pulumi.export(outputs.ADMIN_SECRET_ARN, server.admin_secret_arn)
    if server.sso_callback_url is not None:  # single sign-on (docs/sso.md): register it at the IdP
        pulumi.export(outputs.SSO_CALLBACK_URL, server.sso_callback_url)
    return server
