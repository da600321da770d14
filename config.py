"""Every stack setting, in one place: read, typed, defaulted and validated.

Settings live in ``Pulumi.<stack>.yaml`` under the project's namespace (``mlflow-tracking:``),
camelCase. :func:`load_settings` reads all of them at once, rejects keys it does not know and
raises :class:`SettingsError` with one message naming the key, the value given and what is
allowed. Nothing else in the program reads Pulumi config.

``SettingsError`` is a :class:`pulumi.RunError`, so ``pulumi preview`` / ``pulumi up`` print
the message alone (no Python stack trace) and stop before any resource is registered.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Optional

import pulumi
import pulumi.runtime.config as _runtime_config

from components.container_image import DIGEST_REF_RE
from components.database import DEFAULT_ENGINE_VERSION, ENGINES
from components.service import FARGATE_MEMORY, LOG_RETENTION_DAYS
from components.sizing import PoolTooSmall, pool_sizing

NAMESPACE = "mlflow-tracking"
"""The project name in ``Pulumi.yaml``: every setting is ``mlflow-tracking:<key>``."""


class SettingsError(pulumi.RunError, ValueError):
    """A stack setting is missing, unknown or invalid. The message names the key, the value
    given and what is allowed; Pulumi prints it without a stack trace."""


# --------------------------------------------------------------------------------------------
# Fixed facts the validation rests on (DESIGN.md §3)
# --------------------------------------------------------------------------------------------

ENGINE_PORT = {engine: port for engine, (_, port) in ENGINES.items()}

_PG_MIN_FOR_ZERO_ACU = {13: 15, 14: 12, 15: 7, 16: 3}
"""Aurora PostgreSQL minor versions from which min 0 ACU (auto-pause) is supported; 17+ all."""

IMAGE_REF_RE = DIGEST_REF_RE
"""A digest reference ``<registry>/<repository>@sha256:<64 hex>``."""

CERT_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:acm:[a-z0-9\-]+:\d{12}:certificate/[A-Za-z0-9\-]+$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
KMS_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:kms:[a-z0-9\-]+:\d{12}:(key|alias)/[A-Za-z0-9/_\-]+$")


# --------------------------------------------------------------------------------------------
# Parsers: raw config value (a string from the engine, or a plain value in tests) -> typed value
# --------------------------------------------------------------------------------------------

def _fail(key: str, value: Any, allowed: str) -> SettingsError:
    if value is None or value == "":
        return SettingsError(f"invalid setting {NAMESPACE}:{key} = (unset); allowed: {allowed}")
    shown = value if isinstance(value, str) else json.dumps(value)
    return SettingsError(f"invalid setting {NAMESPACE}:{key} = {shown!r}; allowed: {allowed}")


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise _fail(key, raw, "true or false")


def _int_in(lo: int, hi: int, what: str = "") -> Callable[[str, Any], int]:
    allowed = f"an integer from {lo} to {hi}{' ' + what if what else ''}"

    def parse(key: str, raw: Any) -> int:
        if isinstance(raw, bool):
            raise _fail(key, raw, allowed)
        try:
            value = int(raw) if isinstance(raw, int) else int(str(raw).strip(), 10)
        except ValueError:
            raise _fail(key, raw, allowed) from None
        if not lo <= value <= hi:
            raise _fail(key, raw, allowed)
        return value

    return parse


def _int_one_of(values: tuple[int, ...], what: str = "") -> Callable[[str, Any], int]:
    allowed = f"one of {', '.join(map(str, values))}{' ' + what if what else ''}"

    def parse(key: str, raw: Any) -> int:
        try:
            value = _int_in(-(10**9), 10**9)(key, raw)
        except SettingsError:
            raise _fail(key, raw, allowed) from None
        if value not in values:
            raise _fail(key, raw, allowed)
        return value

    return parse


def _acu(lo: float) -> Callable[[str, Any], float]:
    allowed = f"a number of ACUs from {lo:g} to 256 in steps of 0.5"

    def parse(key: str, raw: Any) -> float:
        if isinstance(raw, bool):
            raise _fail(key, raw, allowed)
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise _fail(key, raw, allowed) from None
        if not (math.isfinite(value) and lo <= value <= 256 and (value * 2).is_integer()):
            raise _fail(key, raw, allowed)
        return value

    return parse


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(key: str, raw: Any) -> str:
        if not isinstance(raw, str) or raw not in choices:
            raise _fail(key, raw, " | ".join(choices))
        return raw

    return parse


def _optional(pattern: re.Pattern[str], allowed: str) -> Callable[[str, Any], Optional[str]]:
    def parse(key: str, raw: Any) -> Optional[str]:
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            return None
        if not isinstance(raw, str) or not pattern.match(raw.strip()):
            raise _fail(key, raw, allowed)
        return raw.strip()

    return parse


def _name(key: str, raw: Any) -> str:
    if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.@\-]{0,63}", raw):
        raise _fail(key, raw, "1-64 characters: a letter, then letters, digits, _ . @ -")
    return raw


def _vpc_cidr(key: str, raw: Any) -> str:
    allowed = "an IPv4 network (e.g. 10.0.0.0/16) with a prefix from /16 to /20"
    try:
        net = ipaddress.IPv4Network(str(raw).strip(), strict=True)
    except ValueError:
        raise _fail(key, raw, allowed) from None
    if not 16 <= net.prefixlen <= 20:
        raise _fail(key, raw, allowed)
    return str(net)


def _cidrs(key: str, raw: Any) -> tuple[str, ...]:
    allowed = ('a non-empty list of IPv4/IPv6 networks, e.g. ["0.0.0.0/0"] or ["203.0.113.0/24"] '
               "(YAML list, JSON array or comma-separated)")
    items: Any = raw
    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                raise _fail(key, raw, allowed) from None
        else:
            items = [p for p in (s.strip() for s in text.split(",")) if p]
    if not isinstance(items, (list, tuple)) or not items:
        raise _fail(key, raw, allowed)
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(str(item).strip(), strict=True)))
        except ValueError:
            raise _fail(key, raw, allowed + f"; {str(item)!r} is not a network address/prefix") from None
    return tuple(out)


def _engine_version(key: str, raw: Any) -> Optional[str]:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    if not isinstance(raw, str) or not re.fullmatch(r"[0-9][0-9A-Za-z._\-]*", raw.strip()):
        raise _fail(key, raw, "an Aurora engine version, e.g. 8.0.mysql_aurora.3.08.2 or 16.6")
    return raw.strip()


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
          "dev | prod; prod also requires certificateArn (or allowInsecureHttp) and imageRef"),
    _Spec("protectData", "protect_data", _bool, True,
          "Pulumi `protect` on the database cluster and instances, the bucket and the data secrets"),
    _Spec("azCount", "az_count", _int_in(2, 4, "(availability zones)"), 2,
          "availability zones used by the VPC, the ALB and the database"),
    _Spec("vpcCidr", "vpc_cidr", _vpc_cidr, "10.0.0.0/16", "the VPC's IPv4 range"),
    _Spec("natMode", "nat_mode", _choice("none", "single", "perAz"), "single",
          "NAT gateways: none (interface VPC endpoints instead), single, perAz"),
    _Spec("dbEngine", "db_engine", _choice("mysql", "postgresql"), "mysql", "Aurora engine"),
    _Spec("dbEngineVersion", "db_engine_version", _engine_version, None,
          "Aurora engine version (default: 8.0.mysql_aurora.3.08.2 / 16.6)"),
    _Spec("dbMinAcu", "db_min_acu", _acu(0), 0.5, "Aurora Serverless v2 minimum ACUs (0 = auto-pause)"),
    _Spec("dbMaxAcu", "db_max_acu", _acu(1), 4.0, "Aurora Serverless v2 maximum ACUs"),
    _Spec("dbAutoPauseSeconds", "db_auto_pause_seconds", _int_in(300, 86400, "seconds"), 3600,
          "idle time before a 0-ACU database pauses (used only when dbMinAcu is 0)"),
    _Spec("dbReader", "db_reader", _bool, False, "a reader instance in another AZ (failover target)"),
    _Spec("dbBackupRetentionDays", "db_backup_retention_days", _int_in(1, 35, "days"), 7,
          "automated backup retention"),
    _Spec("deletionProtection", "deletion_protection", _bool, FOLLOWS_PROTECT,
          "RDS deletion protection on the cluster and ALB deletion protection"),
    _Spec("finalSnapshot", "final_snapshot", _bool, FOLLOWS_PROTECT, "take a final snapshot when the cluster is deleted"),
    _Spec("bucketForceDestroy", "bucket_force_destroy", _bool, OPPOSITE_OF_PROTECT,
          "let `pulumi destroy` delete a bucket that still holds artifacts"),
    _Spec("bucketVersioning", "bucket_versioning", _bool, True, "S3 versioning on the artifact bucket"),
    _Spec("noncurrentVersionDays", "noncurrent_version_days", _int_in(1, 3650, "days"), 30,
          "days before a noncurrent (overwritten/deleted) object version expires"),
    _Spec("bucketKmsKeyArn", "bucket_kms_key_arn",
          _optional(KMS_ARN_RE, "empty (SSE-S3) or a KMS key/alias ARN"), None,
          "KMS key for bucket encryption (default: SSE-S3)"),
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
    _Spec("allowedCidrs", "allowed_cidrs", _cidrs, ("0.0.0.0/0",),
          "networks admitted on ports 80/443 of the load balancer"),
    _Spec("certificateArn", "certificate_arn",
          _optional(CERT_ARN_RE, "empty or an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)"),
          None, "ACM certificate for the HTTPS listener (HTTP then redirects to HTTPS)"),
    _Spec("allowInsecureHttp", "allow_insecure_http", _bool, False,
          "let prod run on plain HTTP without certificateArn"),
    _Spec("domainName", "domain_name", _optional(HOSTNAME_RE, "empty or a lower-case DNS name"), None,
          "custom domain (CNAME to the ALB, managed outside): tracking URI and allowed Host header"),
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
    db_engine: str
    db_engine_version: str
    db_min_acu: float
    db_max_acu: float
    db_auto_pause_seconds: int
    db_reader: bool
    db_backup_retention_days: int
    deletion_protection: bool
    final_snapshot: bool
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
    idle_timeout_seconds: int
    log_retention_days: int
    ecr_images_kept: int
    image_ref: Optional[str]

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def db_port(self) -> int:
        return ENGINE_PORT[self.db_engine]

    @property
    def autoscaling(self) -> bool:
        return self.max_tasks > self.min_tasks


assert {f.name for f in fields(Settings)} == {s.field for s in SPECS}, "SPECS and Settings disagree"


def _engine_supports_zero_acu(engine: str, version: str) -> bool:
    if engine == "mysql":
        m = re.fullmatch(r"8\.0\.mysql_aurora\.(\d+)\.(\d+)\.(\d+)", version)
        return bool(m) and (int(m.group(1)), int(m.group(2))) >= (3, 8)
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?", version)
    if not m:
        return False
    major, minor = int(m.group(1)), int(m.group(2) or 0)
    if major >= 17:
        return True
    return major in _PG_MIN_FOR_ZERO_ACU and minor >= _PG_MIN_FOR_ZERO_ACU[major]


def _check(values: dict[str, Any]) -> None:
    """Rules that involve more than one setting."""
    cpu, memory = values["cpu"], values["memory"]
    if memory not in FARGATE_MEMORY[cpu]:
        allowed = FARGATE_MEMORY[cpu]
        step = allowed[1] - allowed[0] if len(allowed) > 1 else 0
        raise _fail("memory", str(memory),
                    f"with cpu {cpu}: {', '.join(map(str, allowed))}" if len(allowed) <= 4
                    else f"with cpu {cpu}: {allowed[0]} to {allowed[-1]} MiB in steps of {step}")

    lo, hi = values["db_min_acu"], values["db_max_acu"]
    if hi < lo:
        raise _fail("dbMaxAcu", f"{hi:g}", f"a number of ACUs from max(1, dbMinAcu = {lo:g}) to 256 in steps of 0.5")

    engine = values["db_engine"]
    version = values["db_engine_version"] or DEFAULT_ENGINE_VERSION[engine]
    if engine == "mysql" and not version.startswith("8.0.mysql_aurora.3."):
        raise _fail("dbEngineVersion", version, "an Aurora MySQL 3 version: 8.0.mysql_aurora.3.<minor>.<patch>")
    if engine == "postgresql" and not re.fullmatch(r"\d+(\.\d+)?", version):
        raise _fail("dbEngineVersion", version, "an Aurora PostgreSQL version such as 16.6")
    if lo == 0 and not _engine_supports_zero_acu(engine, version):
        raise _fail("dbEngineVersion", version,
                    "with dbMinAcu 0 (auto-pause): Aurora MySQL 8.0.mysql_aurora.3.08.0 or later, "
                    "or Aurora PostgreSQL 13.15+, 14.12+, 15.7+, 16.3+, 17+")
    values["db_engine_version"] = version

    mn, desired, mx = values["min_tasks"], values["desired_count"], values["max_tasks"]
    if mx < 1:
        raise _fail("maxTasks", str(mx), "an integer from 1 to 100, at least minTasks and desiredCount")
    if mn > mx:
        raise _fail("minTasks", str(mn), f"an integer from 0 to maxTasks ({mx})")
    if not mn <= desired <= mx:
        raise _fail("desiredCount", str(desired), f"an integer from minTasks ({mn}) to maxTasks ({mx})")

    if values["environment"] == "prod":
        if values["certificate_arn"] is None and not values["allow_insecure_http"]:
            raise _fail("certificateArn", "",
                        "an ACM certificate ARN: prod serves HTTPS only "
                        f"(or set {NAMESPACE}:allowInsecureHttp true to run prod on plain HTTP, not advised)")
        if values["image_ref"] is None:
            raise _fail("imageRef", "",
                        "a digest reference <registry>/<repository>@sha256:<64 hex>: prod never builds; "
                        "promote the image dev built (python -m deploy promote dev prod)")

    # The connection budget must allow at least one pooled connection per worker.
    workers = values["server_workers"]
    try:
        pool_sizing(engine=engine, min_acu=lo, max_acu=hi, max_tasks=mx, workers=workers)
    except PoolTooSmall as err:
        raise _fail("maxTasks", str(mx),
                    f"at most {err.max_tasks_that_fit} with serverWorkers {workers} and dbMaxAcu {hi:g} "
                    f"(Aurora allows about {err.connection_limit} connections; each worker holds 2 pools); "
                    "or raise dbMaxAcu / lower serverWorkers") from None


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
