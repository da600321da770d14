"""Monitoring: the stack's alarms, their SNS topic, a dashboard, the load balancer's access logs
and an optional WAF rate limit (docs/operations.md says what each alarm means and what to do).

Two components, both children of ``MlflowTrackingServer``:

- :class:`AlbAccessLogs` (:mod:`components.access_logs`, re-exported here): prod's access-log bucket.
- :class:`Monitoring` (created after the service):

  * one SNS topic, encrypted with a customer managed KMS key whose policy lets CloudWatch and
    EventBridge use it: neither can publish to a topic encrypted with the AWS managed key
    ``alias/aws/sns``, whose policy cannot be changed (SNS Developer Guide, "Encryption at rest",
    compatibility with event sources from AWS services). The topic policy admits CloudWatch alarms
    of this account and the deployment rule below. Optional e-mail subscription.
  * alarms, every one with alarm and OK actions to the topic:
    load balancer 5xx rate and target 5xx rate (metric math over ``RequestCount``), unhealthy
    targets, running tasks below desired (Container Insights ``RunningTaskCount`` vs
    ``DesiredTaskCount``; without Container Insights the target group's ``HealthyHostCount``
    below the service's minimum, and then not with a ``schedule``, whose evenings have no
    target), service CPU and memory (``AWS/ECS``), spool use (Container Insights
    ``EphemeralStorageUtilized`` / ``EphemeralStorageReserved`` of the service, aggregated over its
    tasks, Fargate platform 1.4.0+; only with Container Insights), Aurora ``ACUUtilization`` and ``DatabaseConnections`` of the
    writer against the connection limit :mod:`components.sizing` estimates.
  * an EventBridge rule sending this service's ``SERVICE_DEPLOYMENT_FAILED`` events ("ECS
    Deployment State Change") to the topic.
  * a CloudWatch dashboard with the same metrics.
  * with ``waf_rate_limit``: a WAFv2 REGIONAL web ACL with one rate-based rule (requests per
    5 minutes per client IP, the rest allowed) associated with the load balancer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import pulumi
import pulumi_aws as aws

from components.access_logs import (ELB_ACCOUNTS, ELB_LOG_DELIVERY_SERVICE, AlbAccessLogs,  # noqa: F401
                                    AlbAccessLogsArgs, elb_log_principal, partition_of)
from components.work_hours import WorkHours

# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmThresholds:
    """The ``alarms`` setting: percentages at which each alarm fires."""

    http5xx_percent: float = 5
    """Load balancer or target 5xx responses, percent of requests over 5 minutes (2 of 3 periods)."""
    cpu_percent: float = 85
    """Service average CPU (``AWS/ECS CPUUtilization``) for 15 minutes."""
    memory_percent: float = 85
    """Service average memory (``AWS/ECS MemoryUtilization``) for 15 minutes."""
    spool_percent: float = 80
    """The service's ephemeral storage (the spool) used, as Container Insights aggregates it over the
    service's tasks, 10 minutes."""
    acu_percent: float = 90
    """Writer's ``ACUUtilization`` (capacity as a percentage of dbMaxAcu) for 15 minutes."""
    connections_percent: float = 90
    """Writer's connections as a percentage of Aurora's estimated ``max_connections``, 10 minutes."""


ALARM_KEYS: dict[str, str] = {
    "http5xxPercent": "http5xx_percent", "cpuPercent": "cpu_percent", "memoryPercent": "memory_percent",
    "spoolPercent": "spool_percent", "acuPercent": "acu_percent", "connectionsPercent": "connections_percent",
}
"""Keys of the ``alarms`` setting -> :class:`AlarmThresholds` fields."""
assert set(ALARM_KEYS.values()) == {f.name for f in fields(AlarmThresholds)}

WAF_RATE_LIMIT_RANGE = (10, 2_000_000_000)
"""AWS WAF rate-based rule limit per evaluation window: at least 10 (WAF Developer Guide, "Rate-based
rule high-level settings"), at most 2,000,000,000 (WAFV2 API, RateBasedStatement ``Limit``)."""
WAF_WINDOW_SECONDS = 300
MIN_5XX_COUNT = 10
"""5xx responses a five-minute period needs before the 5xx alarms look at their rate: a few errors
among a handful of requests (or a scanner hitting a stopped service, see ``schedule``) are not an
outage."""

