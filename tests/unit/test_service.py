"""Service on its own: the task definition (contract, secrets, spool, hardening), the roles' scope,
the ALB and its security groups, scaling."""

from __future__ import annotations

import pytest

from components.service import HEALTHCHECK_COMMAND, SPOOL_PATH, Service, ServiceArgs
from tests.unit.harness import CERT, PROMOTED_REF, run

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVER_TASK, ADMIN_TASK = "svc-task", "svc-dbadmin-task"
ING = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGR = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SERVICE_SG = "sg-service0001"
DB_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-app-credentials-AbCdEf"
MASTER_SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:rds!cluster-0123abcd-4567-AbCdEf"
BUCKET_ARN = "arn:aws:s3:::art-bucket"
REPO_ARN = "arn:aws:ecr:eu-west-1:123456789012:repository/mlflow-dev"

BASE = dict(
    vpc_id="vpc-1", public_subnet_ids=["subnet-pub-a", "subnet-pub-b"],
    private_subnet_ids=["subnet-prv-a", "subnet-prv-b"], service_security_group_id=SERVICE_SG,
    region="eu-west-1", account_id="123456789012", image_ref=PROMOTED_REF, repository_arn=REPO_ARN,
    db_engine="mysql", db_host="db.cluster-abc.eu-west-1.rds.amazonaws.com", db_port=3306,
    db_app_secret_arn=DB_SECRET, db_master_secret_arn=MASTER_SECRET, db_cluster_identifier="mlflow-db-1a2b", bucket_name="art-bucket", bucket_arn=BUCKET_ARN, allowed_cidrs=("10.0.0.0/8",),
)


def service(**kw):
    return run(lambda: Service("svc", ServiceArgs(**{**BASE, **kw})))


@pytest.fixture(scope="module")
def small():
    return service(cpu=512, memory=2048, ephemeral_storage_gib=30, desired_count=1, min_tasks=1, max_tasks=1,
                   protect=False, idle_timeout_seconds=900)


@pytest.fixture(scope="module")
def large():
    return service(cpu=2048, memory=8192, ephemeral_storage_gib=150, cpu_architecture="ARM64", desired_count=3,
                   min_tasks=2, max_tasks=8, cpu_target_percent=55, certificate_arn=CERT,
                   allowed_cidrs=("203.0.113.0/24", "2001:db8::/32"), domain_name="mlflow.example.com",
                   alb_scheme="internal", log_retention_days=90, protect=True, idle_timeout_seconds=1200)


def container(r):
    (c,) = r.named(SERVER_TASK).container_definitions()
    return c


def test_task_size_and_spool_come_from_the_args(small, large):
    for r, cpu, mem, gib, arch in ((small, "512", "2048", 30, "X86_64"), (large, "2048", "8192", 150, "ARM64")):
        t = r.named(SERVER_TASK).inputs
        assert (t["cpu"], t["memory"], t["ephemeralStorage"]["sizeInGib"]) == (cpu, mem, gib)
        assert t["runtimePlatform"] == {"cpuArchitecture": arch, "operatingSystemFamily": "LINUX"}
        assert t["requiresCompatibilities"] == ["FARGATE"] and t["networkMode"] == "awsvpc"
        assert t["volumes"] == [{"name": "spool"}]  # no host path: lives on the ephemeral storage


