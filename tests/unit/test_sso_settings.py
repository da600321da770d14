"""Single sign-on settings (config.py, config_rules.py): the refusals at preview, one line naming the
setting, the networks and regions that can work, and the defaults; the listener, rules, task
variables and secret under mocks are in tests/unit/test_sso.py.

Documents: ELB User Guide, "Authenticate users using an Application Load Balancer" (HTTPS listeners
only; the load balancer calls the IdP's token and user info endpoints; the signing key at
``public-keys.auth.elb.<region>.amazonaws.com``, documented for the aws and aws-us-gov partitions);
Amazon Cognito Developer Guide, "The user attributes endpoint" (userInfo returns user attributes,
not ``cognito:groups``)."""

from __future__ import annotations

import re

import pytest

import config
from tests.unit.conftest import PROD_DOMAIN, PROD_OVERRIDES, PROD_ZONE, run_program
from tests.unit.harness import ACCOUNT, REGION
from tests.unit.sso_cases import COGNITO, DEV_HTTPS, NS, OIDC, SECRET_ARN
from tests.unit.test_settings import settings_of


# --- refusals at preview: one line naming the setting ----------------------------------------------------

def refusal(stack: str = "prod", **overrides) -> str:
    base = {**PROD_OVERRIDES} if stack == "prod" else dict(DEV_HTTPS)
    with pytest.raises(config.SettingsError) as err:
        settings_of(stack, **{**base, **overrides})
    text = str(err.value)
    assert "\n" not in text
    return text


def without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


