"""Two kinds of database access in the whole program (README "Database users", "The admin step"):
the server container connects as the application user with its own secret and never receives the
master secret; only the admin task does, which ``pulumi up`` runs (and waits for) before the ECS
service; the cluster refuses plain connections."""

from __future__ import annotations

import pytest

from tests.unit import stand_ins
from tests.unit.conftest import run_program
from tests.unit.harness import Run

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVER_TASK = "mlflow-service-task"
ADMIN_TASK = "mlflow-service-dbadmin-task"
RUN = "pulumi-python:dynamic/mlflowtracking:DatabaseAdminRun"
CLUSTER = "aws:rds/cluster:Cluster"
PARAMS = "aws:rds/clusterParameterGroup:ClusterParameterGroup"
SECRET = "aws:secretsmanager/secret:Secret"
TLS_CA = "/app/certs/rds-global-bundle.pem"
ADMIN_ENV = {"AWS_REGION", "MLFLOW_AUTH_DB_NAME", "MLFLOW_DB_APP_SECRET_ARN", "MLFLOW_DB_ENGINE", "MLFLOW_DB_HOST",
             "MLFLOW_DB_NAME", "MLFLOW_DB_PORT", "MLFLOW_DB_TLS_CA", "MLFLOW_DB_USER"}
"""The admin container's plain environment (the contract, /tmp/helpers/ISSUE10_CONTRACT.md, and the
README's container contract table)."""


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request, dev, prod) -> Run:
    return {"dev": dev, "prod": prod}[request.param]


def container(r: Run, task: str) -> dict:
    (c,) = r.named(task).container_definitions()
    return c


def env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["environment"]}


def secrets(c: dict) -> dict[str, str]:
    return {s["name"]: s["valueFrom"] for s in c.get("secrets", [])}


def master_secret(r: Run) -> str:
    return r.one(CLUSTER).outputs["masterUserSecrets"][0]["secretArn"]


def app_secret(r: Run) -> str:
    return r.named("mlflow-database-app-credentials").outputs["arn"]


def test_the_server_connects_as_the_application_user_and_never_gets_the_master_secret(stack):
    c = container(stack, SERVER_TASK)
    assert env(c)["MLFLOW_DB_USER"] == "mlflow_app" != stack.one(CLUSTER).inputs["masterUsername"]
    assert secrets(c)["MLFLOW_DB_PASSWORD"] == f"{app_secret(stack)}:password::"
    assert not [k for k in [*env(c), *secrets(c)] if k.startswith("MLFLOW_DB_ADMIN_")]
    assert not [v for v in secrets(c).values() if v.startswith(master_secret(stack))]
    statements = stack.named("mlflow-service-execution-policy").policy()["Statement"]
    assert master_secret(stack) not in [res for s in statements for res in s["Resource"]]


def test_only_the_admin_container_receives_the_master_credentials(stack):
    holders = [(t.name, c["name"]) for t in stack.of_type(TASK) for c in t.container_definitions()
               if any(k.startswith("MLFLOW_DB_ADMIN_") for k in [*env(c), *secrets(c)])]
    assert holders == [(ADMIN_TASK, "mlflow-admin")]
    assert secrets(container(stack, ADMIN_TASK)) == {
        "MLFLOW_DB_ADMIN_USER": f"{master_secret(stack)}:username::",
        "MLFLOW_DB_ADMIN_PASSWORD": f"{master_secret(stack)}:password::"}
    assert not [k for k in env(container(stack, ADMIN_TASK)) if k.startswith("MLFLOW_DB_ADMIN_")]


def test_the_admin_task_runs_the_admin_command_of_the_same_image(stack):
    server, admin = container(stack, SERVER_TASK), container(stack, ADMIN_TASK)
    assert admin["command"] == ["admin"] and admin["image"] == server["image"] and "@sha256:" in admin["image"]
    e = env(admin)
    assert set(e) == ADMIN_ENV
    assert e["MLFLOW_DB_APP_SECRET_ARN"] == app_secret(stack)
    assert e["MLFLOW_DB_USER"] == env(server)["MLFLOW_DB_USER"] == "mlflow_app"
    for key in ("MLFLOW_DB_ENGINE", "MLFLOW_DB_HOST", "MLFLOW_DB_PORT", "MLFLOW_DB_NAME", "MLFLOW_AUTH_DB_NAME",
                "AWS_REGION"):
        assert e[key] == env(server)[key], key
    assert e["MLFLOW_DB_HOST"] == stack.one(CLUSTER).outputs["endpoint"]
    assert admin["readonlyRootFilesystem"] is True and admin["linuxParameters"]["capabilities"]["drop"] == ["ALL"]
    assert "portMappings" not in admin and "healthCheck" not in admin
    logs, server_logs = admin["logConfiguration"]["options"], server["logConfiguration"]["options"]
    assert logs["awslogs-group"] == server_logs["awslogs-group"]
    assert logs["awslogs-stream-prefix"] == "admin" != server_logs["awslogs-stream-prefix"]


