"""Every stack setting, in one place: read, typed, defaulted and validated.

Settings live in ``Pulumi.<stack>.yaml`` under the project's namespace (``mlflow-tracking:``),
camelCase. :func:`load_settings` reads all of them at once, rejects keys it does not know and
raises :class:`SettingsError` with one message naming the key, the value given and what is
allowed. Nothing else in the program reads Pulumi config.

``SettingsError`` is a :class:`pulumi.RunError`, so ``pulumi preview`` / ``pulumi up`` print
the message alone (no Python stack trace) and stop before any resource is registered.

The value parsers live in ``config_parsers.py``, the rules across settings (and those
``program.py`` applies once it knows the region and the engine version) in ``config_rules.py``.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Optional

import pulumi.runtime.config as _runtime_config

from components.database import ENGINES
from components.gc_schedule import DAYS_MAX as GC_DAYS_MAX
from components.gc_schedule import DEFAULT_SCHEDULE as GC_DEFAULT_SCHEDULE
from components.gc_schedule import check_schedule
from components.service import FARGATE_MEMORY, LOG_RETENTION_DAYS
from components.sso import SECRET_ARN_RE, SingleSignOn
from components.sso import parse as parse_sso
from components.takeover import Takeover
from components.takeover import parse as parse_takeover
from components.work_hours import WorkHours
from components.work_hours import parse as parse_work_hours
from config_parsers import (  # noqa: F401 (NAMESPACE, SettingsError and the patterns are this module's API)
    CERT_ARN_RE, DB_SNAPSHOT_RE, HOSTED_ZONE_RE, HOSTNAME_RE, IMAGE_REF_RE, KMS_ARN_RE, NAMESPACE, SettingsError, _acu, _bool,
    _choice, _cidrs, _engine_version, _fail, _int_in, _int_one_of, _kms_key_arn, _name, _optional, _vpc_cidr)
from config_parsers import EMAIL_RE, _alarms, _waf_rate_limit
from components.monitoring import AlarmThresholds
from config_rules import (  # noqa: F401 (used by program.py through this module)
    EngineLine, _check, check_certificate_region, check_sso_region, check_zero_acu, engine_line)

ENGINE_PORT = {engine: port for engine, (_, port) in ENGINES.items()}


def _gc_schedule(key: str, raw: Any) -> str:
    """A recurring EventBridge Scheduler expression (components.gc_schedule.check_schedule)."""
    try:
        return check_schedule(str(raw))
    except ValueError:
        raise _fail(key, raw, f"a recurring EventBridge Scheduler expression in UTC: cron(minutes hours "
                              f"day-of-month month day-of-week year) with ? in one day field, or rate(N hours|days) "
                              f"of an hour or more (e.g. {GC_DEFAULT_SCHEDULE})") from None


def _work_hours(key: str, raw: Any) -> Optional[WorkHours]:
    """When the tasks run (components.work_hours.parse)."""
    try:
        return parse_work_hours(raw)
    except ValueError as e:
        raise _fail(key, raw, str(e)) from None


def _takeover(key: str, raw: Any) -> Optional[Takeover]:
    """The dumps of an old MLflow to import (components.takeover.parse)."""
    try:
        return parse_takeover(raw)
    except ValueError as e:
        raise _fail(key, raw, str(e)) from None


def _sso(key: str, raw: Any) -> Optional[SingleSignOn]:
    """Single sign-on for the web UI (components.sso.parse). A refused value is echoed without
    anything that may be a secret pasted in the wrong place (a ``clientSecret`` key, or a
    ``clientSecretArn`` that is not an ARN)."""
    try:
        return parse_sso(raw)
    except ValueError as e:
        raise _fail(key, shown_sso(raw), str(e)) from None


def shown_sso(raw: Any) -> Any:
    """``raw`` as an error message may show it: values of keys that name a secret hidden, except a
    well-formed Secrets Manager ARN."""
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return "(not JSON: not shown)"
    if not isinstance(value, dict):
        return raw
    return {k: (v if "secret" not in k.lower() or (isinstance(v, str) and SECRET_ARN_RE.match(v)) else "[not shown]")
            for k, v in value.items()}


# --------------------------------------------------------------------------------------------
# The settings
# --------------------------------------------------------------------------------------------

class _Follows:
    """A default that follows ``protectData`` (``negate``: its opposite)."""

    def __init__(self, negate: bool = False) -> None:
        self.negate = negate

    def value(self, protect_data: bool) -> bool:
        return protect_data != self.negate

    def __repr__(self) -> str:
        return "not protectData" if self.negate else "protectData"


FOLLOWS_PROTECT = _Follows()
OPPOSITE_OF_PROTECT = _Follows(negate=True)


@dataclass(frozen=True)
class _Spec:
    key: str
    field: str
    parse: Callable[[str, Any], Any]
    default: Any
    meaning: str


SPECS: tuple[_Spec, ...] = (
    _Spec("environment", "environment", _choice("dev", "prod"), "dev",
          "dev | prod; prod also requires HTTPS (hostedZoneId or certificateArn, or allowInsecureHttp) and imageRef"),
    _Spec("protectData", "protect_data", _bool, True,
          "Pulumi `protect` on the database cluster and instances, the bucket and the data secrets"),
    _Spec("azCount", "az_count", _int_in(2, 4, "(availability zones)"), 2,
          "availability zones used by the VPC, the ALB and the database"),
    _Spec("vpcCidr", "vpc_cidr", _vpc_cidr, "10.0.0.0/16", "the VPC's IPv4 range"),
    _Spec("natMode", "nat_mode", _choice("none", "single", "perAz"), "single",
          "NAT gateways: none (interface VPC endpoints instead), single, perAz"),
    _Spec("networkImplementation", "network_implementation", _choice("awsx", "legacy"), "awsx",
          "awsx (awsx.ec2.Vpc; adopts a stack's hand-built network in place) or legacy (keep the hand-built "
          "resources): docs/upgrading.md, The network on awsx"),
    _Spec("taskSubnets", "task_subnets", _choice("private", "public"), "private",
          "where the server, admin and gc tasks run: private (no public IP; ECR, Logs, Secrets Manager through NAT "
          "or interface endpoints) or public (a public IP each, no NAT needed; only the load balancer may connect)"),
    _Spec("dbEngine", "db_engine", _choice("mysql", "postgresql"), "mysql", "Aurora engine"),
    _Spec("dbEngineVersion", "db_engine_version", _engine_version, None,
          "Aurora major line (newest minor resolved at preview) or exact version "
          "(default: 8.0.mysql_aurora.3 / 16)"),
    _Spec("dbMinAcu", "db_min_acu", _acu(0), 0.5, "Aurora Serverless v2 minimum ACUs (0 = auto-pause)"),
    _Spec("dbMaxAcu", "db_max_acu", _acu(1), 4.0, "Aurora Serverless v2 maximum ACUs"),
    _Spec("dbAutoPauseSeconds", "db_auto_pause_seconds", _int_in(300, 86400, "seconds"), 3600,
          "idle time before a 0-ACU database pauses (used only when dbMinAcu is 0)"),
    _Spec("dbIdleReleaseSeconds", "db_idle_release_seconds", _int_in(0, 86400, "seconds (0 = never)"), 300,
          "idle time after which a server task closes its database connections (a 0-ACU database "
          "pauses only with none open); 0 = keep them"),
    _Spec("gcOlderThanDays", "gc_older_than_days", _int_in(0, GC_DAYS_MAX, "days (0 = off)"), 0,
          "scheduled gc (docs/housekeeping.md): remove runs, with their artifacts, deleted more than this many "
          "days ago; 0 = no gc task or schedule"),
    _Spec("gcSchedule", "gc_schedule", _gc_schedule, GC_DEFAULT_SCHEDULE,
          "when the gc task runs (EventBridge Scheduler expression, UTC; used only when gcOlderThanDays > 0)"),
    _Spec("dbReader", "db_reader", _bool, False, "a reader instance in another AZ (failover target)"),
    _Spec("dbBackupRetentionDays", "db_backup_retention_days", _int_in(1, 35, "days"), 7,
          "automated backup retention"),
    _Spec("deletionProtection", "deletion_protection", _bool, FOLLOWS_PROTECT,
          "RDS deletion protection on the cluster and ALB deletion protection"),
    _Spec("finalSnapshot", "final_snapshot", _bool, FOLLOWS_PROTECT, "take a final snapshot when the cluster is deleted"),
    _Spec("dbRestoreSnapshot", "db_restore_snapshot",
          _optional(DB_SNAPSHOT_RE, "empty or a DB cluster snapshot identifier (a letter, then letters, digits and "
                                    "single hyphens, at most 255; rds:<name> for an automated one) or its ARN "
                                    "(arn:aws:rds:<region>:<account>:cluster-snapshot:<identifier>)"),
          None, "create the database cluster from this cluster snapshot; setting or changing it replaces the "
                "cluster, and protectData keeps the old one (docs/upgrading.md \"Restore\")"),
    _Spec("takeover", "takeover", _takeover, None,
          "take over an old MLflow (docs/takeover.md): {dump, authDump, artifactRoot}, dump files under "
          "s3://<artifact bucket>/takeover/ that the admin step imports into the new, empty databases; unset it "
          "after the takeover"),
    _Spec("bucketForceDestroy", "bucket_force_destroy", _bool, OPPOSITE_OF_PROTECT,
          "let `pulumi destroy` delete a bucket that still holds artifacts"),
    _Spec("bucketVersioning", "bucket_versioning", _bool, True, "S3 versioning on the artifact bucket"),
    _Spec("noncurrentVersionDays", "noncurrent_version_days", _int_in(1, 3650, "days"), 30,
          "days before a noncurrent (overwritten/deleted) object version expires"),
    _Spec("bucketKmsKeyArn", "bucket_kms_key_arn", _kms_key_arn, None,
          "KMS key ARN (not an alias ARN) for bucket encryption (default: SSE-S3)"),
    _Spec("cpu", "cpu", _int_one_of(tuple(FARGATE_MEMORY), "(Fargate cpu units)"), 1024, "task cpu units"),
    _Spec("memory", "memory", _int_in(512, 122880, "MiB, valid for the cpu"), 2048, "task memory (MiB)"),
    _Spec("ephemeralStorageGib", "ephemeral_storage_gib", _int_in(21, 200, "GiB"), 30,
          "task ephemeral storage: the artifact spool (every proxied transfer in flight)"),
    _Spec("cpuArchitecture", "cpu_architecture", _choice("X86_64", "ARM64"), "X86_64",
          "task CPU architecture (and the image build platform)"),
    _Spec("desiredCount", "desired_count", _int_in(0, 100, "tasks"), 1, "tasks started by a deployment"),
    _Spec("minTasks", "min_tasks", _int_in(0, 100, "tasks"), 1, "autoscaling minimum"),
    _Spec("maxTasks", "max_tasks", _int_in(0, 100, "tasks"), 1,
          "autoscaling maximum (autoscaling is on when maxTasks > minTasks)"),
    _Spec("cpuTargetPercent", "cpu_target_percent", _int_in(10, 90, "percent"), 60,
          "target average CPU for autoscaling"),
    _Spec("schedule", "schedule", _work_hours, None,
          "run the tasks only in working hours (docs/cost.md): {days, start, stop, timeZone}, e.g. "
          "{days: MON-FRI, start: \"08:00\", stop: \"19:00\", timeZone: Europe/Berlin}; outside them the load "
          "balancer answers 503; unset = always"),
    _Spec("serverWorkers", "server_workers", _int_in(1, 16, "uvicorn workers per task"), 2,
          "uvicorn workers per task (MLFLOW_WORKERS); sizes the database pools"),
    _Spec("enableJobExecution", "enable_job_execution", _bool, False,
          "run MLflow's GenAI job runner (needs ~2 GB more memory)"),
    _Spec("authDefaultPermission", "auth_default_permission",
          _choice("READ", "EDIT", "MANAGE", "NO_PERMISSIONS"), "READ",
          "permission of users on resources they do not own"),
    _Spec("authCacheTtlSeconds", "auth_cache_ttl_seconds", _int_in(0, 3600, "seconds"), 60,
          "credential cache lifetime"),
    _Spec("adminUsername", "admin_username", _name, "admin", "MLflow admin user name"),
    _Spec("albScheme", "alb_scheme", _choice("internet-facing", "internal"), "internet-facing",
          "load balancer scheme"),
    _Spec("allowedCidrs", "allowed_cidrs", _cidrs, None,
          "networks admitted on ports 80/443 of the load balancer; required without HTTPS "
          "(default with HTTPS: 0.0.0.0/0)"),
    _Spec("certificateArn", "certificate_arn",
          _optional(CERT_ARN_RE, "empty or an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)"),
          None, "your ACM certificate (this region, covering domainName) for the HTTPS listener; "
                "HTTP then redirects to HTTPS"),
    _Spec("allowInsecureHttp", "allow_insecure_http", _bool, False,
          "let prod run on plain HTTP without certificateArn"),
    _Spec("domainName", "domain_name", _optional(HOSTNAME_RE, "empty or a lower-case DNS name"), None,
          "the tracking URI's host and the only allowed Host header; required with certificateArn "
          "or hostedZoneId"),
    _Spec("hostedZoneId", "hosted_zone_id",
          _optional(HOSTED_ZONE_RE, "empty or a Route 53 hosted zone ID (Z followed by 4-31 upper-case letters "
                                    "and digits, without /hostedzone/)"),
          None, "Route 53 zone of domainName: the program creates a DNS-validated certificate (unless "
                "certificateArn is set) and an alias record to the load balancer"),
    _Spec("idleTimeoutSeconds", "idle_timeout_seconds", _int_in(1, 4000, "seconds"), 900,
          "ALB idle timeout (the server's keep-alive is set above it)"),
    _Spec("logRetentionDays", "log_retention_days", _int_one_of(LOG_RETENTION_DAYS, "days"), 30,
          "CloudWatch Logs retention of the container logs"),
    _Spec("ecrImagesKept", "ecr_images_kept", _int_in(1, 1000, "images"), 10,
          "images kept by the ECR lifecycle policy"),
    _Spec("imageRef", "image_ref",
          _optional(IMAGE_REF_RE, "empty (build from image/) or a digest reference "
                                  "<registry>/<repository>@sha256:<64 hex>"),
          None, "run this image, build nothing (promotion); required in prod"),
    _Spec("alarms", "alarm_thresholds", _alarms, AlarmThresholds(),
          "alarm thresholds in percent (docs/operations.md), any of: http5xxPercent (5), cpuPercent (85), "
          "memoryPercent (85), spoolPercent (80), acuPercent (90), connectionsPercent (90)"),
    _Spec("alarmEmail", "alarm_email", _optional(EMAIL_RE, "empty or an e-mail address"), None,
          "e-mail address subscribed to the alarms topic (confirm the message SNS sends)"),
    _Spec("albAccessLogs", "alb_access_logs", _bool, None,
          "load balancer access logs to an S3 bucket (default: true in prod, false in dev)"),
    _Spec("albAccessLogDays", "alb_access_log_days", _int_in(1, 3650, "days"), 90,
          "days the load balancer access logs are kept"),
    _Spec("wafRateLimit", "waf_rate_limit", _waf_rate_limit, 0,
          "AWS WAF web ACL on the load balancer blocking a client IP above this many requests per 5 minutes "
          "(basic auth has no lockout); 0 = no web ACL"),
    _Spec("sso", "sso", _sso, None,
          "single sign-on for the web UI through the load balancer (docs/sso.md): {provider: oidc, issuer, "
          "authorizationEndpoint, tokenEndpoint, userInfoEndpoint, clientId, clientSecretArn} or {provider: cognito, "
          "userPoolArn, userPoolClientId, userPoolDomain}, optional scope, userClaim, adminUsers, adminGroupClaim + "
          "adminGroup, sessionTimeoutSeconds; programmatic clients keep basic auth; needs HTTPS; unset = off"),
)

KEYS: tuple[str, ...] = tuple(s.key for s in SPECS)


@dataclass(frozen=True)
class Settings:
    """The validated settings of one stack (see :data:`SPECS` for keys, defaults and meaning)."""

    environment: str
    protect_data: bool
    az_count: int
    vpc_cidr: str
    nat_mode: str
    task_subnets: str
    schedule: Optional[WorkHours]
    network_implementation: str
    db_engine: str
    db_engine_version: str
    db_min_acu: float
    db_max_acu: float
    db_auto_pause_seconds: int
    db_idle_release_seconds: int
    gc_older_than_days: int
    gc_schedule: str
    db_reader: bool
    db_backup_retention_days: int
    deletion_protection: bool
    final_snapshot: bool
    db_restore_snapshot: Optional[str]
    takeover: Optional[Takeover]
    bucket_force_destroy: bool
    bucket_versioning: bool
    noncurrent_version_days: int
    bucket_kms_key_arn: Optional[str]
    cpu: int
    memory: int
    ephemeral_storage_gib: int
    cpu_architecture: str
    desired_count: int
    min_tasks: int
    max_tasks: int
    cpu_target_percent: int
    server_workers: int
    enable_job_execution: bool
    auth_default_permission: str
    auth_cache_ttl_seconds: int
    admin_username: str
    alb_scheme: str
    allowed_cidrs: tuple[str, ...]
    certificate_arn: Optional[str]
    allow_insecure_http: bool
    domain_name: Optional[str]
    hosted_zone_id: Optional[str]
    idle_timeout_seconds: int
    log_retention_days: int
    ecr_images_kept: int
    image_ref: Optional[str]
    alarm_thresholds: AlarmThresholds
    alarm_email: Optional[str]
    alb_access_logs: bool
    alb_access_log_days: int
    waf_rate_limit: int
    sso: Optional[SingleSignOn]

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def db_port(self) -> int:
        return ENGINE_PORT[self.db_engine]

    @property
    def autoscaling(self) -> bool:
        return self.max_tasks > self.min_tasks

    @property
    def https(self) -> bool:
        """The load balancer serves HTTPS (a certificate given or one the program requests)."""
        return self.certificate_arn is not None or self.hosted_zone_id is not None


assert {f.name for f in fields(Settings)} == {s.field for s in SPECS}, "SPECS and Settings disagree"


def raw_config() -> dict[str, Any]:
    """Every config value of this project, as the engine passes it to the program (or as a test
    set it with ``pulumi.runtime.set_all_config``): ``{key-without-namespace: raw value}``."""
    prefix = NAMESPACE + ":"
    merged: dict[str, Any] = {}
    merged.update(_runtime_config.get_config_env())  # PULUMI_CONFIG, set by the language host
    merged.update(_runtime_config.CONFIG.get())  # set_all_config (tests, inline programs)
    for env_key, env_value in os.environ.items():  # PULUMI_CONFIG_<KEY> overrides
        for key in KEYS:
            if env_key == _runtime_config.get_config_env_key(prefix + key):
                merged[prefix + key] = env_value
    return {k[len(prefix):]: v for k, v in merged.items() if k.startswith(prefix)}


def load_settings(raw: Optional[Mapping[str, Any]] = None) -> Settings:
    """Validate the project's settings.

    :param raw: ``{key: value}`` without the namespace (values as strings as the engine gives
        them, or plain Python values); default: this stack's config.
    :raises SettingsError: on an unknown key or a wrong value (one message: key, value, allowed).
    """
    raw = dict(raw_config() if raw is None else raw)
    for key in sorted(raw):
        if key not in KEYS:
            near = difflib.get_close_matches(key, KEYS, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            shown = "[secret]" if _runtime_config.is_config_secret(f"{NAMESPACE}:{key}") else raw[key]
            raise _fail(key, shown, f"known keys only{hint}: {', '.join(KEYS)}")
    values: dict[str, Any] = {}
    for spec in SPECS:
        if spec.key in raw and raw[spec.key] is not None:
            try:
                values[spec.field] = spec.parse(spec.key, raw[spec.key])
            except SettingsError as err:
                if _runtime_config.is_config_secret(f"{NAMESPACE}:{spec.key}"):  # never echo a secret
                    raise SettingsError(str(err).replace(repr(str(raw[spec.key])), "'[secret]'")) from None
                raise
        else:
            values[spec.field] = spec.default
    for spec in SPECS:  # defaults that follow protectData (disposable stacks destroy cleanly)
        if isinstance(values[spec.field], _Follows):
            values[spec.field] = values[spec.field].value(values["protect_data"])
    _check(values)
    return Settings(**values)
