"""The whole program (``program.define_stack()``) under each stack file."""

from __future__ import annotations

import ipaddress
import json

import pytest

from components import outputs
from tests.unit import stand_ins
from tests.unit.conftest import PROD_DOMAIN, PROD_OVERRIDES
from tests.unit.harness import CERT, PROMOTED_REF, REGION, Run
from tests.unit.test_settings import settings_of

CLUSTER = "aws:rds/cluster:Cluster"
INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
BUCKET = "aws:s3/bucket:Bucket"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVER_TASK = "mlflow-service-task"
ING = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGR = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SUBNET = "aws:ec2/subnet:Subnet"
SECRET = "aws:secretsmanager/secret:Secret"



@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request, dev, prod) -> tuple[str, Run]:
    return request.param, {"dev": dev, "prod": prod}[request.param]


def settings(name: str):
    return settings_of(name, **(PROD_OVERRIDES if name == "prod" else {}))


def env_of(r: Run) -> dict[str, str]:
    (c,) = r.named(SERVER_TASK).container_definitions()
    return {e["name"]: e["value"] for e in c["environment"]}


def artifacts(r: Run, t: str = BUCKET):
    """The artifact store's one resource of type ``t`` (prod also has the access log bucket)."""
    found = [x for x in r.of_type(t) if x.name.startswith("mlflow-artifacts-")]
    assert len(found) == 1, [x.name for x in r.of_type(t)]
    return found[0]


def tier_ids(r: Run, tier: str) -> list[str]:
    return sorted(s.id for s in r.of_type(SUBNET) if s.inputs["tags"]["tier"] == tier)


# --- both stacks ----------------------------------------------------------------------------------

def test_outputs_are_the_shared_names_and_never_a_secret(stack):
    name, r = stack
    assert set(r.exports) == set(outputs.ALL)
    secrets = r.secret_values()
    assert secrets and not [v for v in r.exports.values() if any(s in str(v) for s in secrets)]
    assert r.exports[outputs.ADMIN_SECRET_ARN] == r.named("mlflow-service-admin").outputs["arn"]
    dns = r.one("aws:lb/loadBalancer:LoadBalancer").outputs["dnsName"]
    assert r.exports[outputs.LOAD_BALANCER_DNS] == dns
    assert r.exports[outputs.TRACKING_URI] == (f"https://{PROD_DOMAIN}" if name == "prod" else f"http://{dns}")
    assert r.exports[outputs.ARTIFACT_BUCKET] == artifacts(r).outputs["bucket"]
    assert r.exports[outputs.DATABASE_ENDPOINT] == r.one(CLUSTER).outputs["endpoint"]


def test_database_private_isolated_and_reachable_only_from_the_service(stack):
    _, r = stack
    assert all(i.inputs["publiclyAccessible"] is False for i in r.of_type(INSTANCE))
    assert sorted(r.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]) == tier_ids(r, "isolated")
    db_sg = r.named("mlflow-database-sg")
    service_sg = r.named("mlflow-service-sg")
    rules = [x for x in r.of_type(ING) if x.inputs["securityGroupId"] == db_sg.id]
    assert [(x.inputs["referencedSecurityGroupId"], x.inputs["fromPort"], x.inputs["toPort"]) for x in rules] == [
        (service_sg.id, 3306, 3306)]
    assert not [x for x in r.of_type(ING) + r.of_type(EGR)
                if x.inputs["securityGroupId"] == db_sg.id and ("cidrIpv4" in x.inputs or "cidrIpv6" in x.inputs)]
    assert r.one(CLUSTER).inputs["storageEncrypted"] is True


def test_security_groups_chain_alb_to_service_to_database(stack):
    _, r = stack
    alb_sg, service_sg, db_sg = (r.named(n).id for n in ("mlflow-service-alb-sg", "mlflow-service-sg",
                                                         "mlflow-database-sg"))
    into_service = [x for x in r.of_type(ING) if x.inputs["securityGroupId"] == service_sg]
    assert [(x.inputs["referencedSecurityGroupId"], x.inputs["fromPort"]) for x in into_service] == [(alb_sg, 5000)]
    out_of_service = sorted((x.inputs["fromPort"], x.inputs.get("referencedSecurityGroupId") or x.inputs["cidrIpv4"])
                            for x in r.of_type(EGR) if x.inputs["securityGroupId"] == service_sg)
    assert out_of_service == [(443, "0.0.0.0/0"), (3306, db_sg)]


