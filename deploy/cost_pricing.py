"""Pricing a resource graph: each priced resource type's monthly idle cost from the price table
(:mod:`deploy.cost_model`), the usage-dependent parts named separately, the assumptions said."""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Optional

from deploy.cost_model import (AWAKE_FLOOR_ACU, FALLBACK_REGION, FREE, GC_RUN_SECONDS, HOURS, WEEKS_PER_MONTH,
                               Estimate, Line, UnpricedType)


# --------------------------------------------------------------------------------------------
# Pricing
# --------------------------------------------------------------------------------------------

class _Ctx:
    def __init__(self, resources: list[Any], est: Estimate, table: dict[str, Any]) -> None:
        self.resources = [r for r in resources if r.custom]
        self.est = est
        self.table = table
        self.by_arn = {r.outputs.get("arn"): r for r in self.resources if r.outputs.get("arn")}

    def p(self, key: str) -> float:
        entry = self.table[key]
        if not str(entry.get("status", "")).startswith("confirmed"):
            self.est.unconfirmed.add(key)
        return float(entry["usd"])

    def add(self, monthly: float, what: str, detail: str) -> None:
        self.est.lines.append(Line(round(monthly, 2), what, detail))

    def of_type(self, t: str) -> list[Any]:
        return [r for r in self.resources if r.type == t]


def _cron_hours(start: dict[str, Any], stop: dict[str, Any]) -> Optional[tuple[float, int, str]]:
    """Hours a month between a start and a stop scheduled action of the form ``cron(M H ? * DAYS *)``
    (same days): (hours, stops a month, description), or None if not of that form."""
    def parse(expr: str):
        m = re.fullmatch(r"cron\((\d+) (\d+) \? \* (\S+) \*\)", expr or "")
        return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else None

    a, b = parse(start.get("schedule", "")), parse(stop.get("schedule", ""))
    if not a or not b or a[2] != b[2]:
        return None
    days = _days_in(a[2])
    if days is None:
        return None
    per_day = ((b[1] * 60 + b[0]) - (a[1] * 60 + a[0])) / 60.0
    if per_day <= 0:
        return None
    hours = days * per_day * WEEKS_PER_MONTH
    zone = start.get("timezone") or "UTC"
    return hours, round(days * WEEKS_PER_MONTH), f"{a[2]} {a[1]:02d}:{a[0]:02d}-{b[1]:02d}:{b[0]:02d} {zone}"


_DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")


def _days_in(expr: str) -> Optional[int]:
    days: set[int] = set()
    for part in expr.upper().split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            if lo not in _DAYS or hi not in _DAYS:
                return None
            i, j = _DAYS.index(lo), _DAYS.index(hi)
            days.update(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        elif part in _DAYS:
            days.add(_DAYS.index(part))
        elif part == "*":
            days.update(range(7))
        else:
            return None
    return len(days)


def _runs_per_month(expr: str) -> Optional[float]:
    """Runs a month of an EventBridge Scheduler expression: rate(N unit), or cron with '*' or a
    day-of-week list (approximate); None if not understood."""
    m = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expr or "")
    if m:
        per = {"minute": 1 / 60, "hour": 1, "day": 24}[m.group(2).rstrip("s")] * int(m.group(1))
        return HOURS / per
    m = re.fullmatch(r"cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)", expr or "")
    if not m:
        return None
    hours = len(m.group(2).split(",")) if re.fullmatch(r"[\d,]+", m.group(2)) else None
    if hours is None:
        return None
    if m.group(3) in ("*", "?") and m.group(5) in ("*", "?"):
        return hours * 365 / 12
    days = _days_in(m.group(5)) if m.group(5) not in ("*", "?") else None
    return hours * days * WEEKS_PER_MONTH if days else None


def _server_env(ctx: _Ctx, task: Any) -> dict[str, str]:
    defs = task.inputs.get("containerDefinitions")
    defs = json.loads(defs) if isinstance(defs, str) else (defs or [])
    env: dict[str, str] = {}
    for c in defs:
        env.update({e["name"]: e["value"] for e in c.get("environment") or []})
    return env


