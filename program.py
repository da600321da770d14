"""The Pulumi program: settings -> one ``MlflowTrackingServer`` -> stack outputs.

``__main__.py`` calls :func:`define_stack`; the unit tests and the automation code run the same
function under mocks. Data sources (zones, region, account) are resolved here, once.
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_aws as aws

import config
from components import outputs
from components.container_image import context_digest
from components.tracking_server import MlflowTrackingServer, MlflowTrackingServerArgs

ROOT = Path(__file__).resolve().parent
IMAGE_CONTEXT = "image"
"""Build context of the server image, relative to the project directory (where Pulumi runs)."""
RESOURCE_NAME = "mlflow"


def server_args(settings: config.Settings, zones: list[str], region: str, account_id: str) -> MlflowTrackingServerArgs:
    """Map validated settings (and the resolved data sources) onto the composition's args."""
    s = settings
    return MlflowTrackingServerArgs(
        availability_zones=tuple(zones[: s.az_count]), region=region, account_id=account_id,
        vpc_cidr=s.vpc_cidr, nat_mode=s.nat_mode,
        db_engine=s.db_engine, db_engine_version=s.db_engine_version, db_min_acu=s.db_min_acu,
        db_max_acu=s.db_max_acu, db_auto_pause_seconds=s.db_auto_pause_seconds, db_reader=s.db_reader,
        db_backup_retention_days=s.db_backup_retention_days, deletion_protection=s.deletion_protection,
        final_snapshot=s.final_snapshot,
        bucket_force_destroy=s.bucket_force_destroy, bucket_versioning=s.bucket_versioning,
        noncurrent_version_days=s.noncurrent_version_days, bucket_kms_key_arn=s.bucket_kms_key_arn,
        image_ref=s.image_ref, image_context=IMAGE_CONTEXT,
        image_tag=None if s.image_ref else context_digest(ROOT / IMAGE_CONTEXT), ecr_images_kept=s.ecr_images_kept,
        cpu=s.cpu, memory=s.memory, ephemeral_storage_gib=s.ephemeral_storage_gib,
        cpu_architecture=s.cpu_architecture, desired_count=s.desired_count, min_tasks=s.min_tasks,
        max_tasks=s.max_tasks, cpu_target_percent=s.cpu_target_percent, server_workers=s.server_workers,
        enable_job_execution=s.enable_job_execution, log_retention_days=s.log_retention_days,
        container_insights=s.is_prod, admin_username=s.admin_username,
        auth_default_permission=s.auth_default_permission, auth_cache_ttl_seconds=s.auth_cache_ttl_seconds,
        alb_scheme=s.alb_scheme, allowed_cidrs=s.allowed_cidrs, certificate_arn=s.certificate_arn,
        domain_name=s.domain_name, idle_timeout_seconds=s.idle_timeout_seconds, protect_data=s.protect_data,
        tags={"project": config.NAMESPACE, "stack": pulumi.get_stack(), "environment": s.environment},
    )


def define_stack() -> MlflowTrackingServer:
    """Load the settings, resolve zones/region/account, build the stack, export its outputs.

    :raises config.SettingsError: on a bad setting, before any resource is registered.
    """
    settings = config.load_settings()

    zones = aws.get_availability_zones(state="available").names
    if len(zones) < settings.az_count:
        raise config.SettingsError(
            f"invalid setting {config.NAMESPACE}:azCount = '{settings.az_count}'; allowed: at most "
            f"{len(zones)} (the available zones of this region: {', '.join(zones)})")
    region = aws.get_region().region
    account_id = aws.get_caller_identity().account_id

    server = MlflowTrackingServer(RESOURCE_NAME, server_args(settings, list(zones), region, account_id))

    pulumi.export(outputs.TRACKING_URI, server.tracking_uri)
    pulumi.export(outputs.LOAD_BALANCER_DNS, server.load_balancer_dns_name)
    pulumi.export(outputs.ARTIFACT_BUCKET, server.artifact_bucket_name)
    pulumi.export(outputs.DATABASE_ENDPOINT, server.database_endpoint)
    pulumi.export(outputs.IMAGE_REF, server.image_ref)
    pulumi.export(outputs.ADMIN_SECRET_ARN, server.admin_secret_arn)
    return server
