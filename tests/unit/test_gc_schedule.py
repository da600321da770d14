"""The scheduled gc (components/gc_schedule.py) under the unit tests' mocks: present only when
``gcOlderThanDays`` > 0, its task definition and container, its three roles' exact policies, and the
EventBridge Scheduler schedule's ECS target.

References: EventBridge Scheduler User Guide, "Schedule types" (cron: six fields, ``?`` in one day
field; rate: positive value, minute(s)/hour(s)/day(s)) and "Set up the execution role" (the
schedule's role trusts scheduler.amazonaws.com; a templated ECS target needs ``ecs:RunTask`` on the
task definition and ``iam:PassRole`` on its roles); Service Authorization Reference for Amazon ECS
(``ecs:cluster`` condition key of RunTask) and IAM (``iam:PassedToService``); Amazon S3 API
Reference, DeleteObjects ("you must have s3:DeleteObject permission") and ListObjectsV2
(``s3:ListBucket``, ``s3:prefix`` in the request context).
"""

from __future__ import annotations

import pytest

import config
from components.gc_schedule import DEFAULT_SCHEDULE, FLEXIBLE_WINDOW_MINUTES, check_schedule
from tests.unit.conftest import run_program
from tests.unit.harness import ACCOUNT, is_secret
from tests.unit.test_contract import contract_rows

GC_TASK = "mlflow-service-gc-task"
SCHEDULE = "aws:scheduler/schedule:Schedule"


@pytest.fixture(scope="module")
def on():
    return run_program("dev", gcOlderThanDays="7", gcSchedule="rate(12 hours)")


def _container(run):
    (c,) = run.named(GC_TASK).container_definitions()
    return c


def _statements(run, name):
    return run.named(name).policy()["Statement"]


def test_off_by_default_in_dev_and_on_in_prod(dev, prod):
    assert config.load_settings({"allowedCidrs": "10.0.0.0/8"}).gc_older_than_days == 0
    for r in (dev,):
        assert not r.of_type(SCHEDULE)
        assert not [x for x in r.resources if "-gc-" in x.name]
    assert prod.one(SCHEDULE).inputs["scheduleExpression"] == DEFAULT_SCHEDULE
    assert {e["name"]: e["value"] for e in _container(prod)["environment"]}["MLFLOW_GC_OLDER_THAN_DAYS"] == "30"


def test_container_runs_gc_with_the_servers_image_hardened(on):
    c = _container(on)
    server = on.named("mlflow-service-task").container_definitions()[0]
    assert c["command"] == ["gc"] and c["image"] == server["image"]
    assert "portMappings" not in c and "healthCheck" not in c
    assert c["readonlyRootFilesystem"] is True
    assert c["linuxParameters"]["capabilities"] == {"drop": ["ALL"]}
    assert c["mountPoints"] == server["mountPoints"]
    logs = c["logConfiguration"]["options"]
    assert logs["awslogs-stream-prefix"] == "gc"
    assert logs["awslogs-group"] == server["logConfiguration"]["options"]["awslogs-group"]
    t = on.named(GC_TASK).inputs
    assert (t["cpu"], t["memory"], t["requiresCompatibilities"], t["networkMode"]) == ("512", "1024", ["FARGATE"],
                                                                                       "awsvpc")
    assert t["family"].endswith("-mlflow-service-gc")
    assert t["volumes"] == on.named("mlflow-service-task").inputs["volumes"]


def test_environment_and_secrets_follow_the_contract(on):
    rows = contract_rows()
    c = _container(on)
    env = {e["name"]: e["value"] for e in c["environment"]}
    assert set(env) == {k for k, v in rows.items() if "gc task `environment`" in v}
    assert {s["name"] for s in c["secrets"]} == {k for k, v in rows.items() if "gc task Secret" in v} == {
        "MLFLOW_DB_PASSWORD"}
    server = {e["name"]: e["value"] for e in on.named("mlflow-service-task").container_definitions()[0]["environment"]}
    for name in set(env) - {"MLFLOW_GC_OLDER_THAN_DAYS"}:
        assert env[name] == server[name], name
    assert env["MLFLOW_GC_OLDER_THAN_DAYS"] == "7"
    server_secret = next(s for s in on.named("mlflow-service-task").container_definitions()[0]["secrets"]
                         if s["name"] == "MLFLOW_DB_PASSWORD")
    assert c["secrets"] == [server_secret]
    raw = on.named(GC_TASK).raw_inputs["containerDefinitions"]
    assert not is_secret(raw)
    for value in on.secret_values():
        assert value not in str(c)


def test_task_role_may_only_list_and_delete_under_the_prefix(on):
    bucket = on.one("aws:s3/bucket:Bucket").outputs["arn"]
    prefix = {e["name"]: e["value"] for e in _container(on)["environment"]}["MLFLOW_ARTIFACTS_DESTINATION"].split("/", 3)[3]
    assert _statements(on, "mlflow-service-gc-task-policy") == [
        {"Sid": "ListArtifactPrefix", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": [bucket],
         "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*"]}}},
        {"Sid": "DeleteArtifacts", "Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": [f"{bucket}/{prefix}/*"]},
    ]
    role = on.named("mlflow-service-gc-task-role")
    assert on.named(GC_TASK).inputs["taskRoleArn"] == role.outputs["arn"]