def _services(ctx: _Ctx) -> list[dict[str, Any]]:
    """Per ECS service: its task definition, idle task count, running hours a month and public IP."""
    out = []
    targets = ctx.of_type("aws:appautoscaling/target:Target")
    actions = ctx.of_type("aws:appautoscaling/scheduledAction:ScheduledAction")
    for svc in ctx.of_type("aws:ecs/service:Service"):
        task = ctx.by_arn.get(svc.inputs.get("taskDefinition"))
        if task is None:
            raise CostError(f"ECS service {svc.name}: its task definition is not in the graph")
        name = svc.outputs.get("name", "")
        rid = None
        count = int(svc.inputs.get("desiredCount", 1))
        for t in targets:
            if str(t.inputs.get("resourceId", "")).endswith("/" + name):
                count, rid = int(t.inputs.get("minCapacity", count)), t.inputs.get("resourceId")
        hours, stops, window = HOURS, 0, None
        mine = [a for a in actions if rid and a.inputs.get("resourceId") == rid]
        if mine:
            start = next((a.inputs for a in mine if (a.inputs.get("scalableTargetAction") or {}).get("minCapacity", 0) > 0), None)
            stop = next((a.inputs for a in mine if (a.inputs.get("scalableTargetAction") or {}).get("maxCapacity", 1) == 0), None)
            parsed = _cron_hours(start, stop) if start and stop else None
            if parsed is None:
                ctx.est.assumptions.append(f"scheduled actions of {svc.name} not understood: tasks counted all month")
            else:
                hours, stops, window = parsed
                count = int(start["scalableTargetAction"]["minCapacity"])
        public = bool((svc.inputs.get("networkConfiguration") or {}).get("assignPublicIp"))
        out.append({"service": svc, "task": task, "count": count, "hours": hours, "stops": stops, "window": window,
                    "public": public, "env": _server_env(ctx, task)})
    return out


def _price_services(ctx: _Ctx, services: list[dict[str, Any]]) -> None:
    for s in services:
        task, n, h = s["task"], s["count"], s["hours"]
        vcpu, gb = int(task.inputs["cpu"]) / 1024, int(task.inputs["memory"]) / 1024
        arch = (task.inputs.get("runtimePlatform") or {}).get("cpuArchitecture", "X86_64")
        k = "arm" if arch == "ARM64" else "x86"
        when = f"{h:.0f} h ({s['window']})" if s["window"] else f"{h:.0f} h"
        ctx.add(n * h * (vcpu * ctx.p(f"fargate_{k}_vcpu_hour") + gb * ctx.p(f"fargate_{k}_gb_hour")),
                f"Fargate: {n} server task(s)", f"{vcpu:g} vCPU / {gb:g} GB {arch}, {when}")
        storage = int((task.inputs.get("ephemeralStorage") or {}).get("sizeInGib", 20))
        if storage > 20 and n:
            ctx.add(n * h * (storage - 20) * ctx.p("fargate_storage_gb_hour"), "Fargate: ephemeral storage",
                    f"{storage - 20} GB beyond the 20 included, per task")
        if s["public"] and n:
            ctx.add(n * h * ctx.p("public_ipv4_hour"), "Public IPv4: server task(s)", f"{n} × {when}")
        if s["window"]:
            ctx.est.assumptions.append(
                f"tasks run only {s['window']} (schedule): outside it the load balancer answers 503")
    for td in ctx.of_type("aws:ecs/taskDefinition:TaskDefinition"):
        if any(td is s["task"] for s in services):
            continue
        arch = (td.inputs.get("runtimePlatform") or {}).get("cpuArchitecture", "X86_64")
        k = "arm" if arch == "ARM64" else "x86"
        per_hour = (int(td.inputs["cpu"]) / 1024 * ctx.p(f"fargate_{k}_vcpu_hour")
                    + int(td.inputs["memory"]) / 1024 * ctx.p(f"fargate_{k}_gb_hour"))
        ctx.est.usage.append(f"one-off task {td.name}: ${per_hour:.4f} per hour it runs (the admin step on each "
                             f"deploy; gc on its schedule)")


