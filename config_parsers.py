"""Parsers of stack settings: a raw config value (a string from the engine, or a plain value in
tests) -> a typed value, or :class:`SettingsError` with one line naming the key, the value given
and what is allowed. Used by :mod:`config`, which re-exports ``NAMESPACE`` and ``SettingsError``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Callable
from typing import Any, Optional

import pulumi

from components.container_image import DIGEST_REF_RE

NAMESPACE = "mlflow-tracking"
"""The project name in ``Pulumi.yaml``: every setting is ``mlflow-tracking:<key>``."""


class SettingsError(pulumi.RunError, ValueError):
    """A stack setting is missing, unknown or invalid. The message names the key, the value
    given and what is allowed; Pulumi prints it without a stack trace."""


# --------------------------------------------------------------------------------------------
# Fixed facts the validation rests on (DESIGN.md §3)
# --------------------------------------------------------------------------------------------

IMAGE_REF_RE = DIGEST_REF_RE
"""A digest reference ``<registry>/<repository>@sha256:<64 hex>``."""

CERT_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:acm:(?P<region>[a-z0-9\-]+):\d{12}:certificate/[A-Za-z0-9\-]+$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
DB_SNAPSHOT_RE = re.compile(r"^(arn:aws[a-z\-]*:rds:[a-z0-9\-]+:\d{12}:cluster-snapshot:)?(rds:)?"
                            r"(?=.{1,255}$)[A-Za-z](?!.*--)[A-Za-z0-9\-]*(?<!-)$")
"""A DB cluster snapshot: its identifier (a letter, then letters, digits and single hyphens, no trailing
hyphen, at most 255; ``rds:`` before an automated snapshot's) or its ARN (RDS API Reference,
CreateDBClusterSnapshot and RestoreDBClusterFromSnapshot ``SnapshotIdentifier``)."""
KMS_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:kms:[a-z0-9\-]+:\d{12}:(key|alias)/[A-Za-z0-9/_\-]+$")
"""Key or alias ARN: the shape the parser recognises; only key ARNs are accepted (see _kms_key_arn)."""
HOSTED_ZONE_RE = re.compile(r"^Z[0-9A-Z]{4,31}$")
"""A Route 53 hosted zone ID as the console and ``aws route53 list-hosted-zones`` show it
(without the ``/hostedzone/`` prefix)."""


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
        raise _fail(key, raw, "an Aurora major line or exact version, e.g. 8.0.mysql_aurora.3, "
                              "8.0.mysql_aurora.3.08.2, 16 or 16.6")
    return raw.strip()


def _kms_key_arn(key: str, raw: Any) -> Optional[str]:
    value = _optional(KMS_ARN_RE, "empty (SSE-S3) or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)")(key, raw)
    if value is not None and ":alias/" in value:
        # IAM matches kms:Decrypt / kms:GenerateDataKey against the key ARN: a grant on the alias
        # ARN grants nothing (KMS Developer Guide, "Using aliases to control access to KMS keys").
        alias = value.split(":alias/", 1)[1]
        raise _fail(key, raw, "a KMS key ARN, not an alias ARN (IAM grants on an alias ARN do not cover the key); "
                              f"find it with: aws kms describe-key --key-id alias/{alias} --query KeyMetadata.Arn")
    return value


EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)+$")
"""An e-mail address SNS can subscribe (local part @ a dotted domain)."""


def _alarms(key: str, raw: Any):
    """The ``alarms`` object: some of :data:`components.monitoring.ALARM_KEYS`, each a percentage
    above 0 and at most 100; keys not given keep their defaults."""
    from components.monitoring import ALARM_KEYS, AlarmThresholds

    allowed = ("an object with any of " + ", ".join(ALARM_KEYS) + ", each a percentage above 0 and at most 100 "
               '(e.g. {"cpuPercent": 90}); unset keys keep their defaults')
    items: Any = raw
    if isinstance(raw, str):
        try:
            items = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            raise _fail(key, raw, allowed) from None
    if not isinstance(items, dict):
        raise _fail(key, raw, allowed)
    values = {}
    for name, value in items.items():
        if name not in ALARM_KEYS:
            raise _fail(key, raw, allowed + f"; {name!r} is not one of them")
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and 0 < number <= 100):
            raise _fail(key, raw, allowed + f"; {name} = {value!r} is out of range")
        values[ALARM_KEYS[name]] = number
    return AlarmThresholds(**values)


def _waf_rate_limit(key: str, raw: Any) -> int:
    """0 (no web ACL) or an AWS WAF rate-based rule limit (requests per 5 minutes per client IP)."""
    from components.monitoring import WAF_RATE_LIMIT_RANGE

    lo, hi = WAF_RATE_LIMIT_RANGE
    allowed = f"0 (off) or an integer from {lo} to {hi} (requests per 5 minutes per client IP)"
    try:
        value = _int_in(0, hi)(key, raw)
    except SettingsError:
        raise _fail(key, raw, allowed) from None
    if 0 < value < lo:
        raise _fail(key, raw, allowed)
    return value