# --------------------------------------------------------------------------------------------
# Alarms, topic, dashboard, WAF
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MonitoringArgs:
    region: str
    account_id: str
    load_balancer_arn: pulumi.Input[str]
    load_balancer_arn_suffix: pulumi.Input[str]
    """``app/<name>/<id>``: the ``LoadBalancer`` dimension."""
    target_group_arn_suffix: pulumi.Input[str]
    """``targetgroup/<name>/<id>``: the ``TargetGroup`` dimension."""
    cluster_name: pulumi.Input[str]
    service_name: pulumi.Input[str]
    service_arn: pulumi.Input[str]
    db_cluster_identifier: pulumi.Input[str]
    db_connection_limit: int
    """Aurora's estimated ``max_connections`` at dbMaxAcu (:func:`components.sizing.aurora_connection_limit`)."""
    container_insights: bool
    min_tasks: int
    work_hours: Optional[WorkHours] = None
    """The ``schedule``: outside it the service has no task on purpose (no ECS metrics, no target,
    the load balancer answers 503), which the task-count alarms must not take for a failure."""
    thresholds: AlarmThresholds = AlarmThresholds()
    alarm_email: Optional[str] = None
    waf_rate_limit: int = 0
    """Requests per 5 minutes per client IP; 0 = no web ACL."""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(AlarmThresholds):
            value = getattr(self.thresholds, f.name)
            if not 0 < value <= 100:
                raise ValueError(f"thresholds.{f.name}: above 0, at most 100, got {value!r}")
        if self.waf_rate_limit and not WAF_RATE_LIMIT_RANGE[0] <= self.waf_rate_limit <= WAF_RATE_LIMIT_RANGE[1]:
            raise ValueError(f"waf_rate_limit: 0 or {WAF_RATE_LIMIT_RANGE[0]} to {WAF_RATE_LIMIT_RANGE[1]}, "
                             f"got {self.waf_rate_limit!r}")
        if self.db_connection_limit < 1:
            raise ValueError(f"db_connection_limit: at least 1, got {self.db_connection_limit!r}")

    @property
    def connections_threshold(self) -> int:
        return max(1, math.ceil(self.db_connection_limit * self.thresholds.connections_percent / 100))


ALB, ECS, INSIGHTS, RDS = "AWS/ApplicationELB", "AWS/ECS", "ECS/ContainerInsights", "AWS/RDS"


def _metric(qid: str, namespace: str, name: str, dims: dict[str, Any], stat: str, period: int) -> dict[str, Any]:
    return {"id": qid, "return_data": False,
            "metric": {"namespace": namespace, "metric_name": name, "dimensions": dims, "stat": stat, "period": period}}


def _expression(qid: str, expression: str, label: str) -> dict[str, Any]:
    return {"id": qid, "expression": expression, "label": label, "return_data": True}