def _price_database(ctx: _Ctx, services: list[dict[str, Any]]) -> None:
    acu = ctx.p("aurora_serverless_v2_acu_hour")
    schedules = [s for s in ctx.of_type("aws:scheduler/schedule:Schedule")
                 if "ecsParameters" in (s.inputs.get("target") or {})]
    for cluster in ctx.of_type("aws:rds/cluster:Cluster"):
        scaling = cluster.inputs.get("serverlessv2ScalingConfiguration") or {}
        lo = float(scaling.get("minCapacity", 0.5))
        pause = int(scaling.get("secondsUntilAutoPause", 300)) if lo == 0 else None
        instances = [i for i in ctx.of_type("aws:rds/clusterInstance:ClusterInstance")
                     if i.inputs.get("clusterIdentifier") == cluster.id]
        for inst in instances:
            if inst.inputs.get("instanceClass") != "db.serverless":
                raise UnpricedType(f"{inst.name}: instance class {inst.inputs.get('instanceClass')} has no price "
                                   "in deploy/prices.json")
        n = len(instances)
        if cluster.inputs.get("manageMasterUserPassword"):
            ctx.add(ctx.p("secret_month"), "Secrets Manager: RDS-managed master secret", "1 × secret-month")
        ctx.est.usage.append(f"Aurora storage ${ctx.p('aurora_storage_gb_month')}/GB-month and I/O "
                             f"${ctx.p('aurora_io_million')}/million requests; backups beyond the cluster's size "
                             f"({int(cluster.inputs.get('backupRetentionPeriod', 1))} days kept)")
        if lo > 0:
            ctx.add(n * lo * HOURS * acu, f"Aurora Serverless v2: {n} instance(s)",
                    f"min {lo:g} ACU each, never paused (min > 0)")
            ctx.est.assumptions.append(f"the database idles at its minimum {lo:g} ACU per instance; load scales it "
                                       f"up to {float(scaling.get('maxCapacity', lo)):g} ACU (usage)")
            continue
        holders = [s for s in services if s["count"] and int(s["env"].get("MLFLOW_DB_IDLE_RELEASE_SECONDS", "0")) == 0]
        awake, why = 0.0, []
        if holders:
            s = holders[0]
            awake = s["hours"] + s["stops"] * pause / 3600
            why.append(f"server tasks keep their connections (dbIdleReleaseSeconds 0): awake {awake:.0f} h "
                       f"at {AWAKE_FLOOR_ACU:g} ACU")
        else:
            release = max((int(s["env"].get("MLFLOW_DB_IDLE_RELEASE_SECONDS", "0")) for s in services), default=0)
            why.append(f"paused while idle: tasks close their connections after {release} s without a request, "
                       f"the database pauses {pause} s later")
        for sched in schedules:
            runs = _runs_per_month(sched.inputs.get("scheduleExpression", ""))
            if runs is None:
                ctx.est.assumptions.append(f"{sched.name}: schedule not understood, its database wake-ups not counted")
                continue
            wake = runs * (GC_RUN_SECONDS + pause) / 3600
            awake += wake
            why.append(f"gc wakes it {runs:.0f}× a month for ~{(GC_RUN_SECONDS + pause) / 60:.0f} min: {wake:.0f} h")
        ctx.add(n * awake * AWAKE_FLOOR_ACU * acu, f"Aurora Serverless v2: {n} instance(s)",
                f"min 0 ACU (auto-pause); {'; '.join(why)}")
        ctx.est.assumptions.append(
            f"a 0-ACU database is billed nothing while paused and at least {AWAKE_FLOOR_ACU:g} ACU while awake "
            f"(assumed); every hour of use adds ≥ {AWAKE_FLOOR_ACU:g} ACU-h plus the {pause // 60}-min pause delay "
            f"(${AWAKE_FLOOR_ACU * acu:.3f}/h); the first request after a pause waits ~15 s for the resume "
            "(~30 s after a day paused)")