@pytest.mark.parametrize("sso,fragment", [
    (without(OIDC, "tokenEndpoint"), "provider oidc needs tokenEndpoint"),
    (without(OIDC, "clientId", "clientSecretArn"), "provider oidc needs clientId, clientSecretArn"),
    (without(COGNITO, "userPoolDomain"), "provider cognito needs userPoolDomain"),
    ({**OIDC, "clientSecretArn": f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/oidc"}, "clientSecretArn: a Secrets Manager"),
    ({**OIDC, "clientSecretArn": "s3cr3t-value-pasted-here"}, "clientSecretArn: a Secrets Manager"),
    ({**OIDC, "clientSecret": "s3cr3t-value-pasted-here"}, "not with provider oidc: clientSecret"),
    ({**COGNITO, "clientSecretArn": SECRET_ARN}, "not with provider cognito: clientSecretArn"),
    ({**without(OIDC, "adminGroup")}, "adminGroupClaim and adminGroup: both or neither"),
    ({**without(OIDC, "adminGroupClaim")}, "adminGroupClaim and adminGroup: both or neither"),
    ({**OIDC, "tokenEndpoint": "http://idp.example.com/token"}, "tokenEndpoint: a full https:// URL"),
    ({**OIDC, "scope": "email profile"}, "scope: space-separated scopes including openid"),
    ({**COGNITO, "sessionTimeoutSeconds": 604801}, "sessionTimeoutSeconds: an integer from 1 to 604800"),
    ({**COGNITO, "userPoolArn": "arn:aws:cognito-idp:eu-west-1:123:userpool/x"}, "userPoolArn: arn:aws:cognito-idp"),
    ({"provider": "saml"}, "provider: oidc or cognito"),
    ({**COGNITO, "adminGroupClaim": "cognito:groups", "adminGroup": "mlflow-admins"},
     "adminGroupClaim: not cognito:groups with provider cognito"),
    ("not json", "an object {provider: oidc"),
])
def test_a_wrong_sso_value_is_one_line_naming_the_setting(sso, fragment):
    text = refusal(sso=sso)
    assert text.startswith(f"invalid setting {NS}:sso = ") and fragment in text, text
    assert "s3cr3t-value-pasted-here" not in text  # a secret pasted in the wrong place is never echoed


def test_sso_without_https_is_refused():
    text = refusal("dev", sso=OIDC, domainName=None, hostedZoneId=None)
    assert text.startswith(f"invalid setting {NS}:sso = ") and "HTTPS" in text and "hostedZoneId" in text


def test_private_tasks_without_nat_cannot_fetch_the_alb_keys():
    text = refusal(sso=OIDC, natMode="none")  # prod: private tasks
    assert text.startswith(f"invalid setting {NS}:natMode = 'none'")
    assert "public-keys.auth.elb" in text and "taskSubnets public" in text


def test_internal_alb_without_nat_cannot_reach_the_idp():
    text = refusal(sso=COGNITO, natMode="none", taskSubnets="public", albScheme="internal")
    assert text.startswith(f"invalid setting {NS}:albScheme = 'internal'") and "NAT" in text


def test_cognito_admins_by_a_custom_attribute_are_accepted():
    """Cognito's userInfo returns the user's attributes, custom ones included (Cognito Developer Guide,
    "The user attributes endpoint"); only its tokens' cognito:* claims never reach x-amzn-oidc-data."""
    s = settings_of("prod", **PROD_OVERRIDES, sso={**COGNITO, "adminGroupClaim": "custom:mlflow_role",
                                                   "adminGroup": "admin"})
    assert (s.sso.admin_group_claim, s.sso.admin_group) == ("custom:mlflow_role", "admin")


def test_sso_with_the_job_runner_is_refused():
    """With the job runner the server runs MLflow's own basic-auth app (image/server_launch.py), on
    which single sign-on's check is not installed."""
    text = refusal(sso=OIDC, enableJobExecution=True)
    assert text.startswith(f"invalid setting {NS}:enableJobExecution = 'true'") and "with sso" in text, text
    assert settings_of("prod", **PROD_OVERRIDES, enableJobExecution=True).enable_job_execution


@pytest.mark.parametrize("region", ["cn-north-1", "cn-northwest-1", "us-iso-east-1", "us-isob-east-1",
                                    "eu-isoe-west-1", "us-isof-south-1", "eusc-de-east-1"])
def test_sso_outside_the_documented_key_endpoints_is_refused(region):
    """The ELB User Guide ("User claims encoding and signature verification") documents the key endpoint
    for partition aws and AWS GovCloud (US) only; the server refuses any other (image/sso_settings.py)."""
    s = settings_of("prod", **PROD_OVERRIDES, sso=COGNITO)
    with pytest.raises(config.SettingsError) as err:
        config.check_sso_region(s, region)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"invalid setting {NS}:sso = 'provider cognito'"), text
    assert f"unset in region {region}" in text
    config.check_sso_region(settings_of("prod", **PROD_OVERRIDES), region)  # without sso: no rule


@pytest.mark.parametrize("region", [REGION, "us-east-1", "ap-southeast-5", "mx-central-1", "il-central-1",
                                    "us-gov-west-1", "us-gov-east-1"])
def test_sso_in_partition_aws_and_govcloud_is_accepted(region):
    config.check_sso_region(settings_of("prod", **PROD_OVERRIDES, sso=OIDC), region)


def test_the_program_checks_the_region_it_resolved(monkeypatch):
    """program.py passes the region of aws.get_region() (the mocks' REGION) to the rule."""
    seen = []
    monkeypatch.setattr(config, "check_sso_region", lambda settings, region: seen.append((settings.sso, region)))
    run_program("prod", **PROD_OVERRIDES, sso=OIDC)
    assert [r for _, r in seen] == [REGION] and seen[0][0] is not None


@pytest.mark.parametrize("overrides", [
    {"natMode": "none", "taskSubnets": "public"},  # dev's network: the tasks' public IPs reach the keys
    {"natMode": "single", "albScheme": "internal"},  # the NAT carries both
    {"natMode": "perAz"},
])
def test_networks_that_can_work_are_accepted(overrides):
    s = settings_of("prod", **{**PROD_OVERRIDES, "sso": OIDC, **overrides})
    assert s.sso is not None and s.sso.provider == "oidc"


def test_the_program_stops_before_registering_anything():
    with pytest.raises(config.SettingsError, match=f"{NS}:natMode"):
        run_program("prod", **PROD_OVERRIDES, sso=OIDC, natMode="none")


def test_settings_parse_to_the_defaults():
    s = settings_of("prod", **PROD_OVERRIDES, sso=without(OIDC, "adminUsers", "adminGroupClaim", "adminGroup"))
    assert (s.sso.scope, s.sso.user_claim, s.sso.admin_users, s.sso.session_timeout_seconds) == (
        "openid email", "email", (), 43200)
    assert settings_of("prod", **PROD_OVERRIDES).sso is None


def test_component_package_takes_the_same_setting():
    from components.package import settings_from_inputs

    snake = {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v for k, v in OIDC.items()}
    inputs = {"environment": "prod", "domain_name": PROD_DOMAIN, "hosted_zone_id": PROD_ZONE,
              "image_ref": PROD_OVERRIDES["imageRef"], "sso": snake}
    assert settings_from_inputs(inputs).sso == settings_of("prod", **PROD_OVERRIDES, sso=OIDC).sso
