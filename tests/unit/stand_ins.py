"""Data-source stand-ins for the mocks, as strict as the provider they stand in for.

- ``aws:index/getAvailabilityZones`` answers like EC2's ``DescribeAvailabilityZones``: without
  an ``opt-in-status`` filter the answer includes an opted-in Local Zone, and because AWS lists
  zones by name (``-`` sorts before letters) it comes first, exactly where a program that takes
  the first N names would pick it. AWS names Local Zones ``<region>-<metro>-<n><letter>``
  (e.g. ``us-west-2-lax-1a``); their ``opt-in-status`` is ``opted-in``, a region's own zones
  are ``opt-in-not-required`` (EC2 API reference, DescribeAvailabilityZones, filters).
- ``aws:rds/getEngineVersion`` follows terraform-provider-aws's ``aws_rds_engine_version``
  data source (``internal/service/rds/engine_version_data_source.go``): candidates filtered by
  engine, parameter group family and version; ``preferred_versions`` keeps exact matches in
  the given order; ``latest`` picks the newest; otherwise one candidate, or the first preferred
  one, or an error ("multiple RDS engine versions" / "no RDS engine versions match"). ``version``
  is matched exactly here (stricter than AWS, which also matches some partial versions).
"""

from __future__ import annotations

import re
from typing import Any

REGION = "eu-west-1"
ZONES = [f"{REGION}a", f"{REGION}b", f"{REGION}c"]
LOCAL_ZONE = f"{REGION}-lz-1a"
"""An opted-in Local Zone of the stand-in region."""

ENGINE_VERSIONS: dict[tuple[str, str], list[str]] = {
    ("aurora-mysql", "aurora-mysql8.0"): [
        "8.0.mysql_aurora.3.04.0", "8.0.mysql_aurora.3.04.3", "8.0.mysql_aurora.3.05.2", "8.0.mysql_aurora.3.06.1",
        "8.0.mysql_aurora.3.07.1", "8.0.mysql_aurora.3.08.0", "8.0.mysql_aurora.3.08.2", "8.0.mysql_aurora.3.09.0",
        "8.0.mysql_aurora.3.10.0"],
    ("aurora-postgresql", "aurora-postgresql13"): ["13.12", "13.15", "13.18"],
    ("aurora-postgresql", "aurora-postgresql14"): ["14.9", "14.12", "14.15"],
    ("aurora-postgresql", "aurora-postgresql15"): ["15.4", "15.7", "15.10"],
    ("aurora-postgresql", "aurora-postgresql16"): ["16.1", "16.2", "16.3", "16.6", "16.8"],
    ("aurora-postgresql", "aurora-postgresql17"): ["17.4", "17.5"],
}
"""What ``describe-db-engine-versions`` lists as available, per (engine, parameter group family)."""

NEWEST = {"mysql": "8.0.mysql_aurora.3.10.0", "postgresql": "16.8"}
"""The newest version of each engine's default major line above."""


class DataSourceError(ValueError):
    """What the provider reports when a data source finds nothing; the engine hands it to the
    program as a failed invoke (``invoke of <token> failed: ...``), which the program may catch."""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version))


def availability_zones(args: dict[str, Any]) -> dict[str, Any]:
    zones = [(LOCAL_ZONE, "opted-in")] + [(z, "opt-in-not-required") for z in ZONES]
    if args.get("state") not in (None, "available"):
        zones = []
    for flt in args.get("filters") or []:
        if flt["name"] == "opt-in-status":
            zones = [(z, s) for z, s in zones if s in flt["values"]]
        else:
            raise AssertionError(f"getAvailabilityZones: filter {flt['name']!r} not modelled by the stand-in")
    names = [z for z, _ in zones]
    return {"names": names, "zoneIds": [f"euw1-{z.rsplit('-', 1)[-1]}" for z in names], "id": REGION}


def engine_version(args: dict[str, Any]) -> dict[str, Any]:
    engine = args.get("engine")
    if not engine:
        raise DataSourceError("getEngineVersion: engine is required")
    family = args.get("parameterGroupFamily")
    found = [(fam, v) for (eng, fam), versions in ENGINE_VERSIONS.items() if eng == engine
             and (family is None or fam == family) for v in versions]
    if args.get("version"):
        found = [(fam, v) for fam, v in found if v == args["version"]]
    if not found:
        raise DataSourceError(f"no RDS engine versions found: {args}")
    preferred = args.get("preferredVersions") or []
    if preferred:
        found = [(fam, v) for want in preferred for fam, v in found if v == want]
        if not found:
            raise DataSourceError(f"no RDS engine versions match the criteria and preferred versions: {preferred}")
    if args.get("latest"):
        choice = max(found, key=lambda fv: _version_key(fv[1]))
    elif len(found) == 1 or preferred:
        choice = found[0]
    else:
        raise DataSourceError(f"multiple RDS engine versions ({[v for _, v in found]}) match the criteria: {args}")
    fam, version = choice
    return {"engine": engine, "version": version, "versionActual": version, "parameterGroupFamily": fam,
            "status": "available", "supportedModes": ["provisioned"], "id": version}