def _price_network(ctx: _Ctx) -> None:
    nats = ctx.of_type("aws:ec2/natGateway:NatGateway")
    if nats:
        ctx.add(len(nats) * HOURS * ctx.p("nat_gateway_hour"), f"NAT gateway(s): {len(nats)}", "hourly charge")
        ctx.est.usage.append(f"NAT data processing ${ctx.p('nat_gateway_gb')}/GB (image pulls, logs, Secrets Manager "
                             "through NAT; S3 through the gateway endpoint is free)")
    eips = ctx.of_type("aws:ec2/eip:Eip")
    if eips:
        ctx.add(len(eips) * HOURS * ctx.p("public_ipv4_hour"), f"Public IPv4: {len(eips)} Elastic IP(s)",
                "NAT gateway addresses")
    interface = [e for e in ctx.of_type("aws:ec2/vpcEndpoint:VpcEndpoint") if e.inputs.get("vpcEndpointType") == "Interface"]
    if interface:
        azs = sum(len(e.inputs.get("subnetIds") or []) for e in interface)
        ctx.add(azs * HOURS * ctx.p("interface_endpoint_az_hour"), f"Interface VPC endpoints: {len(interface)}",
                f"{azs} endpoint-AZs ({', '.join(e.inputs['serviceName'].split('.', 3)[-1] for e in interface)})")
        ctx.est.usage.append(f"interface endpoint data ${ctx.p('interface_endpoint_gb')}/GB")
    for lb in ctx.of_type("aws:lb/loadBalancer:LoadBalancer"):
        if lb.inputs.get("loadBalancerType", "application") != "application":
            raise UnpricedType(f"{lb.name}: load balancer type {lb.inputs.get('loadBalancerType')} has no price")
        ctx.add(HOURS * ctx.p("alb_hour"), "Application Load Balancer", "hourly charge")
        if not lb.inputs.get("internal"):
            n = len(lb.inputs.get("subnets") or [])
            ctx.add(n * HOURS * ctx.p("public_ipv4_hour"), f"Public IPv4: load balancer ({n})",
                    "one per AZ node (more if it scales out)")
        ctx.est.usage.append(f"load balancer LCUs ${ctx.p('alb_lcu_hour')}/LCU-hour (new connections, active "
                             "connections, GB processed, rule evaluations)")


def _price_misc(ctx: _Ctx) -> None:
    secrets = ctx.of_type("aws:secretsmanager/secret:Secret")
    if secrets:
        ctx.add(len(secrets) * ctx.p("secret_month"), f"Secrets Manager: {len(secrets)} secret(s)",
                ", ".join(s.name for s in secrets))
        ctx.est.usage.append("Secrets Manager API calls $0.05 per 10,000 (ECS reads each secret at every task start)")
    keys = ctx.of_type("aws:kms/key:Key")
    if keys:
        ctx.add(len(keys) * ctx.p("kms_key_month"), f"KMS keys: {len(keys)}", "customer managed key-month")
    alarms = ctx.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    if alarms:
        metrics = sum(max(1, sum(1 for q in (a.inputs.get("metricQueries") or []) if q.get("metric")))
                      for a in alarms)
        ctx.add(metrics * ctx.p("cloudwatch_alarm_month"), f"CloudWatch alarms: {len(alarms)}",
                f"{metrics} standard-resolution alarm metric(s)")
    composite = ctx.of_type("aws:cloudwatch/compositeAlarm:CompositeAlarm")
    if composite:
        ctx.add(len(composite) * 0.50, f"CloudWatch composite alarms: {len(composite)}", "$0.50 each (unconfirmed)")
        ctx.est.unconfirmed.add("composite alarm $0.50")
    dashboards = ctx.of_type("aws:cloudwatch/dashboard:Dashboard")
    if dashboards:
        ctx.add(len(dashboards) * ctx.p("cloudwatch_dashboard_month"), f"CloudWatch dashboards: {len(dashboards)}",
                "the account's first 3 are free (not counted)")
    for acl in ctx.of_type("aws:wafv2/webAcl:WebAcl"):
        rules = len(acl.inputs.get("rules") or [])
        ctx.add(ctx.p("waf_web_acl_month") + rules * ctx.p("waf_rule_month"), "WAF web ACL",
                f"1 web ACL + {rules} rule(s) (managed rule groups priced as rules; some, e.g. Bot Control, "
                "have fees of their own)")
        ctx.est.usage.append(f"WAF requests ${ctx.p('waf_million_requests')}/million")
    for cluster in ctx.of_type("aws:ecs/cluster:Cluster"):
        if any(s.get("name") == "containerInsights" and s.get("value") in ("enabled", "enhanced")
               for s in cluster.inputs.get("settings") or []):
            ctx.est.usage.append(f"Container Insights on {cluster.name}: its metrics are custom metrics "
                                 f"(${ctx.p('container_insights_metric_month')}/metric-month; per cluster, service "
                                 "and, with enhanced, task) plus their performance log ingestion")
    if ctx.of_type("aws:cloudwatch/logGroup:LogGroup"):
        ctx.est.usage.append(f"CloudWatch Logs ingestion ${ctx.p('logs_ingest_gb')}/GB and storage "
                             f"${ctx.p('logs_storage_gb_month')}/GB-month (within the retention)")
    if ctx.of_type("aws:s3/bucket:Bucket"):
        ctx.est.usage.append(f"S3 Standard ${ctx.p('s3_standard_gb_month')}/GB-month, PUT/LIST "
                             f"${ctx.p('s3_put_thousand')}/1,000, GET ${ctx.p('s3_get_thousand')}/1,000 (artifacts, "
                             "noncurrent versions, access logs); S3 to tasks in the same region: no transfer charge")
    if ctx.of_type("aws:ecr/repository:Repository"):
        ctx.est.usage.append(f"ECR storage ${ctx.p('ecr_storage_gb_month')}/GB-month (images kept by the lifecycle "
                             "policy)")
    if ctx.of_type("aws:sns/topic:Topic"):
        ctx.est.usage.append(f"SNS publishes ${ctx.p('sns_million_publishes')}/million beyond the free million")


