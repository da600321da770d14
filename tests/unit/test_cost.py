"""``python -m deploy cost STACK`` (deploy/cost.py, deploy/prices.json) and the cost levers it
prices: tasks in public subnets (``taskSubnets``) and working hours (``schedule``).

Documents the tests rely on: Application Auto Scaling User Guide, "Scheduled scaling for
Application Auto Scaling" (cron(M H d m w y) expressions, Timezone); Amazon ECS API Reference,
AwsVpcConfiguration (assignPublicIp ENABLED|DISABLED; a Fargate task in a public subnet needs a
public IP to pull its image); Amazon VPC pricing, "Public IPv4 address" ($0.005 an hour each);
Aurora User Guide, "Scaling to Zero ACUs with automatic pause and resume" (no capacity charge
while paused; writer and tier 0-1 readers pause together).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import config
from deploy import cost
from tests.unit.conftest import PROD_OVERRIDES, run_program
from tests.unit.harness import ROOT

WORK = {"days": "MON-FRI", "start": "08:00", "stop": "19:00", "timeZone": "Europe/Berlin"}
VARIANTS = [
    ("dev", {}),
    ("prod", PROD_OVERRIDES),
    ("dev", {"natMode": "none", "taskSubnets": "public", "schedule": WORK, "gcOlderThanDays": 30}),
    ("dev", {k: v for k, v in {"natMode": "perAz", "dbReader": True, "albAccessLogs": True, "wafRateLimit": 2000,
                               "alarmEmail": "ops@example.com", "bucketVersioning": True}.items()
             if k in config.KEYS}),  # the monitoring settings where they exist
    ("prod", {**PROD_OVERRIDES, "natMode": "none", "cpuArchitecture": "ARM64", "schedule": WORK}),
    ("prod", {**PROD_OVERRIDES, "sso": {  # single sign-on (docs/sso.md): listener rules, an egress rule
        "provider": "oidc", "issuer": "https://idp.example.com", "authorizationEndpoint": "https://idp.example.com/a",
        "tokenEndpoint": "https://idp.example.com/t", "userInfoEndpoint": "https://idp.example.com/u",
        "clientId": "mlflow", "clientSecretArn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:oidc-AbCdEf"}}),
]


@pytest.fixture(scope="module")
def prices():
    return cost.load_prices()


def graph(stack: str, overrides: dict) -> list:
    return cost.build_graph(stack, overrides)


@pytest.mark.parametrize("stack,overrides", VARIANTS, ids=[f"{s}-{i}" for i, (s, _) in enumerate(VARIANTS)])
def test_every_resource_type_is_priced_or_free_with_a_reason(stack, overrides, prices):
    resources = graph(stack, overrides)
    assert cost.unpriced_types(resources) == []
    assert "aws:ec2/vpc:Vpc" in {r.type for r in resources}, "the awsx VPC's children are part of the graph"
    est = cost.price_graph(resources, stack=stack, region="eu-west-1", prices=prices)
    assert est.total > 0 and all(line.monthly >= 0 for line in est.lines)
    assert all(reason.strip() for reason in cost.FREE.values())


def test_a_type_neither_priced_nor_free_fails_the_estimate(prices):
    resources = graph("dev", {})
    alien = type(resources[0])(urn="urn:x", type="aws:ec2/instance:Instance", name="x", inputs={})
    with pytest.raises(cost.UnpricedType, match=r"aws:ec2/instance:Instance"):
        cost.price_graph([*resources, alien], stack="dev", region="eu-west-1", prices=prices)


def test_the_monitoring_types_have_prices_or_reasons():
    for t in ("aws:cloudwatch/metricAlarm:MetricAlarm", "aws:cloudwatch/dashboard:Dashboard", "aws:kms/key:Key",
              "aws:wafv2/webAcl:WebAcl"):
        assert t in cost.PRICED
    for t in ("aws:sns/topic:Topic", "aws:cloudwatch/eventRule:EventRule"):
        assert t in cost.FREE


def test_both_regions_price_every_key_with_source_and_status(prices):
    keys = set(prices["regions"]["us-east-1"])
    assert set(prices["regions"]["eu-west-1"]) == keys
    assert prices["read"] and prices["refresh"] and prices["how_read"]
    for region in ("us-east-1", "eu-west-1"):
        for key, entry in prices["regions"][region].items():
            assert entry["usd"] >= 0 and entry["source"].startswith("https://") and entry["status"], (region, key)
    us = prices["regions"]["us-east-1"]  # the figures issue 12 lists
    assert (us["nat_gateway_hour"]["usd"], us["alb_hour"]["usd"], us["public_ipv4_hour"]["usd"]) == (0.045, 0.0225, 0.005)
    assert (us["fargate_x86_vcpu_hour"]["usd"], us["fargate_arm_vcpu_hour"]["usd"]) == (0.04048, 0.03238)
    assert us["aurora_serverless_v2_acu_hour"]["usd"] == 0.12


def test_stack_files_line_by_line(prices):
    eu = prices["regions"]["eu-west-1"]
    dev = cost.estimate("dev")
    assert dev.region == dev.price_region == "eu-west-1"
    assert dev.amount("NAT gateway") == 0  # natMode none, public tasks
    assert dev.amount("Interface VPC endpoints") == 0 and dev.amount("Public IPv4: server") == round(
        730 * eu["public_ipv4_hour"]["usd"], 2)
    assert dev.amount("Application Load Balancer") == round(730 * eu["alb_hour"]["usd"], 2)
    assert dev.amount("Public IPv4: load balancer") == round(2 * 730 * eu["public_ipv4_hour"]["usd"], 2)
    fargate = 730 * (0.5 * eu["fargate_x86_vcpu_hour"]["usd"] + 2 * eu["fargate_x86_gb_hour"]["usd"])
    assert dev.amount("Fargate: 1 server") == round(fargate, 2)
    assert dev.amount("Aurora") == 0  # 0 ACU and the tasks release their connections: paused when idle
    assert any("pauses 900 s later" in line.detail for line in dev.lines)
    assert dev.amount("Secrets Manager") == round(4 * eu["secret_month"]["usd"], 2)  # 3 + RDS's master secret
    prod = cost.estimate("prod")  # placeholders for imageRef and the zone, named in the output
    assert any("imageRef" in a for a in prod.assumptions)
    assert prod.amount("Aurora") == round(2 * 1 * 730 * eu["aurora_serverless_v2_acu_hour"]["usd"], 2)
    assert prod.amount("NAT gateway") == round(2 * 730 * eu["nat_gateway_hour"]["usd"], 2)
    text = prod.render()
    assert "total when idle" in text and "Not in the total" in text and "LCU" in text and "NAT data" in text


@pytest.mark.parametrize("change,line,direction", [
    ({"cpu": 1024, "memory": 2048}, "Fargate: 1 server", +1),
    ({"cpuArchitecture": "ARM64"}, "Fargate: 1 server", -1),
    ({"natMode": "perAz"}, "NAT gateway", +1),
    ({"natMode": "single", "taskSubnets": "private"}, "NAT gateway", +1),
    ({"dbMinAcu": 1}, "Aurora", +1),
    ({"dbIdleReleaseSeconds": 0}, "Aurora", +1),
    ({"schedule": WORK}, "Fargate: 1 server", -1),
    ({"ephemeralStorageGib": 21}, "Fargate: ephemeral", -1),
])
def test_a_sizing_change_changes_the_estimate(change, line, direction):
    base, changed = cost.estimate("dev"), cost.estimate("dev", change)
    delta = changed.amount(line) - base.amount(line)
    assert delta * direction > 0, (change, base.amount(line), changed.amount(line))
    assert (changed.total - base.total) * direction > 0


def test_idle_aurora_holding_connections_is_awake_while_tasks_run(prices):
    acu = prices["regions"]["eu-west-1"]["aurora_serverless_v2_acu_hour"]["usd"]
    held = cost.estimate("dev", {"dbIdleReleaseSeconds": 0})
    assert held.amount("Aurora") == round((730 + 0) * 0.5 * acu, 2)
    scheduled = cost.estimate("dev", {"dbIdleReleaseSeconds": 0, "schedule": WORK})
    hours = 5 * 11 * cost.WEEKS_PER_MONTH + round(5 * cost.WEEKS_PER_MONTH) * 900 / 3600  # + pause delay per stop
    assert scheduled.amount("Aurora") == round(hours * 0.5 * acu, 2)


def test_gc_wakes_a_paused_database_on_its_schedule(prices):
    est = cost.estimate("dev", {"gcOlderThanDays": 30})
    acu = prices["regions"]["eu-west-1"]["aurora_serverless_v2_acu_hour"]["usd"]
    runs = 365 / 12
    assert est.amount("Aurora") == round(runs * (cost.GC_RUN_SECONDS + 900) / 3600 * 0.5 * acu, 2)


# --- the levers -------------------------------------------------------------------------------

def _run(**overrides):
    return run_program("dev", **overrides)


def _subnets(r, tier: str) -> list[str]:
    """Subnet IDs of a tier, whether the program or the awsx VPC (its children) created them."""
    found = [*r.resources, *getattr(r.recorder, "awsx_children", [])]
    return sorted(s.id for s in found if s.type == "aws:ec2/subnet:Subnet" and s.inputs.get("tags", {}).get("tier") == tier)


def test_public_tasks_server_admin_and_gc_in_public_subnets_with_a_public_ip():
    r = _run(taskSubnets="public", gcOlderThanDays=30)
    public = _subnets(r, "public")
    assert len(public) == 2
    svc = r.one("aws:ecs/service:Service")
    net = svc.inputs["networkConfiguration"]
    assert sorted(net["subnets"]) == public and net["assignPublicIp"] is True
    gc = r.one("aws:scheduler/schedule:Schedule").inputs["target"]["ecsParameters"]["networkConfiguration"]
    assert sorted(gc["subnets"]) == public and gc["assignPublicIp"] is True
    admin = r.one("pulumi-python:dynamic/mlflowtracking:DatabaseAdminRun").inputs
    assert sorted(admin["subnets"]) == public and admin["assign_public_ip"] is True
    # only the load balancer may connect to the tasks; the database stays in the isolated subnets
    sg = svc.inputs["networkConfiguration"]["securityGroups"][0]
    ingress = [i for i in r.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
               if i.inputs["securityGroupId"] == sg]
    alb_sg = r.one("aws:lb/loadBalancer:LoadBalancer").inputs["securityGroups"][0]
    assert ingress and all(i.inputs.get("referencedSecurityGroupId") == alb_sg and "cidrIpv4" not in i.inputs
                           for i in ingress)
    isolated = set(_subnets(r, "isolated"))
    group = r.one("aws:rds/subnetGroup:SubnetGroup")
    assert set(group.inputs["subnetIds"]) == isolated


def test_private_tasks_have_no_public_ip():
    r = _run(taskSubnets="private", natMode="single")
    net = r.one("aws:ecs/service:Service").inputs["networkConfiguration"]
    assert net["assignPublicIp"] is False
    assert r.one("pulumi-python:dynamic/mlflowtracking:DatabaseAdminRun").inputs["assign_public_ip"] is False


def test_admin_task_asks_ecs_for_a_public_ip_only_when_told():
    from components.admin_task import AdminStepError, run_admin_task

    seen = []

    class Ecs:
        def run_task(self, **kwargs):
            seen.append(kwargs["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"])
            return {"tasks": [], "failures": [{"reason": "stop here"}]}

    props = {"cluster": "c", "task_definition": "td", "subnets": ["subnet-1"], "security_groups": ["sg-1"],
             "container_name": "mlflow-admin"}
    for flag in (True, False):
        with pytest.raises(AdminStepError):
            run_admin_task(Ecs(), None, {**props, "assign_public_ip": flag})
    assert seen == ["ENABLED", "DISABLED"]


def test_schedule_creates_start_and_stop_actions_in_the_time_zone():
    r = _run(schedule=WORK)
    target = r.one("aws:appautoscaling/target:Target")
    assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (1, 1)
    actions = {a.name: a.inputs for a in r.of_type("aws:appautoscaling/scheduledAction:ScheduledAction")}
    start, stop = actions["mlflow-service-work-hours-start"], actions["mlflow-service-work-hours-stop"]
    assert start["schedule"] == "cron(0 8 ? * MON-FRI *)" and stop["schedule"] == "cron(0 19 ? * MON-FRI *)"
    assert start["timezone"] == stop["timezone"] == "Europe/Berlin"
    assert start["scalableTargetAction"] == {"minCapacity": 1, "maxCapacity": 1}
    assert stop["scalableTargetAction"] == {"minCapacity": 0, "maxCapacity": 0}
    assert start["resourceId"] == stop["resourceId"] == target.inputs["resourceId"]
    assert r.one("aws:ecs/service:Service").ignore_changes == ("desiredCount",)  # the scaler owns the count
    assert not r.of_type("aws:appautoscaling/policy:Policy")  # min == max: no CPU scaling
    assert not _run().of_type("aws:appautoscaling/scheduledAction:ScheduledAction")


@pytest.mark.parametrize("raw,fragment", [
    ({"days": "MON-FRI", "start": "19:00", "stop": "08:00", "timeZone": "UTC"}, "not after start"),
    ({"days": "weekdays", "start": "08:00", "stop": "19:00", "timeZone": "UTC"}, "days"),
    ({"days": "MON-FRI", "start": "8", "stop": "19:00", "timeZone": "UTC"}, "HH:MM"),
    ({"days": "MON-FRI", "start": "08:00", "stop": "19:00", "timeZone": "Mars/Olympus"}, "time zone"),
    ({"days": "MON-FRI", "start": "08:00", "stop": "19:00"}, "missing timeZone"),
    ("MON-FRI 8-19", "an object"),
])
def test_a_wrong_schedule_is_one_line_naming_the_setting(raw, fragment):
    with pytest.raises(config.SettingsError) as err:
        config.load_settings({"allowedCidrs": "10.0.0.0/8", "schedule": json.dumps(raw) if isinstance(raw, dict) else raw})
    text = str(err.value)
    assert "\n" not in text and "mlflow-tracking:schedule" in text and fragment in text


def test_task_subnets_allows_private_or_public_only():
    with pytest.raises(config.SettingsError, match="taskSubnets.*private \\| public"):
        config.load_settings({"allowedCidrs": "10.0.0.0/8", "taskSubnets": "isolated"})


# --- the command line ---------------------------------------------------------------------------

def _fresh_copy(dest: Path) -> Path:
    """The repository's files as a clone has them (tracked and new, not ignored), no caches."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_cli_prints_the_estimate_on_a_fresh_clone_without_credentials(tmp_path, stack):
    clone = _fresh_copy(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PULUMI_"))}
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-m", "deploy", "cost", stack], cwd=clone, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith(f"{stack} (eu-west-1): idle monthly cost")
    assert "total when idle" in out.stdout and "Application Load Balancer" in out.stdout
    assert shutil.which("pulumi", path=env["PATH"]) is None  # no Pulumi CLI was there to use


def test_cli_unknown_stack_is_one_line(tmp_path):
    from deploy.cli import main
    import io

    err, out = io.StringIO(), io.StringIO()
    assert main(["cost", "nosuchstack"], stdout=out, stderr=err) == 1
    assert err.getvalue().count("\n") == 1 and "Pulumi.nosuchstack.yaml" in err.getvalue()


# --- the schedule's edges, the cheap dev network --------------------------------------------------

def test_a_schedule_with_min_tasks_0_is_refused_at_preview():
    """Application Auto Scaling "Target tracking scaling policies": a target tracking policy does not
    scale out from 0 (no task, no CPU metric), so a start action setting 0..max would start
    nothing: the service would stay down after the first stop."""
    with pytest.raises(config.SettingsError) as err:
        config.load_settings({"allowedCidrs": "10.0.0.0/8", "schedule": json.dumps(WORK), "minTasks": "0",
                              "desiredCount": "0", "maxTasks": "2"})
    text = str(err.value)
    assert "\n" not in text and text.startswith("invalid setting mlflow-tracking:minTasks = '0'")
    assert "schedule" in text and "from 1" in text
    assert config.load_settings({"allowedCidrs": "10.0.0.0/8", "minTasks": "0", "desiredCount": "0",
                                 "maxTasks": "2"}).min_tasks == 0  # without a schedule 0 stays allowed


def test_with_a_schedule_pulumi_leaves_the_targets_min_and_max_to_the_actions():
    """pulumi-aws ``appautoscaling.Target``: inputs ``minCapacity`` / ``maxCapacity``; the stop
    action sets both to 0, so a refresh or a Target update off-hours must not write
    minTasks..maxTasks back (which would start the tasks until the next stop)."""
    target = _run(schedule=WORK).one("aws:appautoscaling/target:Target")
    assert target.ignore_changes == ("minCapacity", "maxCapacity")
    assert _run(maxTasks=2).one("aws:appautoscaling/target:Target").ignore_changes == ()


def test_public_tasks_without_nat_need_no_interface_endpoints():
    """Amazon ECS API Reference, AwsVpcConfiguration: a Fargate task with a public IP in a public
    subnet pulls its image and reaches Logs and Secrets Manager through the internet gateway;
    private tasks without a NAT need the interface endpoints (ECS Developer Guide, "Amazon ECS
    interface VPC endpoints")."""
    endpoint = "aws:ec2/vpcEndpoint:VpcEndpoint"
    public = _run(natMode="none", taskSubnets="public")
    kinds = sorted(e.inputs["vpcEndpointType"] for e in public.of_type(endpoint))
    assert kinds == ["Gateway"]  # the free S3 gateway endpoint stays
    assert not [g for g in public.of_type("aws:ec2/securityGroup:SecurityGroup") if g.name.endswith("-endpoints-sg")]
    private = _run(natMode="none", taskSubnets="private")
    assert sorted(e.inputs["vpcEndpointType"] for e in private.of_type(endpoint)).count("Interface") == 4


def test_public_tasks_without_nat_cost_less_than_the_nat():  # dev's stack file since this change
    base = cost.estimate("dev", {"natMode": "single", "taskSubnets": "private"})
    cheap = cost.estimate("dev", {"natMode": "none", "taskSubnets": "public"})
    assert cheap.total < base.total
    assert cheap.amount("NAT gateway") == 0
