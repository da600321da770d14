"""Monitoring (components/monitoring.py) in the whole program, per stack file: the alarms' metrics,
namespaces and dimensions (bound to the ALB, target group, ECS cluster and service and Aurora cluster
the program creates), thresholds, actions, the topic and its key, the deployment-failure rule, the
dashboard, the optional WAF, and settings that fail at preview (prod's access log bucket:
test_access_logs.py).

Documents the expectations come from:
- ELB User Guide, "CloudWatch metrics for your Application Load Balancer": ``AWS/ApplicationELB``,
  dimensions ``LoadBalancer`` (``app/<name>/<id>``) and ``TargetGroup`` (``targetgroup/<name>/<id>``),
  ``HTTPCode_ELB_5XX_Count``, ``HTTPCode_Target_5XX_Count``, ``RequestCount``, ``UnHealthyHostCount``.
- ECS Developer Guide, "Amazon ECS CloudWatch metrics": ``AWS/ECS`` ``CPUUtilization`` /
  ``MemoryUtilization`` by ``ClusterName`` + ``ServiceName``; "Fargate task ephemeral storage": usage
  and reserved size are sent to Container Insights (``ECS/ContainerInsights``
  ``EphemeralStorageUtilized`` / ``EphemeralStorageReserved``, platform 1.4.0+) when it is on.
- ECS Developer Guide, "Amazon ECS service deployment events": detail-type "ECS Deployment State
  Change", ``eventName`` ``SERVICE_DEPLOYMENT_FAILED``, the service ARN in ``resources``.
- SNS Developer Guide, "Encryption at rest" (compatibility with event sources from AWS services):
  CloudWatch and EventBridge need kms:Decrypt and kms:GenerateDataKey* on a customer managed key;
  the AWS managed key's policy cannot grant them.
- WAF Developer Guide, "Rate-based rule high-level settings": lowest limit 10, window 300 s default.
"""

from __future__ import annotations

import json
import math

import pytest

import config
from components.sizing import aurora_connection_limit
from tests.unit.conftest import PROD_OVERRIDES, run_program
from tests.unit.harness import ACCOUNT, REGION, Run, run, stack_config
from tests.unit.test_settings import settings_of

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
LB, TG = "aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup"
NS = config.NAMESPACE


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request, dev, prod) -> tuple[str, Run]:
    return request.param, {"dev": dev, "prod": prod}[request.param]


def settings(name: str, **overrides) -> config.Settings:
    return settings_of(name, **({**PROD_OVERRIDES, **overrides} if name == "prod" else overrides))


def alarms(r: Run) -> dict[str, dict]:
    prefix = "mlflow-monitoring-"
    return {a.name[len(prefix):]: a.inputs for a in r.of_type(ALARM)}


def ids(r: Run) -> dict[str, str]:
    """The real names the graph gave the ALB, target group, ECS cluster/service and Aurora cluster."""
    return {"lb": r.one(LB).outputs["arnSuffix"], "tg": r.one(TG).outputs["arnSuffix"],
            "cluster": r.one("aws:ecs/cluster:Cluster").outputs["name"],
            "service": r.one("aws:ecs/service:Service").outputs["name"],
            "service_arn": r.one("aws:ecs/service:Service").outputs["arn"],
            "db": r.one("aws:rds/cluster:Cluster").outputs["clusterIdentifier"]}


def queries(a: dict) -> dict[str, dict]:
    return {q["id"]: q for q in a["metricQueries"]}


def metric(q: dict) -> tuple[str, str, dict, str]:
    m = q["metric"]
    return m["namespace"], m["metricName"], m["dimensions"], m["stat"]


# --- both stacks ----------------------------------------------------------------------------------

def test_every_alarm_notifies_the_topic_on_alarm_and_ok(stack):
    _, r = stack
    topic = r.named("mlflow-monitoring-alarms").outputs["arn"]
    found = alarms(r)
    assert found
    for key, a in found.items():
        assert a["alarmActions"] == [topic] and a["okActions"] == [topic], key
        assert a["alarmDescription"], key


def test_the_alarm_set_depends_on_container_insights(stack):
    name, r = stack
    common = {"alb-5xx", "target-5xx", "unhealthy-hosts", "tasks-below-desired", "cpu", "memory", "db-acu",
              "db-connections"}
    assert set(alarms(r)) == (common | {"spool"} if name == "prod" else common)
    insights = r.one("aws:ecs/cluster:Cluster").inputs["settings"]
    assert insights == [{"name": "containerInsights", "value": "enabled" if name == "prod" else "disabled"}]