class Monitoring(pulumi.ComponentResource):
    topic_arn: pulumi.Output[str]
    alarm_names: dict[str, pulumi.Output[str]]
    """Alarm key (``alb-5xx``, ``cpu``, ...) -> alarm name."""
    dashboard_name: pulumi.Output[str]
    web_acl_arn: Optional[pulumi.Output[str]]

    def __init__(self, name: str, args: MonitoringArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        t = args.thresholds
        root = f"arn:{partition_of(args.region)}:iam::{args.account_id}:root"

        # --- the topic -----------------------------------------------------------------------
        key = aws.kms.Key(
            f"{name}-topic-key", description="MLflow alarms topic (CloudWatch and EventBridge publish)",
            enable_key_rotation=True, deletion_window_in_days=7, tags=tags,
            policy=pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": [
                {"Sid": "AccountAdministers", "Effect": "Allow",
                 "Principal": {"AWS": root}, "Action": "kms:*", "Resource": "*"},
                {"Sid": "AlarmAndEventPublishers", "Effect": "Allow",
                 "Principal": {"Service": ["cloudwatch.amazonaws.com", "events.amazonaws.com"]},
                 "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Resource": "*"},
            ]}), opts=child)
        topic = aws.sns.Topic(f"{name}-alarms", kms_master_key_id=key.arn, tags=tags, opts=child)
        rule = aws.cloudwatch.EventRule(
            f"{name}-deploy-failed", description="ECS deployment of the MLflow service failed",
            event_pattern=pulumi.Output.json_dumps({
                "source": ["aws.ecs"], "detail-type": ["ECS Deployment State Change"],
                "resources": [args.service_arn], "detail": {"eventName": ["SERVICE_DEPLOYMENT_FAILED"]}}),
            tags=tags, opts=child)
        topic_policy = aws.sns.TopicPolicy(f"{name}-alarms-policy", arn=topic.arn, policy=pulumi.Output.json_dumps({
            "Version": "2012-10-17", "Statement": [
                {"Sid": "AccountOwns", "Effect": "Allow", "Principal": {"AWS": root},
                 "Action": ["sns:GetTopicAttributes", "sns:SetTopicAttributes", "sns:AddPermission",
                            "sns:RemovePermission", "sns:DeleteTopic", "sns:Subscribe", "sns:ListSubscriptionsByTopic",
                            "sns:Publish"], "Resource": topic.arn},
                {"Sid": "CloudWatchAlarms", "Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
                 "Action": "sns:Publish", "Resource": topic.arn,
                 "Condition": {"ArnLike": {"aws:SourceArn": f"arn:{partition_of(args.region)}:cloudwatch:{args.region}:{args.account_id}:alarm:*"},
                               "StringEquals": {"aws:SourceAccount": args.account_id}}},
                {"Sid": "DeploymentFailedRule", "Effect": "Allow", "Principal": {"Service": "events.amazonaws.com"},
                 "Action": "sns:Publish", "Resource": topic.arn, "Condition": {"ArnEquals": {"aws:SourceArn": rule.arn}}},
            ]}), opts=child)
        aws.cloudwatch.EventTarget(f"{name}-deploy-failed-target", rule=rule.name, arn=topic.arn,
                                   opts=pulumi.ResourceOptions(parent=self, depends_on=[topic_policy]))
        if args.alarm_email:
            aws.sns.TopicSubscription(f"{name}-alarms-email", topic=topic.arn, protocol="email",
                                      endpoint=args.alarm_email, opts=child)

        # --- the alarms ----------------------------------------------------------------------
        lb = {"LoadBalancer": args.load_balancer_arn_suffix}
        tg = {"TargetGroup": args.target_group_arn_suffix, "LoadBalancer": args.load_balancer_arn_suffix}
        svc = {"ClusterName": args.cluster_name, "ServiceName": args.service_name}
        writer = {"DBClusterIdentifier": args.db_cluster_identifier, "Role": "WRITER"}
        actions = [topic.arn]
        self.alarm_names = {}

        def alarm(key_: str, description: str, *, threshold: float, comparison: str, periods: int,
                  datapoints: Optional[int] = None, missing: str = "notBreaching", **metric: Any) -> None:
            a = aws.cloudwatch.MetricAlarm(
                f"{name}-{key_}", alarm_description=description, comparison_operator=comparison,
                threshold=threshold, evaluation_periods=periods, datapoints_to_alarm=datapoints or periods,
                treat_missing_data=missing, alarm_actions=actions, ok_actions=actions, tags=tags, **metric,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[topic_policy]))
            self.alarm_names[key_] = a.name

        def rate(code_metric: str, dims: dict[str, Any]) -> list[dict[str, Any]]:
            # Percent of requests, once a period has MIN_5XX_COUNT 5xx; 0 below. RequestCount leaves out
            # requests for which no target was chosen (the ELB's 503 with no registered target), so the
            # denominator is the larger of requests and errors: a period of such 503s alone is 100 %.
            e, r = "FILL(errors, 0)", "FILL(requests, 0)"
            return [
                _metric("errors", ALB, code_metric, dims, "Sum", 300),
                _metric("requests", ALB, "RequestCount", lb, "Sum", 300),
                _expression("rate", f"IF({e} >= {MIN_5XX_COUNT}, 100 * {e} / IF({r} > {e}, {r}, {e}), 0)",
                            f"{code_metric} % of RequestCount (from {MIN_5XX_COUNT} per 5 minutes)"),
            ]

        gt, ge, lt = "GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold"
        alarm("alb-5xx", f"Load balancer 5xx responses above {t.http5xx_percent:g}% of requests",
              threshold=t.http5xx_percent, comparison=gt, periods=3, datapoints=2,
              metric_queries=rate("HTTPCode_ELB_5XX_Count", lb))
        alarm("target-5xx", f"MLflow (target) 5xx responses above {t.http5xx_percent:g}% of requests",
              threshold=t.http5xx_percent, comparison=gt, periods=3, datapoints=2,
              metric_queries=rate("HTTPCode_Target_5XX_Count", tg))
        alarm("unhealthy-hosts", "A target of the MLflow target group failed its health checks for 5 minutes",
              threshold=0, comparison=gt, periods=5, namespace=ALB, metric_name="UnHealthyHostCount",
              dimensions=tg, statistic="Maximum", period=60)
        # ECS (and Container Insights) send no metric for a service with no RUNNING task (ECS Developer
        # Guide, "Amazon ECS CloudWatch metrics"; "Container Insights"): always on, no data is the
        # failure; with a schedule it is the evening, so no data is not.
        no_task = "notBreaching" if args.work_hours else "breaching"
        if args.container_insights:
            alarm("tasks-below-desired", "Fewer MLflow tasks running than desired for 20 minutes",
                  threshold=0, comparison=gt, periods=4, missing=no_task, metric_queries=[
                      _metric("running", INSIGHTS, "RunningTaskCount", svc, "Average", 300),
                      _metric("desired", INSIGHTS, "DesiredTaskCount", svc, "Average", 300),
                      _expression("missing", "FILL(desired, 0) - FILL(running, 0)", "desired - running tasks")])
            # Service-level Container Insights values are CloudWatch's aggregates over the service's
            # tasks, not one task's: with several tasks, one full spool shows diluted (per task needs
            # enhanced observability's TaskId dimension).
            alarm("spool", f"The service's ephemeral storage (the artifact spool, aggregated over its tasks) "
                           f"above {t.spool_percent:g}%",
                  threshold=t.spool_percent, comparison=gt, periods=2, metric_queries=[
                      _metric("used", INSIGHTS, "EphemeralStorageUtilized", svc, "Maximum", 300),
                      _metric("reserved", INSIGHTS, "EphemeralStorageReserved", svc, "Maximum", 300),
                      _expression("spool", "100 * used / reserved", "ephemeral storage used %")])
        elif args.min_tasks > 0 and args.work_hours is None:
            # Without Container Insights nothing says how many tasks are wanted; with a schedule
            # HealthyHostCount is 0 every evening by design, so there is no such alarm then.
            alarm("tasks-below-desired", f"Fewer than {args.min_tasks} healthy MLflow targets for 20 minutes",
                  threshold=args.min_tasks, comparison=lt, periods=4, missing="breaching", namespace=ALB,
                  metric_name="HealthyHostCount", dimensions=tg, statistic="Minimum", period=300)
        alarm("cpu", f"MLflow service CPU above {t.cpu_percent:g}% for 15 minutes", threshold=t.cpu_percent,
              comparison=gt, periods=3, namespace=ECS, metric_name="CPUUtilization", dimensions=svc,
              statistic="Average", period=300)
        alarm("memory", f"MLflow service memory above {t.memory_percent:g}% for 15 minutes",
              threshold=t.memory_percent, comparison=gt, periods=3, namespace=ECS, metric_name="MemoryUtilization",
              dimensions=svc, statistic="Average", period=300)
        alarm("db-acu", f"Aurora writer above {t.acu_percent:g}% of dbMaxAcu for 15 minutes",
              threshold=t.acu_percent, comparison=gt, periods=3, namespace=RDS, metric_name="ACUUtilization",
              dimensions=writer, statistic="Average", period=300)
        alarm("db-connections", f"Aurora writer connections at {t.connections_percent:g}% of its estimated "
                                f"max_connections ({args.connections_threshold} of {args.db_connection_limit})",
              threshold=args.connections_threshold, comparison=ge, periods=2, namespace=RDS,
              metric_name="DatabaseConnections", dimensions=writer, statistic="Maximum", period=300)

        # --- the dashboard -------------------------------------------------------------------
        region = args.region

        def graph(title: str, metrics: list, y_max: Optional[float] = None, x: int = 0, y: int = 0,
                  annotations: Optional[list] = None) -> dict[str, Any]:
            props: dict[str, Any] = {"title": title, "region": region, "view": "timeSeries", "stacked": False,
                                     "period": 300, "metrics": metrics}
            if y_max is not None:
                props["yAxis"] = {"left": {"min": 0, "max": y_max}}
            if annotations:
                props["annotations"] = {"horizontal": annotations}
            return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6, "properties": props}

        def line(value: float, label: str) -> dict[str, Any]:
            return {"value": value, "label": label}

        alb_sfx, tg_sfx = args.load_balancer_arn_suffix, args.target_group_arn_suffix
        cl, sv, dbc = args.cluster_name, args.service_name, args.db_cluster_identifier
        widgets = [
            graph("Requests and 5xx", [
                [ALB, "RequestCount", "LoadBalancer", alb_sfx, {"stat": "Sum", "id": "req"}],
                [ALB, "HTTPCode_ELB_5XX_Count", "LoadBalancer", alb_sfx, {"stat": "Sum", "id": "elb5xx"}],
                [ALB, "HTTPCode_Target_5XX_Count", "TargetGroup", tg_sfx, "LoadBalancer", alb_sfx,
                 {"stat": "Sum", "id": "t5xx"}]], x=0, y=0),
            graph("Targets", [
                [ALB, "HealthyHostCount", "TargetGroup", tg_sfx, "LoadBalancer", alb_sfx, {"stat": "Minimum"}],
                [ALB, "UnHealthyHostCount", "TargetGroup", tg_sfx, "LoadBalancer", alb_sfx, {"stat": "Maximum"}],
                [ALB, "TargetResponseTime", "TargetGroup", tg_sfx, "LoadBalancer", alb_sfx,
                 {"stat": "p95", "yAxis": "right"}]], x=12, y=0),
            graph("Service CPU and memory (%)", [
                [ECS, "CPUUtilization", "ClusterName", cl, "ServiceName", sv, {"stat": "Average"}],
                [ECS, "MemoryUtilization", "ClusterName", cl, "ServiceName", sv, {"stat": "Average"}]],
                y_max=100, x=0, y=6, annotations=[line(t.cpu_percent, "cpu alarm"), line(t.memory_percent, "memory alarm")]),
            graph("Aurora writer", [
                [RDS, "ACUUtilization", "DBClusterIdentifier", dbc, "Role", "WRITER", {"stat": "Average"}],
                [RDS, "DatabaseConnections", "DBClusterIdentifier", dbc, "Role", "WRITER",
                 {"stat": "Maximum", "yAxis": "right"}]], x=12, y=6,
                annotations=[line(t.acu_percent, "ACU alarm (%)")]),
        ]
        if args.container_insights:
            widgets.append(graph("Tasks", [
                [INSIGHTS, "DesiredTaskCount", "ClusterName", cl, "ServiceName", sv, {"stat": "Average"}],
                [INSIGHTS, "RunningTaskCount", "ClusterName", cl, "ServiceName", sv, {"stat": "Average"}]], x=0, y=12))
            widgets.append(graph("Spool: ephemeral storage used, service aggregate (%)", [
                [{"expression": "100 * used / reserved", "label": "used %", "id": "spool"}],
                [INSIGHTS, "EphemeralStorageUtilized", "ClusterName", cl, "ServiceName", sv,
                 {"stat": "Maximum", "id": "used", "visible": False}],
                [INSIGHTS, "EphemeralStorageReserved", "ClusterName", cl, "ServiceName", sv,
                 {"stat": "Maximum", "id": "reserved", "visible": False}]],
                y_max=100, x=12, y=12, annotations=[line(t.spool_percent, "spool alarm")]))
        dashboard_name = re.sub(r"[^A-Za-z0-9_-]", "-", f"{pulumi.get_project()}-{pulumi.get_stack()}-{name}")[:255]
        dashboard = aws.cloudwatch.Dashboard(f"{name}-dashboard", dashboard_name=dashboard_name,
                                             dashboard_body=pulumi.Output.json_dumps({"widgets": widgets}), opts=child)

        # --- WAF -------------------------------------------------------------------------------
        self.web_acl_arn = None
        if args.waf_rate_limit:
            visibility = {"cloudwatch_metrics_enabled": True, "sampled_requests_enabled": True}
            acl = aws.wafv2.WebAcl(
                f"{name}-waf", scope="REGIONAL", description="MLflow: per-IP rate limit (basic auth has no lockout)",
                default_action={"allow": {}},
                rules=[{"name": "rate-limit-per-ip", "priority": 0, "action": {"block": {}},
                        "statement": {"rate_based_statement": {"limit": args.waf_rate_limit, "aggregate_key_type": "IP",
                                                               "evaluation_window_sec": WAF_WINDOW_SECONDS}},
                        "visibility_config": {**visibility, "metric_name": "mlflow-rate-limit-per-ip"}}],
                visibility_config={**visibility, "metric_name": "mlflow-web-acl"}, tags=tags, opts=child)
            aws.wafv2.WebAclAssociation(f"{name}-waf-alb", resource_arn=args.load_balancer_arn,
                                        web_acl_arn=acl.arn, opts=child)
            self.web_acl_arn = acl.arn

        self.topic_arn = topic.arn
        self.dashboard_name = dashboard.dashboard_name
        self.register_outputs({"topicArn": self.topic_arn, "dashboardName": self.dashboard_name})
