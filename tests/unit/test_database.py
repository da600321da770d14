"""Database on its own: private, encrypted, reachable only from the client SG, protected when asked."""

from __future__ import annotations

import json

import pytest

from components.database import Database, DatabaseArgs
from tests.unit.harness import ZONES, run

CLUSTER = "aws:rds/cluster:Cluster"
INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
CLIENT_SG = "sg-service0001"
ISOLATED = ["subnet-iso-a", "subnet-iso-b"]


def database(**kw):
    kw.setdefault("engine_version", "8.0.mysql_aurora.3.10.0")
    args = DatabaseArgs(vpc_id="vpc-1", subnet_ids=ISOLATED, availability_zones=tuple(ZONES[:2]),
                        client_security_group_id=CLIENT_SG, **kw)
    return run(lambda: Database("db", args))


@pytest.fixture(scope="module")
def mysql():
    return database(engine="mysql", min_acu=0, max_acu=2, auto_pause_seconds=900, reader=False,
                    deletion_protection=False, final_snapshot=False, protect=False, backup_retention_days=1)


@pytest.fixture(scope="module")
def pg_protected():
    return database(engine="postgresql", engine_version="16.6", min_acu=1, max_acu=8, reader=True,
                    deletion_protection=True, final_snapshot=True, protect=True, backup_retention_days=14)


def test_not_public_and_in_the_isolated_subnets(mysql):
    for inst in mysql.of_type(INSTANCE):
        assert inst.inputs["publiclyAccessible"] is False
        assert inst.inputs["instanceClass"] == "db.serverless"
    group = mysql.one("aws:rds/subnetGroup:SubnetGroup")
    assert group.inputs["subnetIds"] == ISOLATED
    assert mysql.one(CLUSTER).inputs["dbSubnetGroupName"] == group.outputs["name"]


def test_only_the_client_security_group_on_the_engine_port(mysql, pg_protected):
    for r, port in ((mysql, 3306), (pg_protected, 5432)):
        sg = r.one("aws:ec2/securityGroup:SecurityGroup")
        assert not sg.inputs.get("ingress") and not sg.inputs.get("egress")
        (rule,) = r.of_type(INGRESS)
        assert rule.inputs["securityGroupId"] == sg.id
        assert rule.inputs["referencedSecurityGroupId"] == CLIENT_SG
        assert (rule.inputs["fromPort"], rule.inputs["toPort"], rule.inputs["ipProtocol"]) == (port, port, "tcp")
        assert "cidrIpv4" not in rule.inputs and "cidrIpv6" not in rule.inputs
        assert r.one(CLUSTER).inputs["vpcSecurityGroupIds"] == [sg.id]


def test_storage_encrypted_and_serverless_v2(mysql):
    c = mysql.one(CLUSTER).inputs
    assert c["storageEncrypted"] is True
    assert c["engine"] == "aurora-mysql" and c["engineMode"] == "provisioned"
    assert c["serverlessv2ScalingConfiguration"] == {"minCapacity": 0, "maxCapacity": 2, "secondsUntilAutoPause": 900}


def test_dev_shape_no_protection(mysql):
    c = mysql.one(CLUSTER)
    assert c.inputs["deletionProtection"] is False and c.inputs["skipFinalSnapshot"] is True
    assert c.inputs["backupRetentionPeriod"] == 1
    assert not any(x.protect for x in mysql.resources)
    assert len(mysql.of_type(INSTANCE)) == 1
    assert mysql.one("aws:secretsmanager/secret:Secret").inputs["recoveryWindowInDays"] == 0


def test_prod_shape_protected_with_reader_in_another_zone(pg_protected):
    c = pg_protected.one(CLUSTER)
    assert c.protect and c.inputs["deletionProtection"] is True and c.inputs["skipFinalSnapshot"] is False
    assert c.inputs["finalSnapshotIdentifier"].startswith("db-final-")
    assert c.inputs["backupRetentionPeriod"] == 14
    assert "secondsUntilAutoPause" not in c.inputs["serverlessv2ScalingConfiguration"]
    instances = pg_protected.of_type(INSTANCE)
    assert sorted(i.inputs["availabilityZone"] for i in instances) == ZONES[:2]
    assert all(i.protect for i in instances)
    assert pg_protected.one("aws:secretsmanager/secret:Secret").protect
    assert pg_protected.one("random:index/randomPassword:RandomPassword").protect


def test_credentials_secret_holds_the_connection_and_the_generated_password(mysql):
    password = mysql.one("random:index/randomPassword:RandomPassword")
    version = mysql.one("aws:secretsmanager/secretVersion:SecretVersion")
    doc = json.loads(version.inputs["secretString"])
    assert set(doc) == {"host", "port", "username", "password", "dbname", "engine"}
    assert doc["password"] == password.outputs["result"]
    assert doc["host"] == mysql.one(CLUSTER).outputs["endpoint"] and doc["port"] == 3306
    assert mysql.one(CLUSTER).inputs["masterPassword"] == password.outputs["result"]


def _window(text: str) -> tuple[int, int]:
    """``ddd:hh24:mi-ddd:hh24:mi`` (or ``hh24:mi-hh24:mi``, daily) as minutes of the week."""
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

    def minute(part: str, day: int) -> int:
        bits = part.split(":")
        if len(bits) == 3:
            day, bits = days.index(bits[0]), bits[1:]
        return day * 1440 + int(bits[0]) * 60 + int(bits[1])

    start, end = text.split("-")
    return minute(start, 0), minute(end, 0)


@pytest.mark.parametrize("fixture", ["mysql", "pg_protected"])
def test_maintenance_window_pinned_and_clear_of_the_backup_window(fixture, request):
    """RDS: ``preferred_maintenance_window`` (ddd:hh24:mi-ddd:hh24:mi, UTC, at least 30 minutes)
    must not overlap ``preferred_backup_window``; unset, RDS picks a random 30-minute slot per
    region and instance, so minor upgrades and restarts land whenever (Aurora User Guide,
    "Adjusting the preferred DB cluster maintenance window")."""
    r = request.getfixturevalue(fixture)
    cluster = r.one(CLUSTER).inputs
    backup = _window(cluster["preferredBackupWindow"])
    maintenance = _window(cluster["preferredMaintenanceWindow"])
    assert maintenance[1] - maintenance[0] >= 30
    for day in range(7):  # the backup window repeats daily
        b0, b1 = backup[0] + day * 1440, backup[1] + day * 1440
        assert maintenance[1] <= b0 or b1 <= maintenance[0], (cluster["preferredBackupWindow"],
                                                              cluster["preferredMaintenanceWindow"])
    for inst in r.of_type(INSTANCE):
        assert inst.inputs["preferredMaintenanceWindow"] == cluster["preferredMaintenanceWindow"]


def test_children_parented(mysql):
    comp = mysql.one("mlflowtracking:index:Database")
    assert all(x.parent == comp.urn and x.name.startswith("db-") for x in mysql.resources if x is not comp)


@pytest.mark.parametrize("kw", [
    {"engine": "oracle"}, {"min_acu": 0.3}, {"max_acu": 0.5}, {"min_acu": 4, "max_acu": 2},
    {"auto_pause_seconds": 100}, {"backup_retention_days": 0},
])
def test_args_validation(kw):
    with pytest.raises(ValueError):
        DatabaseArgs(vpc_id="v", subnet_ids=ISOLATED, availability_zones=tuple(ZONES[:2]),
                     client_security_group_id=CLIENT_SG, engine_version="8.0.mysql_aurora.3.10.0", **kw)
