"""Database on its own: private, encrypted, reachable only from the client SG, protected when asked."""

from __future__ import annotations

import pulumi
import pytest

from components.database import Database, DatabaseArgs
from tests.unit.harness import ZONES, run

CLUSTER = "aws:rds/cluster:Cluster"
INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
SECRET = "aws:secretsmanager/secret:Secret"
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"
PASSWORD = "random:index/randomPassword:RandomPassword"
PARAMS = "aws:rds/clusterParameterGroup:ClusterParameterGroup"
EXPOSED = ("master_secret_arn", "master_username", "app_secret_arn", "app_username")
FAMILY = {"mysql": "aurora-mysql8.0", "postgresql": "aurora-postgresql16"}
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
CLIENT_SG = "sg-service0001"
ISOLATED = ["subnet-iso-a", "subnet-iso-b"]


def database(**kw):
    kw.setdefault("engine_version", "8.0.mysql_aurora.3.10.0")
    kw.setdefault("parameter_group_family", FAMILY[kw.get("engine", "mysql")])
    args = DatabaseArgs(vpc_id="vpc-1", subnet_ids=ISOLATED, availability_zones=tuple(ZONES[:2]),
                        client_security_group_id=CLIENT_SG, **kw)

    def body():
        db = Database("db", args)
        for attr in EXPOSED:  # what the composition reads, resolved by the harness
            pulumi.export(attr, getattr(db, attr, None))
        return db

    return run(body)


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
    assert mysql.one(SECRET).inputs["recoveryWindowInDays"] == 0


def test_prod_shape_protected_with_reader_in_another_zone(pg_protected):
    c = pg_protected.one(CLUSTER)
    assert c.protect and c.inputs["deletionProtection"] is True and c.inputs["skipFinalSnapshot"] is False
    assert c.inputs["finalSnapshotIdentifier"].startswith("db-final-")
    assert c.inputs["backupRetentionPeriod"] == 14
    assert "secondsUntilAutoPause" not in c.inputs["serverlessv2ScalingConfiguration"]
    instances = pg_protected.of_type(INSTANCE)
    assert sorted(i.inputs["availabilityZone"] for i in instances) == ZONES[:2]
    assert all(i.protect for i in instances)
    assert pg_protected.one(SECRET).protect


def test_the_master_password_is_managed_by_rds_and_never_in_pulumi_state(mysql, pg_protected):
    """RDS API, CreateDBCluster ``ManageMasterUserPassword``: RDS generates the master password and
    keeps it in a Secrets Manager secret of its own, rotated every 7 days by default (Aurora User
    Guide, "Password management with Amazon Aurora and AWS Secrets Manager"). Nothing of it passes
    through Pulumi: no generated password, no secret value, no ``masterPassword`` input."""
    for r in (mysql, pg_protected):
        cluster = r.one(CLUSTER)
        assert cluster.inputs.get("manageMasterUserPassword") is True
        assert "masterPassword" not in cluster.inputs and "masterPasswordWo" not in cluster.inputs
        assert r.of_type(PASSWORD) == [] and r.of_type(SECRET_VERSION) == []
        assert r.exports["master_secret_arn"] == cluster.outputs["masterUserSecrets"][0]["secretArn"]
        assert r.exports["master_username"] == cluster.inputs["masterUsername"]
        # RDS's own secret is not one of ours: Pulumi neither creates nor deletes it
        assert r.exports["master_secret_arn"] not in [s.outputs["arn"] for s in r.of_type(SECRET)]


def test_the_application_user_has_its_own_secret_created_without_a_value(mysql, pg_protected):
    """README "Database users": the admin step generates the application user's password and writes
    the secret's first version, so the program creates the secret only (no SecretVersion, no
    password in the state). Disposable stacks: recovery window 0, so a destroy frees the name."""
    for r, protected in ((mysql, False), (pg_protected, True)):
        (secret,) = r.of_type(SECRET)
        assert r.exports["app_secret_arn"] == secret.outputs["arn"]
        assert r.exports["app_username"] == "mlflow_app"
        assert r.exports["app_username"] != r.exports["master_username"]
        assert secret.inputs["recoveryWindowInDays"] == (7 if protected else 0)
        assert secret.protect is protected


@pytest.mark.parametrize("engine,version,family,parameter,value", [
    ("mysql", "8.0.mysql_aurora.3.10.0", "aurora-mysql8.0", "require_secure_transport", "ON"),
    ("postgresql", "16.6", "aurora-postgresql16", "rds.force_ssl", "1"),
])
def test_the_cluster_refuses_plain_connections(engine, version, family, parameter, value):
    """Aurora User Guide, "Requiring an SSL/TLS connection to an Aurora MySQL DB cluster"
    (``require_secure_transport`` = ON) and "Securing Aurora PostgreSQL data with SSL/TLS"
    (``rds.force_ssl`` = 1, default 0 up to PostgreSQL 16): both DB cluster parameters, dynamic, in a
    custom cluster parameter group of the cluster's family, attached to the cluster. The stand-in
    refuses a parameter the family lacks and ``immediate`` on a static one, as RDS does."""
    r = database(engine=engine, engine_version=version, parameter_group_family=family, protect=False,
                 deletion_protection=False, final_snapshot=False)
    group = r.one(PARAMS)
    assert group.inputs["family"] == family
    assert group.inputs["parameters"] == [{"name": parameter, "value": value, "applyMethod": "immediate"}]
    cluster = r.one(CLUSTER).inputs
    assert cluster["dbClusterParameterGroupName"] == group.outputs["name"]
    # applied now, not in the next maintenance window (the association and the managed password)
    assert cluster["applyImmediately"] is True


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
    {"auto_pause_seconds": 100}, {"backup_retention_days": 0}, {"parameter_group_family": "aurora-postgresql16"},
    {"app_username": "mlflow"}, {"app_username": "bad-name"},
])
def test_args_validation(kw):
    with pytest.raises(ValueError):
        DatabaseArgs(**{**dict(vpc_id="v", subnet_ids=ISOLATED, availability_zones=tuple(ZONES[:2]),
                                client_security_group_id=CLIENT_SG, engine_version="8.0.mysql_aurora.3.10.0",
                                parameter_group_family="aurora-mysql8.0"), **kw})