def test_5xx_alarms_are_rates_of_the_real_load_balancer_and_target_group(stack):
    name, r = stack
    i, a, t = ids(r), alarms(r), settings(name).alarm_thresholds
    lb, tg = {"LoadBalancer": i["lb"]}, {"TargetGroup": i["tg"], "LoadBalancer": i["lb"]}
    assert i["lb"].startswith("app/") and i["tg"].startswith("targetgroup/")
    for key, code, dims in (("alb-5xx", "HTTPCode_ELB_5XX_Count", lb), ("target-5xx", "HTTPCode_Target_5XX_Count", tg)):
        q = queries(a[key])
        assert metric(q["errors"]) == ("AWS/ApplicationELB", code, dims, "Sum")
        assert metric(q["requests"]) == ("AWS/ApplicationELB", "RequestCount", lb, "Sum")
        assert [k for k, v in q.items() if v["returnData"]] == ["rate"]
        # the rate's values: test_5xx_rate_needs_a_minimum_count_so_a_scanner_off_hours_does_not_alarm
        assert "100 * FILL(errors, 0) / IF(FILL(requests, 0) > FILL(errors, 0)" in q["rate"]["expression"]
        assert a[key]["threshold"] == t.http5xx_percent == 5
        assert a[key]["comparisonOperator"] == "GreaterThanThreshold"
    u = a["unhealthy-hosts"]
    assert (u["namespace"], u["metricName"], u["dimensions"], u["statistic"]) == (
        "AWS/ApplicationELB", "UnHealthyHostCount", tg, "Maximum")
    assert u["threshold"] == 0 and u["comparisonOperator"] == "GreaterThanThreshold"


def test_service_cpu_and_memory_alarms_use_the_real_cluster_and_service(stack):
    name, r = stack
    i, a, t = ids(r), alarms(r), settings(name).alarm_thresholds
    svc = {"ClusterName": i["cluster"], "ServiceName": i["service"]}
    for key, metric_name, threshold in (("cpu", "CPUUtilization", t.cpu_percent),
                                        ("memory", "MemoryUtilization", t.memory_percent)):
        x = a[key]
        assert (x["namespace"], x["metricName"], x["dimensions"], x["statistic"]) == ("AWS/ECS", metric_name, svc, "Average")
        assert x["threshold"] == threshold == 85


def test_tasks_below_desired(stack):
    name, r = stack
    i, x = ids(r), alarms(r)["tasks-below-desired"]
    svc = {"ClusterName": i["cluster"], "ServiceName": i["service"]}
    if name == "prod":  # Container Insights on: running vs desired, so autoscaling moves the bar
        q = queries(x)
        assert metric(q["running"]) == ("ECS/ContainerInsights", "RunningTaskCount", svc, "Average")
        assert metric(q["desired"]) == ("ECS/ContainerInsights", "DesiredTaskCount", svc, "Average")
        assert q["missing"]["expression"] == "FILL(desired, 0) - FILL(running, 0)"
        assert (x["threshold"], x["comparisonOperator"]) == (0, "GreaterThanThreshold")
    else:  # without it: healthy targets below the minimum the scaler keeps
        tg = {"TargetGroup": i["tg"], "LoadBalancer": i["lb"]}
        assert (x["namespace"], x["metricName"], x["dimensions"], x["statistic"]) == (
            "AWS/ApplicationELB", "HealthyHostCount", tg, "Minimum")
        assert (x["threshold"], x["comparisonOperator"]) == (settings(name).min_tasks, "LessThanThreshold")
    assert x["treatMissingData"] == "breaching"  # no task, no datapoint: that is the failure


def test_spool_alarm_uses_container_insights_ephemeral_storage_in_prod(prod):
    i, x = ids(prod), alarms(prod)["spool"]
    svc = {"ClusterName": i["cluster"], "ServiceName": i["service"]}
    q = queries(x)
    assert metric(q["used"]) == ("ECS/ContainerInsights", "EphemeralStorageUtilized", svc, "Maximum")
    assert metric(q["reserved"]) == ("ECS/ContainerInsights", "EphemeralStorageReserved", svc, "Maximum")
    assert q["spool"]["expression"] == "100 * used / reserved" and q["spool"]["returnData"] is True
    assert x["threshold"] == settings("prod").alarm_thresholds.spool_percent == 80


