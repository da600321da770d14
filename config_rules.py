"""Rules across stack settings, and those that need what the program resolves (the region, the
engine version Aurora offers). Used by :mod:`config` and ``program.py`` (through ``config``);
every failure is one :class:`SettingsError` line naming the key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from components.database import DEFAULT_ENGINE_VERSION
from components.service import FARGATE_MEMORY
from components.sizing import PoolTooSmall, engines_per_worker, pool_sizing
from config_parsers import CERT_ARN_RE, NAMESPACE, SettingsError, _fail

if TYPE_CHECKING:
    from config import Settings

_PG_MIN_FOR_ZERO_ACU = {13: 15, 14: 12, 15: 7, 16: 3}
"""Aurora PostgreSQL minor versions from which min 0 ACU (auto-pause) is supported; 17+ all."""
MYSQL_LINE_RE = re.compile(r"^8\.0\.mysql_aurora\.3(?:\.(?P<minor>\d{2})\.(?P<patch>\d+))?$")
"""Aurora MySQL 3: the major line ``8.0.mysql_aurora.3`` or an exact ``8.0.mysql_aurora.3.<mm>.<p>``."""
PG_LINE_RE = re.compile(r"^(?P<major>\d{2})(?:\.(?P<minor>\d+))?$")
"""Aurora PostgreSQL: a major (``16``) or an exact ``<major>.<minor>``."""
_PG_MIN_FOR_SERVERLESS_V2 = {13: 6, 14: 3, 15: 2, 16: 1}
"""Aurora Serverless v2 needs Aurora PostgreSQL 13.6+, 14.3+, 15.2+, 16.1+ (17+ all) and Aurora
MySQL 3.02.0+ (Aurora User Guide, "Supported Regions and DB engines for Aurora Serverless v2")."""


@dataclass(frozen=True)
class EngineLine:
    """What ``dbEngineVersion`` asks for: a major line (resolved to its newest minor at preview)
    or an exact version, within one parameter group family."""

    parameter_group_family: str
    """``aurora-mysql8.0`` / ``aurora-postgresql<major>``: an exact filter of ``describe-db-engine-versions``."""
    exact: Optional[str]
    """The exact version asked for, or ``None`` for "the newest minor of the line"."""


def engine_line(engine: str, version: str) -> EngineLine:
    """The family and exact version (if any) of a validated ``dbEngineVersion``."""
    if engine == "mysql":
        m = MYSQL_LINE_RE.match(version)
        assert m, version
        return EngineLine("aurora-mysql8.0", version if m.group("minor") else None)
    m = PG_LINE_RE.match(version)
    assert m, version
    return EngineLine(f"aurora-postgresql{m.group('major')}", version if m.group("minor") else None)


def _engine_supports_zero_acu(engine: str, version: str) -> bool:
    """Whether an exact Aurora version supports min 0 ACU (auto-pause)."""
    if engine == "mysql":
        m = MYSQL_LINE_RE.match(version)
        return bool(m and m.group("minor")) and int(m.group("minor")) >= 8
    m = PG_LINE_RE.match(version)
    if not m or m.group("minor") is None:
        return False
    major, minor = int(m.group("major")), int(m.group("minor"))
    if major >= 17:
        return True
    return major in _PG_MIN_FOR_ZERO_ACU and minor >= _PG_MIN_FOR_ZERO_ACU[major]


def _check_engine_version(engine: str, version: str) -> None:
    """A major line or exact version that Aurora Serverless v2 supports."""
    if engine == "mysql":
        m = MYSQL_LINE_RE.match(version)
        if not m or (m.group("minor") and int(m.group("minor")) < 2):
            raise _fail("dbEngineVersion", version,
                        "Aurora MySQL 3 (Serverless v2): 8.0.mysql_aurora.3 (its newest minor) or an exact "
                        "8.0.mysql_aurora.3.<minor>.<patch> from 3.02.0")
        return
    m = PG_LINE_RE.match(version)
    ok = bool(m) and int(m.group("major")) >= 13
    if ok and m.group("minor") is not None and int(m.group("major")) < 17:
        ok = int(m.group("minor")) >= _PG_MIN_FOR_SERVERLESS_V2[int(m.group("major"))]
    if not ok:
        raise _fail("dbEngineVersion", version,
                    "Aurora PostgreSQL (Serverless v2): a major from 13 (its newest minor), e.g. 16, or an exact "
                    "version 13.6+, 14.3+, 15.2+, 16.1+, 17+")


def check_zero_acu(settings: "Settings", resolved: str) -> None:
    """With ``dbMinAcu`` 0, the version the region resolved must support auto-pause.

    :raises SettingsError: naming ``dbEngineVersion``, the value set and the version it resolved to.
    """
    if settings.db_min_acu == 0 and not _engine_supports_zero_acu(settings.db_engine, resolved):
        shown = "" if settings.db_engine_version == resolved else f" (resolved to {resolved} in this region)"
        raise SettingsError(
            f"invalid setting {NAMESPACE}:dbEngineVersion = '{settings.db_engine_version}'{shown}; "
            "allowed: with dbMinAcu 0 (auto-pause): "
            "Aurora MySQL 8.0.mysql_aurora.3.08.0 or later, or Aurora PostgreSQL 13.15+, 14.12+, 15.7+, 16.3+, 17+ "
            "(or set dbMinAcu 0.5 or more)")


def check_certificate_region(settings: "Settings", region: str) -> None:
    """An ACM certificate serves a load balancer of its own region only (ACM User Guide,
    "Supported Regions").

    :raises SettingsError: naming ``certificateArn``, its region and the stack's.
    """
    if settings.certificate_arn is None:
        return
    cert_region = CERT_ARN_RE.match(settings.certificate_arn).group("region")
    if cert_region != region:
        raise SettingsError(
            f"invalid setting {NAMESPACE}:certificateArn = '{settings.certificate_arn}'; allowed: a certificate "
            f"of this stack's region {region} (this one is in {cert_region}; ACM certificates are regional), "
            f"or hostedZoneId to let the program request one")


_SSO_GOVCLOUD = ("us-gov-west-1", "us-gov-east-1")
_AWS_PARTITION_REGION_RE = re.compile(r"(us|eu|ap|sa|ca|me|af|il|mx)-\w+-\d+")
"""The regions of partition ``aws`` (botocore's endpoints.json ``regionRegex``); ``us-gov-*`` and
``us-iso*-*`` / ``eu-isoe-*`` match it too but are partitions of their own, excluded by name."""


def check_sso_region(settings: "Settings", region: str) -> None:
    """Single sign-on needs the load balancer's key endpoint, which the ELB User Guide ("User claims
    encoding and signature verification") documents for partition aws
    (``public-keys.auth.elb.<region>.amazonaws.com``) and AWS GovCloud (US) only; the server refuses
    any other (image/sso_settings.py ``key_endpoint``), so the program refuses it first.

    :raises SettingsError: naming ``sso`` and the stack's region.
    """
    if settings.sso is None or region in _SSO_GOVCLOUD:
        return
    if (not _AWS_PARTITION_REGION_RE.fullmatch(region) or region.startswith("us-gov-")
            or re.match(r"(us|eu)-iso[a-z]*-", region)):
        raise _fail("sso", f"provider {settings.sso.provider}",
                    f"unset in region {region}: single sign-on works in partition aws and in AWS GovCloud (US) "
                    f"({', '.join(_SSO_GOVCLOUD)}) only, where AWS documents the load balancer's signing-key endpoint")


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
    _check_engine_version(engine, version)
    # An exact version can be judged now; a major line only once the program resolved it.
    if lo == 0 and engine_line(engine, version).exact and not _engine_supports_zero_acu(engine, version):
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
    if values["schedule"] is not None and mn < 1:
        raise _fail("minTasks", str(mn), f"an integer from 1 to maxTasks ({mx}) with schedule: its start action sets "
                                         "minTasks..maxTasks and CPU target tracking never starts a service from 0 tasks")

    # The connection budget must allow at least one pooled connection per worker.
    workers, jobs = values["server_workers"], values["enable_job_execution"]
    try:
        pool_sizing(engine=engine, min_acu=lo, max_acu=hi, max_tasks=mx, workers=workers, job_execution=jobs)
    except PoolTooSmall as err:
        raise _fail("maxTasks", str(mx),
                    f"at most {err.max_tasks_that_fit} with serverWorkers {workers} and dbMaxAcu {hi:g} "
                    f"(Aurora allows about {err.connection_limit} connections; each worker holds "
                    f"{engines_per_worker(jobs)} pools{' with enableJobExecution' if jobs else ''}); "
                    "or raise dbMaxAcu / lower serverWorkers") from None

    if values["alb_access_logs"] is None:  # access logs follow the environment unless set
        values["alb_access_logs"] = values["environment"] == "prod"

    _check_sso(values)
    _check_tls_and_prod(values)  # last: the settings a stack still lacks, after the wrong ones


def _check_sso(values: dict[str, Any]) -> None:
    """Single sign-on (docs/sso.md) needs an HTTPS listener, a load balancer that reaches the IdP
    and tasks that reach the load balancer's public keys."""
    if values["sso"] is None:
        return
    if values["certificate_arn"] is None and values["hosted_zone_id"] is None:
        raise _fail("sso", f"provider {values['sso'].provider}",
                    "with HTTPS only: set hostedZoneId (or certificateArn) and domainName; the load balancer's "
                    "authenticate actions work on HTTPS listeners only")
    if values["enable_job_execution"]:
        raise _fail("enableJobExecution", "true",
                    "false with sso: MLflow's job runner takes a job's user from the request's Authorization header "
                    "and the server then runs MLflow's own basic-auth app, where single sign-on's check is not "
                    "installed; untested, so not allowed (docs/sso.md)")
    if values["nat_mode"] == "none" and values["alb_scheme"] == "internal":
        raise _fail("albScheme", "internal",
                    "internet-facing with sso and natMode none: an internal load balancer reaches the IdP's token and "
                    "user info endpoints only through a NAT gateway (or set natMode single or perAz)")
    if values["nat_mode"] == "none" and values["task_subnets"] == "private":
        raise _fail("natMode", "none",
                    "single or perAz with sso and taskSubnets private: the server fetches the load balancer's "
                    "signing keys from https://public-keys.auth.elb.<region>.amazonaws.com, on the internet "
                    "(or set taskSubnets public)")


def _check_tls_and_prod(values: dict[str, Any]) -> None:
    """HTTPS needs the name clients verify; prod needs HTTPS and a promoted image; plain HTTP
    needs networks chosen on purpose."""
    domain, cert, zone = values["domain_name"], values["certificate_arn"], values["hosted_zone_id"]
    if domain is None and cert is not None:
        raise _fail("domainName", "", "the DNS name certificateArn covers (required with certificateArn: clients "
                                      "verify the certificate against the host name, and no ACM certificate covers "
                                      "the load balancer's own DNS name)")
    if domain is None and zone is not None:
        raise _fail("domainName", "", "a DNS name in the hostedZoneId zone (required with hostedZoneId: the record "
                                      "and certificate the program creates are for it)")
    if values["environment"] == "prod":
        if cert is None and zone is None and not values["allow_insecure_http"]:
            raise _fail("hostedZoneId", "",
                        "a Route 53 hosted zone ID (with domainName: the program requests the certificate), or "
                        "certificateArn with an ACM certificate ARN: prod serves HTTPS only "
                        f"(or set {NAMESPACE}:allowInsecureHttp true to run prod on plain HTTP, not advised)")
        if values["image_ref"] is None:
            raise _fail("imageRef", "",
                        "a digest reference <registry>/<repository>@sha256:<64 hex>: prod never builds; "
                        "promote the image dev built (python -m deploy promote dev prod)")
    if values["allowed_cidrs"] is None:
        if cert is None and zone is None:
            raise _fail("allowedCidrs", "",
                        "the networks that may reach the load balancer, set on purpose: without certificateArn or "
                        "hostedZoneId it serves plain HTTP and the MLflow password crosses the network in clear "
                        f"text; e.g. pulumi config set --path '{NAMESPACE}:allowedCidrs[0]' 203.0.113.0/24 "
                        "(your office or VPN range), or set hostedZoneId + domainName for HTTPS")
        values["allowed_cidrs"] = ("0.0.0.0/0",)