def test_the_admin_task_definition_is_small_and_of_its_own_family(stack):
    """ECS Developer Guide, "Task definition parameters": Fargate cpu/memory pairs; one family per
    task definition (a shared family would make each registration a revision of the other)."""
    server, admin = stack.named(SERVER_TASK).inputs, stack.named(ADMIN_TASK).inputs
    assert admin["family"].endswith("-admin") and admin["family"] != server["family"]
    assert (admin["cpu"], admin["memory"]) == ("512", "1024")
    assert admin["runtimePlatform"] == server["runtimePlatform"]  # the image is built for that architecture
    assert admin["requiresCompatibilities"] == ["FARGATE"] and admin["networkMode"] == "awsvpc"
    assert admin["executionRoleArn"] == stack.named("mlflow-service-dbadmin-exec-role").outputs["arn"]
    assert admin["taskRoleArn"] == stack.named("mlflow-service-dbadmin-task-role").outputs["arn"]


def test_the_admin_roles_reach_one_secret_each(stack):
    """Execution role: the master secret only (ECS injects it); task role: the application user's
    secret only, read and write (the step generates and stores its password)."""
    ex = {s["Sid"]: s for s in stack.named("mlflow-service-dbadmin-exec-policy").policy()["Statement"]}
    assert ex["ReadMasterSecret"]["Action"] == ["secretsmanager:GetSecretValue"]
    assert ex["ReadMasterSecret"]["Resource"] == [master_secret(stack)]
    assert [s["Resource"] for s in ex.values() if any(a.startswith("secretsmanager:") for a in s["Action"])] == [
        [master_secret(stack)]]
    assert ex["PullOwnImage"]["Resource"] == [stack.one("aws:ecr/repository:Repository").outputs["arn"]]
    (task,) = stack.named("mlflow-service-dbadmin-task-policy").policy()["Statement"]
    assert sorted(task["Action"]) == ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]
    assert task["Resource"] == [app_secret(stack)]


def test_the_service_starts_only_after_the_admin_step_succeeded(stack):
    run = stack.one(RUN)
    assert run.urn in stack.one("aws:ecs/service:Service").dependencies
    i = run.inputs
    assert i["task_definition"] == stack.named(ADMIN_TASK).outputs["arn"]
    assert i["cluster"] == stack.one("aws:ecs/cluster:Cluster").outputs["arn"]
    assert i["subnets"] == stack.one("aws:ecs/service:Service").inputs["networkConfiguration"]["subnets"]
    assert i["security_groups"] == [stack.named("mlflow-service-sg").id]  # the one the database admits
    assert (i["container_name"], i["log_stream_prefix"]) == ("mlflow-admin", "admin")
    assert i["log_group"] == stack.one("aws:cloudwatch/logGroup:LogGroup").outputs["name"]
    assert i["timeout_seconds"] == 1200
    # the writer must accept connections, and the roles' policies exist before ECS assumes the roles
    needed = {stack.named(n).urn for n in ("mlflow-database-writer", "mlflow-service-dbadmin-exec-policy",
                                            "mlflow-service-dbadmin-task-policy")}
    assert needed <= set(run.dependencies)


def test_both_containers_verify_the_database_certificate(stack):
    for task in (SERVER_TASK, ADMIN_TASK):
        assert env(container(stack, task))["MLFLOW_DB_TLS_CA"] == TLS_CA


def test_no_database_password_is_in_the_state(stack):
    cluster = stack.one(CLUSTER).inputs
    assert cluster["manageMasterUserPassword"] is True and "masterPassword" not in cluster
    # MLflow's own admin user and the Flask key only (registration order varies: compare as a set)
    assert sorted(x.name for x in stack.of_type("random:index/randomPassword:RandomPassword")) == [
        "mlflow-service-admin-password", "mlflow-service-flask-key"]
    versions = {x.inputs["secretId"] for x in stack.of_type("aws:secretsmanager/secretVersion:SecretVersion")}
    assert stack.named("mlflow-database-app-credentials").id not in versions


@pytest.mark.parametrize("engine,parameter,value", [("mysql", "require_secure_transport", "ON"),
                                                    ("postgresql", "rds.force_ssl", "1")])
def test_the_cluster_requires_tls_with_the_resolved_versions_family(engine, parameter, value, dev):
    r = dev if engine == "mysql" else run_program("dev", dbEngine="postgresql")
    (call,) = [a for t, a in r.recorder.calls if t == "aws:rds/getEngineVersion:getEngineVersion"]
    group = r.one(PARAMS)
    assert group.inputs["family"] == stand_ins.engine_version(call)["parameterGroupFamily"]
    assert [(p["name"], p["value"]) for p in group.inputs["parameters"]] == [(parameter, value)]
    assert r.one(CLUSTER).inputs["dbClusterParameterGroupName"] == group.outputs["name"]
