"""The load balancer's access logs (components/access_logs.py) in the whole program: prod's own
bucket and its policy, the load balancer waiting for it, dev without unless asked, the settings.

ELB User Guide, "Enable access logs for your Application Load Balancer": SSE-S3 only; eu-west-1
(a region from before August 2022) delivers as account 156460612806, newer regions as
``logdelivery.elasticloadbalancing.amazonaws.com``; objects under ``AWSLogs/<account>/``; ELB
writes a test object when access logs are turned on.
"""

from __future__ import annotations

from components.access_logs import ELB_LOG_DELIVERY_SERVICE, elb_log_principal
from tests.unit.conftest import run_program
from tests.unit.harness import ACCOUNT, REGION
from tests.unit.test_monitoring import LB, settings


def test_prod_load_balancer_logs_to_its_own_bucket(prod):
    bucket = prod.named("mlflow-alb-logs-bucket")
    assert prod.one(LB).inputs["accessLogs"] == {"bucket": bucket.outputs["bucket"], "enabled": True}
    assert bucket.protect  # protectData
    sse = prod.named("mlflow-alb-logs-encryption").inputs["rules"][0]["applyServerSideEncryptionByDefault"]
    assert sse == {"sseAlgorithm": "AES256"}  # the only encryption access logs support
    block = prod.named("mlflow-alb-logs-public-access-block").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    assert prod.named("mlflow-alb-logs-ownership").inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    rules = {x["id"]: x for x in prod.named("mlflow-alb-logs-lifecycle").inputs["rules"]}
    assert rules["expire-access-logs"]["expiration"] == {"days": settings("prod").alb_access_log_days} == {"days": 90}
    stmts = {s["Sid"]: s for s in prod.named("mlflow-alb-logs-policy").policy()["Statement"]}
    put = stmts["ElbLogDelivery"]
    assert REGION == "eu-west-1" and put["Principal"] == {"AWS": "arn:aws:iam::156460612806:root"}
    assert put["Action"] == "s3:PutObject" and put["Resource"] == f"{bucket.outputs['arn']}/AWSLogs/{ACCOUNT}/*"
    assert stmts["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_load_balancer_waits_for_the_delivery_policy(prod):
    """ELB writes a test object when access logs are turned on: the policy must exist first."""
    policy = prod.named("mlflow-alb-logs-policy")
    assert policy.urn in prod.one(LB).dependencies


def test_dev_has_no_access_logs_unless_asked():
    dev = run_program("dev")
    assert "accessLogs" not in dev.one(LB).inputs and not dev.of_type("mlflowtracking:index:AlbAccessLogs")
    on = run_program("dev", albAccessLogs="true", albAccessLogDays="7")
    bucket = on.named("mlflow-alb-logs-bucket")
    assert on.one(LB).inputs["accessLogs"]["bucket"] == bucket.outputs["bucket"] and not bucket.protect
    assert bucket.inputs["forceDestroy"] is True
    rules = {x["id"]: x for x in on.named("mlflow-alb-logs-lifecycle").inputs["rules"]}
    assert rules["expire-access-logs"]["expiration"] == {"days": 7}


def test_regions_after_august_2022_use_the_log_delivery_service_principal():
    assert elb_log_principal("eu-west-1") == {"AWS": "arn:aws:iam::156460612806:root"}
    assert elb_log_principal("us-east-1") == {"AWS": "arn:aws:iam::127311923021:root"}
    for newer in ("eu-south-2", "ap-southeast-4", "il-central-1", "ca-west-1"):
        assert elb_log_principal(newer) == {"Service": ELB_LOG_DELIVERY_SERVICE}


def test_access_logs_follow_the_environment_unless_set():
    assert settings("prod").alb_access_logs is True and settings("dev").alb_access_logs is False
    assert settings("prod", albAccessLogs="false").alb_access_logs is False