PRICED: dict[str, Callable[..., None]] = {}
"""Types priced by the functions above (for the completeness check)."""
for _t in ("aws:ecs/service:Service", "aws:ecs/cluster:Cluster"):
    PRICED[_t] = _price_services
for _t in ("aws:rds/cluster:Cluster", "aws:rds/clusterInstance:ClusterInstance"):
    PRICED[_t] = _price_database
for _t in ("aws:ec2/natGateway:NatGateway", "aws:ec2/eip:Eip", "aws:ec2/vpcEndpoint:VpcEndpoint",
           "aws:lb/loadBalancer:LoadBalancer"):
    PRICED[_t] = _price_network
for _t in ("aws:secretsmanager/secret:Secret", "aws:kms/key:Key", "aws:cloudwatch/metricAlarm:MetricAlarm",
           "aws:cloudwatch/compositeAlarm:CompositeAlarm", "aws:cloudwatch/dashboard:Dashboard",
           "aws:wafv2/webAcl:WebAcl"):
    PRICED[_t] = _price_misc


COMPONENTS: dict[str, str] = {
    "awsx:ec2:Vpc": "a packaged component: its children (VPC, subnets, NAT gateways, EIPs, routes) are priced "
                    "one by one",
}
"""Component types from packages (not this program's ``mlflowtracking:`` ones), and how they are priced."""


def unpriced_types(resources: list[Any]) -> list[str]:
    """Types in the graph that are neither priced nor free (components: neither this program's nor
    in :data:`COMPONENTS`; a packaged component whose children are missing counts as unpriced)."""
    types = {r.type for r in resources}
    unknown = {t for t in types if t not in PRICED and t not in FREE and t not in COMPONENTS
               and not t.startswith("mlflowtracking:")}
    if "awsx:ec2:Vpc" in types and "aws:ec2/vpc:Vpc" not in types:
        unknown.add("awsx:ec2:Vpc (its children are not in the graph)")
    return sorted(unknown)


def price_graph(resources: list[Any], *, stack: str, region: str, prices: dict[str, Any]) -> Estimate:
    """Price a resource graph (``tests.unit.harness.Res`` objects) with ``prices`` (prices.json)."""
    unknown = unpriced_types(resources)
    if unknown:
        raise UnpricedType(f"no price and no free reason for resource type(s) {', '.join(unknown)}: add them to "
                           "deploy/prices.json and deploy/cost_pricing.py (PRICED) or to deploy/cost_model.FREE with the reason")
    price_region = region if region in prices["regions"] else FALLBACK_REGION
    est = Estimate(stack=stack, region=region, price_region=price_region, read=prices["read"])
    if price_region != region:
        est.assumptions.append(f"no prices for {region} in deploy/prices.json: {FALLBACK_REGION}'s are used")
    ctx = _Ctx(resources, est, prices["regions"][price_region])
    services = _services(ctx)
    _price_services(ctx, services)
    _price_database(ctx, services)
    _price_network(ctx)
    _price_misc(ctx)
    if any(s["public"] for s in services) and ctx.of_type("aws:ec2/vpcEndpoint:VpcEndpoint"):
        est.assumptions.append("tasks in public subnets reach S3 over the internet gateway (the S3 gateway endpoint "
                               "is on the private route tables); S3 to a task in the same region has no transfer "
                               "charge either way")
    return est