def test_execution_role_reads_only_the_application_users_secret(on):
    statements = _statements(on, "mlflow-service-gc-exec-policy")
    reads = [s for s in statements if "secretsmanager:GetSecretValue" in s["Action"]]
    app_secret = _container(on)["secrets"][0]["valueFrom"].rsplit(":password::", 1)[0]
    assert reads == [{"Sid": "ReadAppUserSecret", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
                      "Resource": [app_secret]}]
    assert {a for s in statements for a in s["Action"]} == {
        "secretsmanager:GetSecretValue", "logs:CreateLogStream", "logs:PutLogEvents", "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"}
    exec_role = on.named("mlflow-service-gc-exec-role")
    assert on.named(GC_TASK).inputs["executionRoleArn"] == exec_role.outputs["arn"]
    for name in ("mlflow-service-gc-exec-role", "mlflow-service-gc-task-role"):
        trust = on.named(name).policy("assumeRolePolicy")["Statement"]
        assert trust == [{"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                          "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}}]


def test_schedule_runs_the_task_privately_on_the_services_cluster(on):
    s = on.one(SCHEDULE).inputs
    assert s["scheduleExpression"] == "rate(12 hours)" and s["scheduleExpressionTimezone"] == "UTC"
    assert s["state"] == "ENABLED"
    assert s["flexibleTimeWindow"] == {"mode": "FLEXIBLE", "maximumWindowInMinutes": FLEXIBLE_WINDOW_MINUTES}
    target = s["target"]
    cluster = on.named("mlflow-service-cluster").outputs["arn"]
    service = on.named("mlflow-service-service").inputs
    assert target["arn"] == cluster
    assert target["roleArn"] == on.named("mlflow-service-gc-scheduler-role").outputs["arn"]
    ecs = target["ecsParameters"]
    assert ecs["taskDefinitionArn"] == on.named(GC_TASK).outputs["arn"]
    assert (ecs["launchType"], ecs["taskCount"]) == ("FARGATE", 1)
    net = ecs["networkConfiguration"]
    assert net["subnets"] == service["networkConfiguration"]["subnets"]
    assert net["securityGroups"] == service["networkConfiguration"]["securityGroups"]
    assert net["assignPublicIp"] == service["networkConfiguration"]["assignPublicIp"]  # dev: public tasks
    assert target["retryPolicy"] == {"maximumRetryAttempts": 3, "maximumEventAgeInSeconds": 3600}
    deps = on.one(SCHEDULE).dependencies
    for name in ("mlflow-service-gc-task-policy", "mlflow-service-gc-exec-policy", "mlflow-service-gc-scheduler-policy"):
        assert on.named(name).urn in deps, name
    # a new image's gc is scheduled only once the admin step put its schemas in place
    assert on.one("pulumi-python:dynamic/mlflowtracking:DatabaseAdminRun").urn in deps


def test_scheduler_role_may_only_run_this_task_and_pass_its_roles(on):
    trust = on.named("mlflow-service-gc-scheduler-role").policy("assumeRolePolicy")["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"},
                      "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"aws:SourceAccount": ACCOUNT}}}]
    cluster = on.named("mlflow-service-cluster").outputs["arn"]
    family = on.named(GC_TASK).inputs["family"]
    region_account = ":".join(cluster.split(":")[:5])
    assert _statements(on, "mlflow-service-gc-scheduler-policy") == [
        {"Sid": "RunGcTask", "Effect": "Allow", "Action": ["ecs:RunTask"],
         "Resource": [f"{region_account}:task-definition/{family}:*"],
         "Condition": {"ArnEquals": {"ecs:cluster": cluster}}},
        {"Sid": "PassGcRoles", "Effect": "Allow", "Action": ["iam:PassRole"],
         "Resource": [on.named("mlflow-service-gc-exec-role").outputs["arn"],
                      on.named("mlflow-service-gc-task-role").outputs["arn"]],
         "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}},
    ]
    assert region_account.startswith("arn:aws:ecs:") and region_account.endswith(f":{ACCOUNT}")


@pytest.mark.parametrize("expression", ["cron(0 3 * * ? *)", "cron(15 2 ? * MON-FRI *)", "rate(1 day)",
                                        "rate(6 hours)", "rate(90 minutes)", "cron(0 */6 * * ? *)"])
def test_recurring_expressions_are_accepted(expression):
    assert check_schedule(expression) == expression


@pytest.mark.parametrize("expression", ["cron(0 3 * * *)", "cron(0 3 * * * *)", "at(2030-01-01T03:00:00)",
                                        "rate(30 minutes)", "rate(1 days)", "rate(2 day)", "rate(0 hours)",
                                        "daily", "0 3 * * *"])
def test_bad_expressions_stop_the_preview_with_one_line(expression):
    with pytest.raises(config.SettingsError) as err:
        config.load_settings({"allowedCidrs": "10.0.0.0/8", "gcSchedule": expression, "gcOlderThanDays": "7"})
    text = str(err.value)
    assert "\n" not in text and f"{config.NAMESPACE}:gcSchedule" in text and "cron(0 3 * * ? *)" in text


@pytest.mark.parametrize("value", ["-1", "36501", "thirty", "1.5"])
def test_bad_ages_stop_the_preview_with_one_line(value):
    with pytest.raises(config.SettingsError) as err:
        config.load_settings({"allowedCidrs": "10.0.0.0/8", "gcOlderThanDays": value})
    assert "\n" not in str(err.value) and f"{config.NAMESPACE}:gcOlderThanDays" in str(err.value)
