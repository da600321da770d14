"""A tracking URI a client can verify, and no admin password in clear text by default.

An ACM certificate covers the names it was issued for, never the ALB's DNS name (DESIGN §5),
and must be in the load balancer's region (ACM User Guide, "Supported Regions": certificates
are regional; Elastic Load Balancing uses certificates of its own region only). Without a
certificate the ALB speaks plain HTTP and MLflow's basic auth sends the password with every
request.
"""

from __future__ import annotations

import pytest

import config
from components import outputs
from tests.unit.conftest import run_program
from tests.unit.harness import ACCOUNT, CERT, PROMOTED_REF, run, stack_config

NS = config.NAMESPACE
DOMAIN = "mlflow.example.com"
ZONE = "Z0123456789ABCDEFGHIJ"
CERTIFICATE = "aws:acm/certificate:Certificate"
VALIDATION = "aws:acm/certificateValidation:CertificateValidation"
RECORD = "aws:route53/record:Record"
LISTENER = "aws:lb/listener:Listener"
ALB = "aws:lb/loadBalancer:LoadBalancer"
TASK = "aws:ecs/taskDefinition:TaskDefinition"


def env_of(r) -> dict[str, str]:
    (c,) = r.named("mlflow-service-task").container_definitions()
    return {e["name"]: e["value"] for e in c["environment"]}


def one_line_error(raw: dict) -> str:
    with pytest.raises(config.SettingsError) as info:
        config.load_settings(raw)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# --- settings ------------------------------------------------------------------------------------

def test_a_certificate_needs_the_domain_it_covers():
    msg = one_line_error({"certificateArn": CERT, "allowedCidrs": "10.0.0.0/8"})
    assert f"{NS}:domainName" in msg and "certificateArn" in msg


def test_a_hosted_zone_needs_the_domain_to_create():
    msg = one_line_error({"hostedZoneId": ZONE})
    assert f"{NS}:domainName" in msg and "hostedZoneId" in msg


@pytest.mark.parametrize("bad", ["example.com", "z123", "Z12 34", "/hostedzone/Z0123456789ABC"])
def test_a_hosted_zone_id_is_a_route53_id(bad):
    msg = one_line_error({"hostedZoneId": bad, "domainName": DOMAIN})
    assert f"{NS}:hostedZoneId" in msg and "Route 53" in msg


def test_plain_http_needs_networks_chosen_on_purpose():
    """Item 9: no default of 0.0.0.0/0 for an ALB that would carry the admin password in clear."""
    msg = one_line_error({})
    assert f"{NS}:allowedCidrs" in msg
    assert "pulumi config set --path 'mlflow-tracking:allowedCidrs[0]'" in msg
    assert "certificateArn" in msg and "hostedZoneId" in msg


def test_plain_http_with_explicit_networks_and_https_with_the_open_default():
    assert config.load_settings({"allowedCidrs": "10.0.0.0/8"}).allowed_cidrs == ("10.0.0.0/8",)
    s = config.load_settings({"domainName": DOMAIN, "hostedZoneId": ZONE})
    assert s.allowed_cidrs == ("0.0.0.0/0",) and s.hosted_zone_id == ZONE
    s = config.load_settings({"domainName": DOMAIN, "certificateArn": CERT})
    assert s.allowed_cidrs == ("0.0.0.0/0",)


def test_prod_accepts_a_hosted_zone_instead_of_a_certificate():
    s = config.load_settings({"environment": "prod", "imageRef": PROMOTED_REF, "domainName": DOMAIN,
                              "hostedZoneId": ZONE})
    assert s.certificate_arn is None and s.hosted_zone_id == ZONE


# --- program -------------------------------------------------------------------------------------

def test_a_certificate_of_another_region_fails_at_preview_naming_the_key():
    import program

    other = f"arn:aws:acm:us-east-1:{ACCOUNT}:certificate/11111111-2222-3333-4444-555555555555"
    captured = {}

    def body():
        try:
            program.define_stack()
        except config.SettingsError as err:
            captured["err"] = err

    result = run(body, stack_config("dev", certificateArn=other, domainName=DOMAIN), "dev")
    msg = str(captured["err"])
    assert f"{NS}:certificateArn" in msg and "us-east-1" in msg and "eu-west-1" in msg and "\n" not in msg
    assert [x for x in result.resources if not x.type.startswith("mlflowtracking:")] == []