def test_tasks_run_in_private_subnets_without_public_ip_in_prod_public_in_dev(stack):
    name, r = stack
    net = r.one("aws:ecs/service:Service").inputs["networkConfiguration"]
    tier = "public" if name == "dev" else "private"  # dev: taskSubnets public, natMode none (docs/cost.md)
    assert sorted(net["subnets"]) == tier_ids(r, tier) and net["assignPublicIp"] is (name == "dev")


def test_bucket_locked_down(stack):
    _, r = stack
    bucket = artifacts(r)
    block = artifacts(r, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    assert block["bucket"] == bucket.id
    assert artifacts(r, "aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs["rule"]["objectOwnership"] == \
        "BucketOwnerEnforced"
    sse = artifacts(r, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert sse.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in ("AES256", "aws:kms")
    (deny,) = artifacts(r, "aws:s3/bucketPolicy:BucketPolicy").policy()["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_no_secret_value_nor_secret_named_variable_in_the_environment(stack):
    _, r = stack
    env = env_of(r)
    assert not [k for k in env if any(w in k for w in ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL"))]
    secrets = r.secret_values()
    assert len(secrets) == 2  # MLflow admin, flask key (no database password: README "Database users")
    blob = json.dumps(r.named(SERVER_TASK).container_definitions())
    assert not [s for s in secrets if s in blob]
    (c,) = r.named(SERVER_TASK).container_definitions()
    assert {s["name"] for s in c["secrets"]} == {"MLFLOW_DB_PASSWORD", "MLFLOW_AUTH_ADMIN_USERNAME",
                                                 "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY"}
    own = {x.outputs["arn"] for x in r.of_type(SECRET)}
    assert all(s["valueFrom"].rsplit(":", 3)[0] in own for s in c["secrets"])


def test_no_secret_value_in_any_resource_input_other_than_its_holders(stack):
    """The generated passwords appear only where they belong: their secret versions (no database
    password at all: RDS manages the master's, the admin step generates the application user's)."""
    _, r = stack
    secrets = r.secret_values()
    holders = {"aws:secretsmanager/secretVersion:SecretVersion", "random:index/randomPassword:RandomPassword"}
    leaks = [x.name for x in r.resources if x.type not in holders and any(s in json.dumps(x.inputs) for s in secrets)]
    assert leaks == []


def test_task_role_scoped_to_the_bucket_prefix(stack):
    _, r = stack
    bucket_arn = artifacts(r).outputs["arn"]
    statements = r.named("mlflow-service-task-policy").policy()["Statement"]
    resources = sorted(res for s in statements for res in s["Resource"])
    assert resources == sorted([bucket_arn, f"{bucket_arn}/artifacts/*"])
    assert env_of(r)["MLFLOW_ARTIFACTS_DESTINATION"] == f"s3://{artifacts(r).outputs['bucket']}/artifacts"


def test_execution_role_scoped_to_its_secrets_log_group_and_repository(stack):
    name, r = stack
    by_sid = {s["Sid"]: s for s in r.named("mlflow-service-execution-policy").policy()["Statement"]}
    assert sorted(by_sid["ReadOwnSecrets"]["Resource"]) == sorted(x.outputs["arn"] for x in r.of_type(SECRET))
    assert by_sid["WriteOwnLogs"]["Resource"] == [r.one("aws:cloudwatch/logGroup:LogGroup").outputs["arn"] + ":*"]
    # dev pulls what it built, prod its own copy of the promoted digest: each from its own repository
    expected = r.one("aws:ecr/repository:Repository").outputs["arn"]
    assert by_sid["PullOwnImage"]["Resource"] == [expected]


def test_task_size_and_counts_equal_the_stack_settings(stack):
    name, r = stack
    s = settings(name)
    t = r.named(SERVER_TASK).inputs
    assert (int(t["cpu"]), int(t["memory"]), t["ephemeralStorage"]["sizeInGib"]) == (
        s.cpu, s.memory, s.ephemeral_storage_gib)
    assert r.one("aws:ecs/service:Service").inputs["desiredCount"] == s.desired_count
    targets = r.of_type("aws:appautoscaling/target:Target")
    if s.max_tasks > s.min_tasks:
        assert (targets[0].inputs["minCapacity"], targets[0].inputs["maxCapacity"]) == (s.min_tasks, s.max_tasks)
    else:
        assert targets == []
    env = env_of(r)
    assert env["MLFLOW_WORKERS"] == str(s.server_workers)
    assert env["MLFLOW_LB_IDLE_TIMEOUT_SECONDS"] == str(s.idle_timeout_seconds)
    assert r.one("aws:lb/loadBalancer:LoadBalancer").inputs["idleTimeout"] == s.idle_timeout_seconds
    pool, overflow = int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]), int(env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"])
    from components.sizing import aurora_connection_limit
    limit = aurora_connection_limit(s.db_engine, s.db_min_acu, s.db_max_acu)
    assert s.max_tasks * s.server_workers * 2 * (pool + overflow) <= 0.8 * limit - 5


def test_every_resource_belongs_to_the_component_tree(stack):
    _, r = stack
    root = r.one("mlflowtracking:index:MlflowTrackingServer")
    assert root.parent.endswith("pulumi:pulumi:Stack::mlflow-tracking-" + stack[0])
    components = {x.type: x for x in r.resources if x.type.startswith("mlflowtracking:")}
    assert set(components) == {f"mlflowtracking:index:{t}" for t in (
        "MlflowTrackingServer", "Network", "Database", "ArtifactStore", "ContainerImage", "Service", "Monitoring",
        *(["AlbAccessLogs"] if stack[0] == "prod" else []))}
    for comp in components.values():
        if comp is not root:
            assert comp.parent == root.urn and comp.name == f"mlflow-{comp.name.split('-', 1)[1]}"
    for x in r.resources:
        if x is root:
            continue
        parent = r.by_urn(x.parent)
        assert parent.type.startswith("mlflowtracking:index:"), x.name
        assert x.name.startswith(parent.name + "-"), (x.name, parent.name)


def test_availability_zones_come_from_the_data_source(stack):
    name, r = stack
    zones = sorted({s.inputs["availabilityZone"] for s in r.of_type(SUBNET)})
    assert zones == [f"{REGION}a", f"{REGION}b"][: settings(name).az_count]
    assert sorted(t for t, _ in r.recorder.calls if not t.startswith("aws:ecr")) == sorted([
        "aws:index/getAvailabilityZones:getAvailabilityZones", "aws:index/getRegion:getRegion",
        "aws:index/getCallerIdentity:getCallerIdentity", "aws:rds/getEngineVersion:getEngineVersion"])


def test_opted_in_local_zones_are_never_picked(stack):
    """EC2 DescribeAvailabilityZones lists opted-in Local Zones with ``state`` available, and they
    sort first (``<region>-<metro>-1a``); Aurora, NAT gateways and ALBs are not offered in most
    of them. ``opt-in-status`` = ``opt-in-not-required`` keeps the region's own zones only."""
    _, r = stack
    (call,) = [a for t, a in r.recorder.calls if t == "aws:index/getAvailabilityZones:getAvailabilityZones"]
    assert call.get("filters") == [{"name": "opt-in-status", "values": ["opt-in-not-required"]}]
    assert not [s.name for s in r.of_type(SUBNET) if s.inputs["availabilityZone"] == stand_ins.LOCAL_ZONE]


# --- dev ------------------------------------------------------------------------------------------

def test_dev_is_cheap_and_disposable(dev):
    c = dev.one(CLUSTER).inputs
    assert c["serverlessv2ScalingConfiguration"]["minCapacity"] == 0
    assert 300 <= c["serverlessv2ScalingConfiguration"]["secondsUntilAutoPause"] <= 86400
    assert c["deletionProtection"] is False and c["skipFinalSnapshot"] is True
    assert not dev.of_type("aws:ec2/natGateway:NatGateway")  # public tasks: no NAT, no interface endpoints
    assert [e.inputs["vpcEndpointType"] for e in dev.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")] == ["Gateway"]
    assert len(dev.of_type(INSTANCE)) == 1
    assert dev.one("aws:ecs/service:Service").inputs["desiredCount"] == 1
    assert 25 <= dev.named(SERVER_TASK).inputs["ephemeralStorage"]["sizeInGib"] <= 40
    assert dev.one(BUCKET).inputs["forceDestroy"] is True
    assert not [x.name for x in dev.resources if x.protect]
    assert all(x.inputs["recoveryWindowInDays"] == 0 for x in dev.of_type(SECRET))
    assert dev.one("aws:ecr/repository:Repository").inputs["forceDelete"] is True
    assert dev.one("aws:lb/loadBalancer:LoadBalancer").inputs["enableDeletionProtection"] is False


def test_dev_builds_its_image_and_runs_that_digest(dev):
    img = dev.one("docker:index/image:Image")
    (c,) = dev.named(SERVER_TASK).container_definitions()
    assert c["image"] == img.outputs["repoDigest"] == dev.exports[outputs.IMAGE_REF]
    assert "@sha256:" in c["image"]


# --- prod -----------------------------------------------------------------------------------------

def test_prod_keeps_its_data(prod):
    cluster = prod.one(CLUSTER)
    assert cluster.protect and artifacts(prod).protect
    assert all(i.protect for i in prod.of_type(INSTANCE))
    assert prod.named("mlflow-database-app-credentials").protect and prod.named("mlflow-service-admin").protect
    assert cluster.inputs["deletionProtection"] is True
    assert cluster.inputs["skipFinalSnapshot"] is False and cluster.inputs["finalSnapshotIdentifier"]
    assert cluster.inputs["backupRetentionPeriod"] == 14
    assert artifacts(prod).inputs["forceDestroy"] is False


def test_prod_is_highly_available(prod):
    instances = prod.of_type(INSTANCE)
    assert {i.name for i in instances} == {"mlflow-database-writer", "mlflow-database-reader"}
    assert len({i.inputs["availabilityZone"] for i in instances}) == 2
    nats = prod.of_type("aws:ec2/natGateway:NatGateway")
    assert len(nats) == len(prod.of_type(SUBNET)) // 3 == 2
    routes = [x for x in prod.of_type("aws:ec2/route:Route") if "natGatewayId" in x.inputs]
    assert len({x.inputs["natGatewayId"] for x in routes}) == 2
    svc = prod.one("aws:ecs/service:Service").inputs
    assert svc["desiredCount"] >= 2
    target = prod.one("aws:appautoscaling/target:Target").inputs
    assert target["minCapacity"] >= 2 and target["maxCapacity"] > target["minCapacity"]
    assert prod.one("aws:appautoscaling/policy:Policy").inputs["policyType"] == "TargetTrackingScaling"


def test_prod_spool_logs_and_tls(prod):
    assert prod.named(SERVER_TASK).inputs["ephemeralStorage"]["sizeInGib"] >= 100
    assert prod.one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 90
    listeners = {x.inputs["port"]: x.inputs for x in prod.of_type("aws:lb/listener:Listener")}
    assert listeners[443]["certificateArn"] == prod.one("aws:acm/certificate:Certificate").outputs["arn"]
    assert listeners[80]["defaultActions"][0]["type"] == "redirect"


def test_prod_never_builds_and_runs_its_own_copy_of_the_promoted_digest(prod):
    assert not [x for x in prod.resources if x.type.startswith("docker:")]
    repo = prod.one("aws:ecr/repository:Repository")
    assert repo.protect and repo.inputs["imageTagMutability"] == "IMMUTABLE"
    copy = prod.one("pulumi-python:dynamic/mlflowtracking:EcrImageCopy")
    assert copy.inputs["source_ref"] == PROMOTED_REF
    (c,) = prod.named(SERVER_TASK).container_definitions()
    own = f"{repo.outputs['repositoryUrl']}@{PROMOTED_REF.rsplit('@', 1)[1]}"
    assert c["image"] == own == prod.exports[outputs.IMAGE_REF]


# --- variants -------------------------------------------------------------------------------------

def test_nat_none_admits_the_service_to_the_interface_endpoints():
    from tests.unit.conftest import run_program

    r = run_program("dev", natMode="none", taskSubnets="private")  # dev itself has public tasks
    assert not r.of_type("aws:ec2/natGateway:NatGateway")
    endpoint_sg = r.named("mlflow-network-endpoints-sg").id
    rules = [x for x in r.of_type(ING) if x.inputs["securityGroupId"] == endpoint_sg]
    assert [(x.inputs["referencedSecurityGroupId"], x.inputs["fromPort"]) for x in rules] == [
        (r.named("mlflow-service-sg").id, 443)]


def test_postgresql_internal_alb_custom_domain_and_cidrs():
    from tests.unit.conftest import run_program

    r = run_program("dev", dbEngine="postgresql", albScheme="internal", domainName="mlflow.example.com",
                    allowedCidrs=["10.20.0.0/16"], certificateArn=CERT)
    assert r.one(CLUSTER).inputs["engine"] == "aurora-postgresql"
    db_rule = [x for x in r.of_type(ING) if x.inputs["securityGroupId"] == r.named("mlflow-database-sg").id]
    assert db_rule[0].inputs["fromPort"] == 5432
    assert r.one("aws:lb/loadBalancer:LoadBalancer").inputs["internal"] is True
    assert r.exports[outputs.TRACKING_URI] == "https://mlflow.example.com"
    assert env_of(r)["MLFLOW_SERVER_ALLOWED_HOSTS"] == "mlflow.example.com"
    alb_rules = [x for x in r.of_type(ING) if x.inputs["securityGroupId"] == r.named("mlflow-service-alb-sg").id]
    assert {x.inputs["cidrIpv4"] for x in alb_rules} == {"10.20.0.0/16"}
    assert all(ipaddress.ip_network(x.inputs["cidrIpv4"]) for x in alb_rules)