CLUSTER_SNAPSHOTS: dict[str, tuple[str, str, str]] = {
    # identifier (or ARN) -> (SnapshotType, engine, engine version): a snapshot taken after an
    # automatic minor upgrade (3.10.0) of a cluster created at an older minor
    "mlflow-database-cluster-9f8e7d6-pre-upgrade-20300101120000": ("manual", "aurora-mysql", "8.0.mysql_aurora.3.10.0"),
    "arn:aws:rds:eu-west-1:123456789012:cluster-snapshot:mlflow-database-cluster-9f8e7d6-pre-upgrade-20300101120000":
        ("manual", "aurora-mysql", "8.0.mysql_aurora.3.10.0"),
    "rds:mlflow-database-cluster-9f8e7d6-2030-01-01-02-05": ("automated", "aurora-mysql", "8.0.mysql_aurora.3.09.0"),
    "mlflow-pg-before-upgrade": ("manual", "aurora-postgresql", "16.6"),
}


def cluster_snapshot(args: dict[str, Any]) -> dict[str, Any]:
    """``aws.rds.getClusterSnapshot`` (terraform-provider-aws data source ``aws_db_cluster_snapshot``
    over DescribeDBClusterSnapshots): an automated snapshot is found by its identifier only with
    ``SnapshotType`` ``automated`` (RDS API Reference, DescribeDBClusterSnapshots,
    DBClusterSnapshotIdentifier); nothing found is the data source's error."""
    ident = args.get("dbClusterSnapshotIdentifier")
    found = CLUSTER_SNAPSHOTS.get(ident or "")
    if found and found[0] == "automated" and args.get("snapshotType") != "automated":
        found = None
    if not found:
        raise DataSourceError("Your query returned no results. Please change your search criteria and try again.")
    kind, engine, version = found
    return {"dbClusterSnapshotIdentifier": ident, "engine": engine, "engineVersion": version, "snapshotType": kind,
            "status": "available", "storageEncrypted": True, "id": ident}


CLUSTER_PARAMETERS: dict[str, dict[str, str]] = {
    "aurora-mysql": {"require_secure_transport": "dynamic", "binlog_format": "static",
                     "character_set_server": "dynamic", "time_zone": "dynamic"},
    "aurora-postgresql": {"rds.force_ssl": "dynamic", "shared_preload_libraries": "static",
                          "log_min_duration_statement": "dynamic", "timezone": "dynamic"},
}
"""A few DB cluster parameters per engine and their apply type, as ``describe-db-cluster-parameters``
lists them: ``require_secure_transport`` (Aurora User Guide, "Requiring an SSL/TLS connection to an
Aurora MySQL DB cluster") and ``rds.force_ssl`` (Aurora User Guide, "Securing Aurora PostgreSQL data
with SSL/TLS": changed dynamically, no restart) are dynamic."""


def cluster_parameter_group(inputs: dict[str, Any]) -> None:
    """What ``CreateDBClusterParameterGroup`` + ``ModifyDBClusterParameterGroup`` refuse: an unknown
    family (``DBParameterGroupFamily``), a parameter the family lacks ("InvalidParameterValue: Could not
    find parameter with name: rds.force_ssl", terraform-provider-aws issue 1598), and ``immediate`` on a
    static parameter ("InvalidParameterCombination: cannot use immediate apply method for static
    parameter")."""
    family = inputs.get("family")
    engine = next((e for e, f in ENGINE_VERSIONS if f == family), None)
    if engine is None:
        raise DataSourceError(f"DBParameterGroupFamily {family!r} does not exist")
    known = CLUSTER_PARAMETERS[engine]
    for p in inputs.get("parameters") or []:
        if p["name"] not in known:
            raise DataSourceError(f"InvalidParameterValue: Could not find parameter with name: {p['name']}")
        if p.get("applyMethod", "immediate") == "immediate" and known[p["name"]] == "static":
            raise DataSourceError("InvalidParameterCombination: cannot use immediate apply method for static parameter")