def test_aurora_alarms_watch_the_writer_of_the_real_cluster(stack):
    name, r = stack
    s, i, a = settings(name), ids(r), alarms(r)
    writer = {"DBClusterIdentifier": i["db"], "Role": "WRITER"}
    acu = a["db-acu"]
    assert (acu["namespace"], acu["metricName"], acu["dimensions"]) == ("AWS/RDS", "ACUUtilization", writer)
    assert acu["threshold"] == s.alarm_thresholds.acu_percent == 90
    conn = a["db-connections"]
    assert (conn["namespace"], conn["metricName"], conn["dimensions"], conn["statistic"]) == (
        "AWS/RDS", "DatabaseConnections", writer, "Maximum")
    limit = aurora_connection_limit(s.db_engine, s.db_min_acu, s.db_max_acu)
    assert conn["threshold"] == math.ceil(limit * 0.9)
    assert conn["comparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert f"of {limit})" in conn["alarmDescription"]


def test_topic_is_encrypted_with_a_key_cloudwatch_and_eventbridge_may_use(stack):
    _, r = stack
    topic, key = r.named("mlflow-monitoring-alarms"), r.named("mlflow-monitoring-topic-key")
    assert topic.inputs["kmsMasterKeyId"] == key.outputs["arn"] != "alias/aws/sns"
    assert key.inputs["enableKeyRotation"] is True
    by_sid = {s["Sid"]: s for s in key.policy()["Statement"]}
    assert by_sid["AccountAdministers"]["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}
    pub = by_sid["AlarmAndEventPublishers"]
    assert sorted(pub["Principal"]["Service"]) == ["cloudwatch.amazonaws.com", "events.amazonaws.com"]
    assert pub["Action"] == ["kms:Decrypt", "kms:GenerateDataKey*"]
    policy = r.named("mlflow-monitoring-alarms-policy")
    assert policy.inputs["arn"] == topic.outputs["arn"]
    stmts = {s["Sid"]: s for s in policy.policy()["Statement"]}
    assert all(s["Resource"] == topic.outputs["arn"] for s in stmts.values())
    cw = stmts["CloudWatchAlarms"]
    assert cw["Principal"] == {"Service": "cloudwatch.amazonaws.com"} and cw["Action"] == "sns:Publish"
    assert cw["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:*"
    ev = stmts["DeploymentFailedRule"]
    assert ev["Principal"] == {"Service": "events.amazonaws.com"}
    assert ev["Condition"] == {"ArnEquals": {"aws:SourceArn": r.named("mlflow-monitoring-deploy-failed").outputs["arn"]}}
    assert not r.of_type("aws:sns/topicSubscription:TopicSubscription")  # no alarmEmail in the stack files


def test_failed_deployments_of_this_service_go_to_the_topic(stack):
    _, r = stack
    rule = r.named("mlflow-monitoring-deploy-failed")
    pattern = json.loads(rule.inputs["eventPattern"])
    assert pattern == {"source": ["aws.ecs"], "detail-type": ["ECS Deployment State Change"],
                       "resources": [ids(r)["service_arn"]], "detail": {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]}}
    target = r.named("mlflow-monitoring-deploy-failed-target").inputs
    assert target["rule"] == rule.outputs["name"] and target["arn"] == r.named("mlflow-monitoring-alarms").outputs["arn"]


def test_dashboard_body_parses_and_graphs_the_real_metrics(stack):
    name, r = stack
    i = ids(r)
    d = r.one("aws:cloudwatch/dashboard:Dashboard").inputs
    assert d["dashboardName"] == f"mlflow-tracking-{name}-mlflow-monitoring"
    body = json.loads(d["dashboardBody"])
    series = [m for w in body["widgets"] for m in w["properties"]["metrics"]]
    assert all(w["properties"]["region"] == REGION for w in body["widgets"])
    plain = {(m[0], m[1]): m[2:-1] for m in series if isinstance(m[0], str)}
    assert plain[("AWS/ApplicationELB", "RequestCount")] == ["LoadBalancer", i["lb"]]
    assert plain[("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count")] == ["LoadBalancer", i["lb"]]
    assert plain[("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count")] == ["TargetGroup", i["tg"], "LoadBalancer", i["lb"]]
    assert plain[("AWS/ApplicationELB", "UnHealthyHostCount")] == ["TargetGroup", i["tg"], "LoadBalancer", i["lb"]]
    for m in ("CPUUtilization", "MemoryUtilization"):
        assert plain[("AWS/ECS", m)] == ["ClusterName", i["cluster"], "ServiceName", i["service"]]
    for m in ("ACUUtilization", "DatabaseConnections"):
        assert plain[("AWS/RDS", m)] == ["DBClusterIdentifier", i["db"], "Role", "WRITER"]
    insights = {k[1] for k in plain if k[0] == "ECS/ContainerInsights"}
    assert insights == ({"RunningTaskCount", "DesiredTaskCount", "EphemeralStorageUtilized", "EphemeralStorageReserved"}
                        if name == "prod" else set())


def test_no_waf_unless_set(stack):
    _, r = stack
    assert not r.of_type("aws:wafv2/webAcl:WebAcl") and not r.of_type("aws:wafv2/webAclAssociation:WebAclAssociation")


# --- settings ------------------------------------------------------------------------------------

def test_thresholds_email_and_waf_from_the_settings():
    r = run_program("dev", alarms={"cpuPercent": 70, "http5xxPercent": 2.5}, alarmEmail="ops@example.com",
                    wafRateLimit="1000")
    a = alarms(r)
    assert (a["cpu"]["threshold"], a["memory"]["threshold"]) == (70, 85)
    assert a["alb-5xx"]["threshold"] == a["target-5xx"]["threshold"] == 2.5
    (sub,) = r.of_type("aws:sns/topicSubscription:TopicSubscription")
    assert (sub.inputs["protocol"], sub.inputs["endpoint"]) == ("email", "ops@example.com")
    assert sub.inputs["topic"] == r.named("mlflow-monitoring-alarms").outputs["arn"]
    acl = r.one("aws:wafv2/webAcl:WebAcl").inputs
    assert acl["scope"] == "REGIONAL" and acl["defaultAction"] == {"allow": {}}
    (rule,) = acl["rules"]
    assert rule["action"] == {"block": {}}
    assert rule["statement"]["rateBasedStatement"] == {"limit": 1000, "aggregateKeyType": "IP",
                                                       "evaluationWindowSec": 300}
    assoc = r.one("aws:wafv2/webAclAssociation:WebAclAssociation").inputs
    assert assoc["resourceArn"] == r.one(LB).outputs["arn"]
    assert assoc["webAclArn"] == r.one("aws:wafv2/webAcl:WebAcl").outputs["arn"]


@pytest.mark.parametrize("key, value, allowed", [
    ("alarms", '{"cpuPercent": 150}', "cpuPercent = 150 is out of range"),
    ("alarms", '{"cpu": 80}', "'cpu' is not one of them"),
    ("alarms", "[80]", "an object with any of http5xxPercent"),
    ("alarms", '{"spoolPercent": 0}', "spoolPercent = 0 is out of range"),
    ("alarmEmail", "ops-at-example.com", "an e-mail address"),
    ("albAccessLogs", "yes", "true or false"),
    ("albAccessLogDays", "0", "from 1 to 3650"),
    ("wafRateLimit", "5", "0 (off) or an integer from 10 to 2000000000"),
    ("wafRateLimit", "-1", "0 (off) or an integer from 10"),
])
def test_bad_monitoring_settings_fail_at_preview_with_one_line(key, value, allowed):
    import program

    captured = {}

    def body():
        try:
            program.define_stack()
        except config.SettingsError as err:
            captured["err"] = err

    result = run(body, stack_config("dev", **{key: value}))
    message = str(captured["err"])
    assert "\n" not in message and message.startswith(f"invalid setting {NS}:{key} = ")
    assert allowed in message
    assert result.resources == []


# --- the working-hours schedule, the 5xx minimum, the partition ---------------------------------

WORK = {"days": "MON-FRI", "start": "08:00", "stop": "19:00", "timeZone": "Europe/Berlin"}


class _N(float):
    """A metric math value: dividing by zero gives no value (NaN) instead of raising, as CloudWatch
    evaluates IF element-wise and never uses the branch it did not pick."""

    def __truediv__(self, other):
        return _N(float("nan")) if float(other) == 0 else _N(float(self) / float(other))

    def __mul__(self, other):
        return _N(float(self) * float(other))

    __rmul__ = __mul__


def _evaluate(expression: str, errors: float, requests: float) -> float:
    """The alarm's metric math for one five-minute period (errors, requests: the two sums)."""
    def IF(cond, a, b):  # noqa: N802 (metric math's name)
        return a if cond else b

    def FILL(x, _value):  # noqa: N802
        return x

    return float(eval(expression, {"IF": IF, "FILL": FILL}, {"errors": _N(errors), "requests": _N(requests)}))


def test_5xx_rate_needs_a_minimum_count_so_a_scanner_off_hours_does_not_alarm(dev):
    """ELB User Guide, "CloudWatch metrics for your Application Load Balancer": RequestCount counts
    only requests for which a target was chosen, so the ELB's 503s with no registered target (a
    stopped service, outside the ``schedule``) come with no request counted."""
    from components import monitoring

    MIN_5XX_COUNT = getattr(monitoring, "MIN_5XX_COUNT", 10)  # noqa: N806
    a = alarms(dev)
    for key in ("alb-5xx", "target-5xx"):
        expr = queries(a[key])["rate"]["expression"]
        threshold = a[key]["threshold"]
        assert _evaluate(expr, errors=3, requests=0) <= threshold, "a few 503s off-hours are no outage"
        assert _evaluate(expr, errors=1, requests=2) <= threshold, "one error among two requests neither"
        assert _evaluate(expr, errors=MIN_5XX_COUNT, requests=0) == 100  # no target at all in working hours
        assert _evaluate(expr, errors=12, requests=100) == 12
        assert _evaluate(expr, errors=0, requests=0) == 0
        assert _evaluate(expr, errors=MIN_5XX_COUNT - 1, requests=MIN_5XX_COUNT) == 0


def test_with_a_schedule_no_alarm_takes_the_evening_for_a_failure():
    """Application Auto Scaling "Scheduled scaling": the stop action sets 0..0 and ECS stops every
    task; ECS Developer Guide, "Amazon ECS CloudWatch metrics" / "Container Insights": no metric is
    sent for a service with no RUNNING task. dev (no Container Insights) would see HealthyHostCount
    0 < minTasks every evening: no such alarm with a schedule; prod's running-vs-desired alarm takes
    no data as fine then (and still fires on desired > running in working hours)."""
    d = alarms(run_program("dev", schedule=WORK))
    assert "tasks-below-desired" not in d
    assert {"alb-5xx", "target-5xx", "unhealthy-hosts", "cpu", "memory"} <= set(d)
    p = alarms(run_program("prod", **PROD_OVERRIDES, schedule=WORK))["tasks-below-desired"]
    assert p["treatMissingData"] == "notBreaching"
    assert queries(p)["missing"]["expression"] == "FILL(desired, 0) - FILL(running, 0)"
    assert (p["threshold"], p["comparisonOperator"]) == (0, "GreaterThanThreshold")


def test_spool_alarm_does_not_claim_a_single_task(prod):
    """ECS Developer Guide, "Container Insights": CloudWatch turns the performance log events into
    aggregated metrics at cluster, service and task level; ClusterName + ServiceName is the
    service's aggregate, not its fullest task."""
    x = alarms(prod)["spool"]
    assert "aggregated over its tasks" in x["alarmDescription"] and "A task's" not in x["alarmDescription"]
    body = json.loads(prod.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
    titles = [w["properties"]["title"] for w in body["widgets"]]
    assert not any("fullest task" in t for t in titles)


def test_topic_and_key_policies_use_the_partition_of_the_region():
    """IAM User Guide, "IAM identifiers" (ARN format): China regions are partition aws-cn,
    GovCloud aws-us-gov; an arn:aws principal there names no account."""
    from components.monitoring import Monitoring, MonitoringArgs

    def body():
        Monitoring("m", MonitoringArgs(
            region="cn-north-1", account_id=ACCOUNT, load_balancer_arn="arn:aws-cn:elasticloadbalancing:x",
            load_balancer_arn_suffix="app/a/1", target_group_arn_suffix="targetgroup/t/1", cluster_name="c",
            service_name="s", service_arn="arn:aws-cn:ecs:cn-north-1:123456789012:service/c/s",
            db_cluster_identifier="db", db_connection_limit=90, container_insights=False, min_tasks=1))

    r = run(body)
    key = {s["Sid"]: s for s in r.named("m-topic-key").policy()["Statement"]}
    assert key["AccountAdministers"]["Principal"] == {"AWS": f"arn:aws-cn:iam::{ACCOUNT}:root"}
    topic = {s["Sid"]: s for s in r.named("m-alarms-policy").policy()["Statement"]}
    assert topic["AccountOwns"]["Principal"] == {"AWS": f"arn:aws-cn:iam::{ACCOUNT}:root"}
    assert topic["CloudWatchAlarms"]["Condition"]["ArnLike"]["aws:SourceArn"] == (
        f"arn:aws-cn:cloudwatch:cn-north-1:{ACCOUNT}:alarm:*")