@pytest.fixture(scope="module")
def zone():
    return run_program("dev", domainName=DOMAIN, hostedZoneId=ZONE, allowedCidrs=None)


def test_hosted_zone_gives_a_dns_validated_certificate_for_the_domain(zone):
    """ACM User Guide, "DNS validation": ACM issues once the CNAME it names exists in the zone;
    ``aws_acm_certificate_validation`` waits for that, so the listener gets an issued certificate."""
    cert = zone.one(CERTIFICATE)
    assert cert.inputs["domainName"] == DOMAIN and cert.inputs["validationMethod"] == "DNS"
    (option,) = cert.outputs["domainValidationOptions"]
    records = {x.inputs["type"]: x for x in zone.of_type(RECORD)}
    check = records["CNAME"]
    assert check.inputs["zoneId"] == ZONE and check.inputs["name"] == option["resourceRecordName"]
    assert check.inputs["records"] == [option["resourceRecordValue"]]
    validation = zone.one(VALIDATION)
    assert validation.inputs["certificateArn"] == cert.outputs["arn"]
    assert validation.inputs["validationRecordFqdns"] == [check.outputs["fqdn"]]
    https = next(x for x in zone.of_type(LISTENER) if x.inputs["port"] == 443)
    assert https.inputs["certificateArn"] == cert.outputs["arn"]
    assert validation.urn in https.dependencies, "the HTTPS listener does not wait for the certificate to be issued"


def test_hosted_zone_gives_an_alias_record_to_the_load_balancer(zone):
    alb = zone.one(ALB)
    records = {x.inputs["type"]: x for x in zone.of_type(RECORD)}
    assert set(records) == {"CNAME", "A"}  # no AAAA: the load balancer is IPv4 only
    assert alb.inputs.get("ipAddressType") in (None, "ipv4")
    alias = records["A"]
    assert alias.inputs["zoneId"] == ZONE and alias.inputs["name"] == DOMAIN
    assert alias.inputs["aliases"] == [{"name": alb.outputs["dnsName"], "zoneId": alb.outputs["zoneId"],
                                        "evaluateTargetHealth": True}]


def test_the_tracking_uri_is_https_on_the_domain_and_only_the_domain_is_an_allowed_host(zone):
    assert zone.exports[outputs.TRACKING_URI] == f"https://{DOMAIN}"
    assert env_of(zone)["MLFLOW_SERVER_ALLOWED_HOSTS"] == DOMAIN


def test_an_own_certificate_is_used_as_given_and_nothing_is_requested():
    r = run_program("dev", certificateArn=CERT, domainName=DOMAIN, allowedCidrs=None)
    https = next(x for x in r.of_type(LISTENER) if x.inputs["port"] == 443)
    assert https.inputs["certificateArn"] == CERT
    assert not r.of_type(CERTIFICATE) and not r.of_type(RECORD)
    assert r.exports[outputs.TRACKING_URI] == f"https://{DOMAIN}"


def test_an_own_certificate_with_a_hosted_zone_gets_only_the_alias_record():
    r = run_program("dev", certificateArn=CERT, domainName=DOMAIN, hostedZoneId=ZONE, allowedCidrs=None)
    assert not r.of_type(CERTIFICATE)
    assert [x.inputs["type"] for x in r.of_type(RECORD)] == ["A"]
    https = next(x for x in r.of_type(LISTENER) if x.inputs["port"] == 443)
    assert https.inputs["certificateArn"] == CERT


def test_the_dev_file_names_its_networks_and_builds(dev):
    s = config.load_settings({k.split(":", 1)[1]: v for k, v in stack_config("dev").items()
                              if k.startswith(NS + ":")})
    assert s.certificate_arn is None and s.hosted_zone_id is None
    assert "0.0.0.0/0" not in s.allowed_cidrs and "::/0" not in s.allowed_cidrs
    alb_sg = dev.named("mlflow-service-alb-sg").id
    rules = [x for x in dev.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
             if x.inputs["securityGroupId"] == alb_sg]
    assert {x.inputs.get("cidrIpv4") or x.inputs.get("cidrIpv6") for x in rules} == set(s.allowed_cidrs)