def test_container_is_hardened(small):
    c = container(small)
    assert c["image"] == PROMOTED_REF
    assert c["readonlyRootFilesystem"] is True
    assert c["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert "user" not in c  # the image's non-root USER
    assert c["mountPoints"] == [{"sourceVolume": "spool", "containerPath": SPOOL_PATH, "readOnly": False}]
    assert c["healthCheck"]["command"] == HEALTHCHECK_COMMAND
    assert c["portMappings"][0]["containerPort"] == 5000
    assert c["logConfiguration"]["logDriver"] == "awslogs"


def test_secrets_only_through_value_from_never_in_environment(small):
    c = container(small)
    env = {e["name"]: e["value"] for e in c["environment"]}
    secrets = {s["name"]: s["valueFrom"] for s in c["secrets"]}
    admin = small.named("svc-admin").outputs["arn"]
    flask = small.named("svc-flask-secret-key").outputs["arn"]
    assert secrets == {
        "MLFLOW_DB_PASSWORD": f"{DB_SECRET}:password::",
        "MLFLOW_AUTH_ADMIN_USERNAME": f"{admin}:username::",
        "MLFLOW_AUTH_ADMIN_PASSWORD": f"{admin}:password::",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": f"{flask}:secret_key::",
    }
    assert not set(env) & set(secrets)
    assert not [k for k in env if any(w in k for w in ("PASSWORD", "SECRET", "TOKEN"))]
    generated = small.secret_values()
    assert len(generated) == 2
    assert not [v for v in env.values() if any(g in v for g in generated)]


def test_environment_follows_the_contract(small, large):
    env = {e["name"]: e["value"] for e in container(small)["environment"]}
    dns = small.one("aws:lb/loadBalancer:LoadBalancer").outputs["dnsName"]
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://art-bucket/artifacts"
    assert env["MLFLOW_SERVE_ARTIFACTS"] == "true"
    assert env["MLFLOW_SPOOL_DIR"] == SPOOL_PATH
    assert env["MLFLOW_LB_IDLE_TIMEOUT_SECONDS"] == "900"
    assert env["MLFLOW_SERVER_ALLOWED_HOSTS"] == dns
    assert env["MLFLOW_DB_HOST"] == BASE["db_host"] and env["MLFLOW_DB_PORT"] == "3306"
    env = {e["name"]: e["value"] for e in container(large)["environment"]}
    assert env["MLFLOW_LB_IDLE_TIMEOUT_SECONDS"] == "1200"
    assert env["MLFLOW_SERVER_ALLOWED_HOSTS"] == "mlflow.example.com"  # the only name the certificate covers


def test_task_role_only_touches_the_artifact_prefix(small):
    statements = small.named("svc-task-policy").policy()["Statement"]
    for st in statements:
        assert st["Effect"] == "Allow"
        assert all(a.startswith("s3:") for a in st["Action"])
        assert "*" not in st["Action"] and "s3:*" not in st["Action"]
    objects = next(s for s in statements if "s3:GetObject" in s["Action"])
    assert objects["Resource"] == [f"{BUCKET_ARN}/artifacts/*"]
    assert sorted(objects["Action"]) == ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    # HeadBucket (the entrypoint's start-up check) is s3:ListBucket with no s3:prefix in the request
    # context: a grant conditioned on s3:prefix denies it on AWS (tests/server/test_iam_s3.py)
    listing = next(s for s in statements if s["Action"] == ["s3:ListBucket"])
    assert listing["Resource"] == [BUCKET_ARN]
    assert "Condition" not in listing


def test_execution_role_reads_only_its_own_secrets_logs_and_repository(small):
    statements = small.named("svc-execution-policy").policy()["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    log_arn = small.one("aws:cloudwatch/logGroup:LogGroup").outputs["arn"]
    assert by_sid["WriteOwnLogs"]["Resource"] == [f"{log_arn}:*"]
    assert sorted(by_sid["ReadOwnSecrets"]["Resource"]) == sorted(
        [DB_SECRET, small.named("svc-admin").outputs["arn"], small.named("svc-flask-secret-key").outputs["arn"]])
    assert by_sid["PullOwnImage"]["Resource"] == [REPO_ARN]
    wildcard = [s for s in statements if "*" in s["Resource"]]
    assert [s["Action"] for s in wildcard] == [["ecr:GetAuthorizationToken"]]  # cannot be scoped by AWS
    assert all("*" not in a for s in statements for a in s["Action"])


def test_roles_trust_only_ecs_tasks_of_this_account(small):
    for role in small.of_type("aws:iam/role:Role"):
        (st,) = role.policy("assumeRolePolicy")["Statement"]
        assert st["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert st["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_alb_admits_only_the_allowed_networks_and_reaches_only_the_service(large):
    alb_sg = large.named("svc-alb-sg")
    rules = [x for x in large.of_type(ING) if x.inputs["securityGroupId"] == alb_sg.id]
    assert sorted((x.inputs["fromPort"], x.inputs.get("cidrIpv4") or x.inputs.get("cidrIpv6")) for x in rules) == [
        (80, "2001:db8::/32"), (80, "203.0.113.0/24"), (443, "2001:db8::/32"), (443, "203.0.113.0/24")]
    (egress,) = large.of_type(EGR)
    assert egress.inputs["referencedSecurityGroupId"] == SERVICE_SG and egress.inputs["fromPort"] == 5000
    (to_service,) = [x for x in large.of_type(ING) if x.inputs["securityGroupId"] == SERVICE_SG]
    assert to_service.inputs["referencedSecurityGroupId"] == alb_sg.id
    assert (to_service.inputs["fromPort"], to_service.inputs["toPort"]) == (5000, 5000)


def test_https_listener_and_redirect_with_a_certificate(large):
    listeners = {x.inputs["port"]: x.inputs for x in large.of_type("aws:lb/listener:Listener")}
    assert listeners[443]["protocol"] == "HTTPS" and listeners[443]["certificateArn"] == CERT
    assert listeners[443]["defaultActions"][0]["type"] == "forward"
    redirect = listeners[80]["defaultActions"][0]
    assert redirect["type"] == "redirect" and redirect["redirect"]["protocol"] == "HTTPS"


def test_plain_http_only_without_certificate(small):
    listeners = small.of_type("aws:lb/listener:Listener")
    assert [(x.inputs["port"], x.inputs["protocol"]) for x in listeners] == [(80, "HTTP")]


def test_alb_scheme_idle_timeout_and_health_check(small, large):
    lb = small.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert lb["internal"] is False and lb["idleTimeout"] == 900 and lb["subnets"] == BASE["public_subnet_ids"]
    assert lb["dropInvalidHeaderFields"] is True
    lb = large.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert lb["internal"] is True and lb["subnets"] == BASE["private_subnet_ids"]
    tg = small.one("aws:lb/targetGroup:TargetGroup").inputs
    assert tg["healthCheck"]["path"] == "/health" and tg["targetType"] == "ip" and tg["port"] == 5000


def test_service_private_no_public_ip_with_circuit_breaker(small):
    s = small.one("aws:ecs/service:Service").inputs
    assert s["networkConfiguration"] == {"subnets": BASE["private_subnet_ids"], "securityGroups": [SERVICE_SG],
                                         "assignPublicIp": False}
    assert s["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
    assert s["launchType"] == "FARGATE" and s["desiredCount"] == 1


def test_autoscaling_only_when_max_exceeds_min(small, large):
    assert not small.of_type("aws:appautoscaling/target:Target")
    target = large.one("aws:appautoscaling/target:Target").inputs
    assert (target["minCapacity"], target["maxCapacity"]) == (2, 8)
    policy = large.one("aws:appautoscaling/policy:Policy").inputs["targetTrackingScalingPolicyConfiguration"]
    assert policy["targetValue"] == 55
    assert policy["predefinedMetricSpecification"]["predefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    svc = large.one("aws:ecs/service:Service")
    assert svc.inputs["desiredCount"] == 3 and svc.ignore_changes == ("desiredCount",)


def test_logs_retention_and_admin_secret_protection(small, large):
    assert small.one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 30
    assert large.one("aws:cloudwatch/logGroup:LogGroup").inputs["retentionInDays"] == 90
    assert large.named("svc-admin").protect and not small.named("svc-admin").protect
    assert small.named("svc-admin").inputs["recoveryWindowInDays"] == 0


def test_tracking_uri_and_children_parented(small):
    comp = small.one("mlflowtracking:index:Service")
    assert all(x.parent == comp.urn and x.name.startswith("svc-") for x in small.resources if x is not comp)


@pytest.mark.parametrize("kw", [
    {"cpu": 1024, "memory": 1024}, {"cpu": 300, "memory": 1024}, {"ephemeral_storage_gib": 20},
    {"ephemeral_storage_gib": 201}, {"min_tasks": 2, "desired_count": 1}, {"max_tasks": 0, "desired_count": 0,
                                                                          "min_tasks": 0},
    {"allowed_cidrs": ()}, {"allowed_cidrs": ("10.0.0.1/8",)}, {"log_retention_days": 10},
    {"alb_scheme": "public"}, {"cpu_architecture": "arm"}, {"admin_timeout_seconds": 10},
    {"admin_timeout_seconds": 86400},
])
def test_args_validation(kw):
    with pytest.raises(ValueError):
        ServiceArgs(**{**BASE, **kw})


def test_the_admin_step_gets_the_master_secret_and_the_server_does_not(small):
    """Contract: MLFLOW_DB_ADMIN_* only in the admin container, from RDS's master secret; the
    server's execution role cannot read that secret, the admin step's reads nothing else."""
    (admin,) = small.named(ADMIN_TASK).container_definitions()
    assert {s["name"]: s["valueFrom"] for s in admin["secrets"]} == {
        "MLFLOW_DB_ADMIN_USER": f"{MASTER_SECRET}:username::", "MLFLOW_DB_ADMIN_PASSWORD": f"{MASTER_SECRET}:password::"}
    assert not [s for s in container(small)["secrets"] if MASTER_SECRET in s["valueFrom"]]
    server_reads = next(s for s in small.named("svc-execution-policy").policy()["Statement"]
                        if s["Sid"] == "ReadOwnSecrets")["Resource"]
    admin_reads = next(s for s in small.named("svc-dbadmin-exec-policy").policy()["Statement"]
                       if s["Sid"] == "ReadMasterSecret")["Resource"]
    assert MASTER_SECRET not in server_reads and admin_reads == [MASTER_SECRET]
    assert small.named(ADMIN_TASK).inputs["runtimePlatform"]["cpuArchitecture"] == "X86_64"


def test_the_service_waits_for_the_admin_step_and_its_own_roles(small):
    """ECS assumes the execution role to pull the image and read the secrets when a task starts:
    the roles' inline policies must exist first (a task started before them fails with
    ResourceInitializationError); the admin step must have succeeded (schemas at the image's heads)."""
    deps = small.one("aws:ecs/service:Service").dependencies
    for name in ("svc-dbadmin-run", "svc-execution-policy", "svc-task-policy"):
        assert small.named(name).urn in deps, name
