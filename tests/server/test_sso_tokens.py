"""Single sign-on through the load balancer (issue 15), in process: image/sso_settings.py's one-line
errors and the plugin's token check (image/plugins/mlflow_auth_fastpath/sso.py, sso_keys.py)
against a loopback key endpoint. The server itself: tests/server/test_sso.py.

The stand-in (tests/support/alb_keys.py) follows the Elastic Load Balancing User Guide,
"Authenticate users using an Application Load Balancer", "User claims encoding and signature
verification": an ES256 (ECDSA P-256 + SHA-256) JWT whose parts are base64url WITH padding, its
header carrying alg, kid (a UUID), signer (the load balancer's ARN), iss, client and exp, its payload
the identity provider's user claims (plus iss and exp, which AWS's own aws-jwt-verify AlbJwtVerifier
checks there); the public key of a kid is a PEM at https://public-keys.auth.elb.REGION.amazonaws.com/KID,
here a loopback endpoint named by MLFLOW_SSO_KEY_URL (tests only: the server refuses any other host).
"""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.alb_keys import AlbKeyEndpoint
from tests.support.sso_cases import (CASES, GOOD_ENV, GROUP, GROUP_CLAIM, ISSUER, LIST_ADMIN, SIGNER,
                                     refusal_cases, sso, sso_keys, sso_settings)

# --------------------------------------------------------------------------------------------
# settings (image/sso_settings.py): one line naming the variable
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env, variable, allowed", [
    ({"MLFLOW_SSO_SIGNER_ARN": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/x/0123"},
     "MLFLOW_SSO_SIGNER_ARN", "loadbalancer/app/NAME/ID"),
    ({"MLFLOW_SSO_SIGNER_ARN": "my-alb"}, "MLFLOW_SSO_SIGNER_ARN", "arn:aws:elasticloadbalancing"),
    ({"MLFLOW_SSO_SIGNER_ARN": SIGNER.replace("arn:aws:", "arn:aws-cn:").replace("eu-west-1", "cn-north-1")},
     "MLFLOW_SSO_SIGNER_ARN", "partition aws"),
    ({"MLFLOW_SSO_SIGNER_ARN": SIGNER}, "MLFLOW_SSO_ISSUER", "https://"),
    ({**GOOD_ENV, "MLFLOW_SSO_ISSUER": "http://idp.example.test"}, "MLFLOW_SSO_ISSUER", "https://"),
    ({**GOOD_ENV, "MLFLOW_SSO_USER_CLAIM": "e mail"}, "MLFLOW_SSO_USER_CLAIM", "no spaces"),
    ({**GOOD_ENV, "MLFLOW_SSO_ADMIN_GROUP_CLAIM": "groups"}, "MLFLOW_SSO_ADMIN_GROUP", "both"),
    ({**GOOD_ENV, "MLFLOW_SSO_ADMIN_GROUP": "admins"}, "MLFLOW_SSO_ADMIN_GROUP_CLAIM", "both"),
    ({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": "https://public-keys.auth.elb.eu-west-1.amazonaws.com"},
     "MLFLOW_SSO_KEY_URL", "127.0.0.1"),
    ({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": "http://10.0.0.1:8080"}, "MLFLOW_SSO_KEY_URL", "tests only"),
    ({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": "ftp://127.0.0.1/keys"}, "MLFLOW_SSO_KEY_URL", "http(s)"),
    ({"MLFLOW_SSO_ISSUER": ISSUER}, "MLFLOW_SSO_SIGNER_ARN", "unset them all"),
], ids=["target-group-arn", "not-an-arn", "china-partition", "no-issuer", "http-issuer", "claim-with-space",
        "group-claim-without-group", "group-without-claim", "key-url-aws", "key-url-private-ip", "key-url-ftp",
        "issuer-without-arn"])
def test_settings_errors_are_one_line_naming_the_variable(env, variable, allowed):
    with pytest.raises(ValueError) as e:
        sso_settings.from_env(env)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(variable) or f" {variable} " in f" {message} ", message
    assert allowed in message, message


def test_settings_values():
    assert sso_settings.from_env({}) is None
    assert sso_settings.from_env({"MLFLOW_SSO_SIGNER_ARN": "  ", "PATH": "/bin"}) is None
    s = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_ADMIN_USERS": " a@x.test, ,b@x.test ",
                               "MLFLOW_SSO_ADMIN_GROUP_CLAIM": "cognito:groups", "MLFLOW_SSO_ADMIN_GROUP": "admins"})
    assert (s.region, s.user_claim, s.admin_users) == ("eu-west-1", "email", frozenset({"a@x.test", "b@x.test"}))
    assert s.key_url == "https://public-keys.auth.elb.eu-west-1.amazonaws.com" and not s.key_url_is_test
    assert (s.admin_group_claim, s.admin_group) == ("cognito:groups", "admins")
    gov = SIGNER.replace("arn:aws:", "arn:aws-us-gov:").replace("eu-west-1", "us-gov-west-1")
    assert sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_SIGNER_ARN": gov}).key_url == \
        "https://s3-us-gov-west-1.amazonaws.com/aws-elb-public-keys-prod-us-gov-west-1"
    for url in ("http://127.0.0.1:8080/", "http://[::1]:9/keys", "http://localhost:1"):
        s = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": url})
        assert s.key_url == url.rstrip("/") and s.key_url_is_test



# --------------------------------------------------------------------------------------------
# the token check, in process, against the loopback key endpoint
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys():
    with AlbKeyEndpoint(slow_seconds=8) as endpoint:
        endpoint.kid = endpoint.new_key()
        yield endpoint


@pytest.fixture
def check(keys):
    settings = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": keys.url})
    cache = sso.KeyCache(settings.key_url)

    def check(token):  # the token, then its user claim, as the server checks them
        claims = sso.verify(token, settings, cache)
        sso.username_of(claims, settings)
        return claims

    return check



def test_a_padded_token_signed_by_the_load_balancer_verifies(keys, check):
    token = keys.token(keys.kid, {"email": "ann@example.test", "groups": ["x"]}, signer=SIGNER, issuer=ISSUER)
    assert token.split(".")[2].endswith("=")  # padded, as the load balancer's
    claims = check(token)
    assert claims["email"] == "ann@example.test" and claims["iss"] == ISSUER


@pytest.mark.parametrize("case", CASES)
def test_the_token_check_refuses(keys, check, case):
    token, status, words = refusal_cases(keys)[case]
    with pytest.raises(sso.Refused) as e:
        check(token)
    assert (e.value.status, words in e.value.reason) == (status, True), e.value.reason


def test_a_key_endpoint_that_does_not_answer_is_503_not_a_hang_nor_a_pass(keys, check):
    token = keys.token(keys.slow_kid, {"email": "x@example.test"}, signer=SIGNER, issuer=ISSUER,
                       sign_with=keys.keys[keys.kid])
    with pytest.raises(sso.Refused) as e:
        check(token)
    assert e.value.status == 503 and "could not be reached" in e.value.reason, e.value.reason


def test_the_key_is_fetched_once_per_kid(keys, check):
    kid = keys.new_key()
    for i in range(5):
        check(keys.token(kid, {"email": f"k{i}@example.test"}, signer=SIGNER, issuer=ISSUER))
    assert keys.requests.count(f"/{kid}") == 1


def test_group_claim_and_list_make_admins():
    s = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_ADMIN_USERS": LIST_ADMIN,
                               "MLFLOW_SSO_ADMIN_GROUP_CLAIM": GROUP_CLAIM, "MLFLOW_SSO_ADMIN_GROUP": GROUP})
    assert sso.is_admin(LIST_ADMIN, {}, s)
    assert sso.is_admin("a@x", {GROUP_CLAIM: ["other", GROUP]}, s)
    assert sso.is_admin("a@x", {GROUP_CLAIM: GROUP}, s)
    assert not sso.is_admin("a@x", {GROUP_CLAIM: [f"{GROUP}-not"]}, s)
    assert not sso.is_admin("a@x", {GROUP_CLAIM: f"{GROUP} other"}, s)
    assert not sso.is_admin("a@x", {"other": [GROUP]}, s)


def test_a_kid_the_endpoint_does_not_know_is_not_fetched_on_every_request(keys):
    """The check runs synchronously in MLflow's async middleware: a repeated forged kid must not
    cost a fetch per request (sso_keys.REJECTED_SECONDS)."""
    now = [1000.0]
    settings = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_KEY_URL": keys.url})
    cache = sso.KeyCache(settings.key_url, clock=lambda: now[0])
    kid = str(uuid.uuid4())
    token = keys.token(kid, {"email": "x@example.test"}, signer=SIGNER, issuer=ISSUER, sign_with=keys.keys[keys.kid])
    for _ in range(3):
        with pytest.raises(sso.Refused) as e:
            sso.verify(token, settings, cache)
        assert e.value.status == 401 and "key id" in e.value.reason, e.value.reason
    assert keys.requests.count(f"/{kid}") == 1, keys.requests
    now[0] += sso_keys.REJECTED_SECONDS + 1  # later: asked again (a key AWS had not published yet is not shut out long)
    with pytest.raises(sso.Refused):
        sso.verify(token, settings, cache)
    assert keys.requests.count(f"/{kid}") == 2, keys.requests


@pytest.mark.parametrize("kid", ["abc", "../keys", "12345678-1234-1234-1234-12345678901", "slow-" + "0" * 8,
                                 "12345678-1234-1234-1234-123456789012/x"])
def test_a_kid_not_of_the_uuid_form_is_refused_without_a_fetch(keys, check, kid):
    """AWS's key ids are UUIDs (aws-jwt-verify's alb-cache.ts accepts only that form)."""
    token = keys.token(keys.kid, {"email": "x@example.test"}, signer=SIGNER, issuer=ISSUER, header={"kid": kid})
    before = len(keys.requests)
    with pytest.raises(sso.Refused) as e:
        check(token)
    assert (e.value.status, "key id" in e.value.reason) == (401, True), e.value.reason
    assert keys.requests[before:] == []


@pytest.mark.parametrize("verified", [True, "true", None], ids=["bool", "cognito-string", "absent"])
def test_a_verified_or_unstated_email_is_accepted(keys, check, verified):
    """email_verified: Cognito sends the string "true" (aws-load-balancer-controller issue #1715);
    Entra ID's user info does not send it at all: accepted (docs/sso.md)."""
    claims = {"email": "v@example.test"} if verified is None else {"email": "v@example.test", "email_verified": verified}
    settings = sso_settings.from_env(GOOD_ENV)
    assert sso.username_of(check(keys.token(keys.kid, claims, signer=SIGNER, issuer=ISSUER)), settings) == "v@example.test"


@pytest.mark.parametrize("verified", [False, "false", "yes", 1, None], ids=["false", "false-string", "yes", "one", "null"])
def test_an_unverified_email_is_refused(verified):
    settings = sso_settings.from_env(GOOD_ENV)
    with pytest.raises(sso.Refused) as e:
        sso.username_of({"email": "u@example.test", "email_verified": verified}, settings)
    assert e.value.status == 401 and "not verified" in e.value.reason, e.value.reason
    # another user claim: email_verified is about the email only
    other = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_USER_CLAIM": "preferred_username"})
    assert sso.username_of({"preferred_username": "u", "email_verified": verified}, other) == "u"


def test_the_admin_list_ignores_letter_case():
    s = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_ADMIN_USERS": "Boss@Example.test"})
    assert sso.is_admin("boss@example.TEST", {}, s)
    assert not sso.is_admin("boss2@example.test", {}, s)


@pytest.mark.parametrize("claim", ["\u017fam@corp.test", "\u212aim@corp.test", "SAM@corp.test\u0307"])
def test_the_admin_list_matches_other_scripts_only_exactly(claim):
    """casefold() maps the long s and the Kelvin sign onto 's' and 'k': a name an IdP lets people
    choose must not become an admin's by that."""
    s = sso_settings.from_env({**GOOD_ENV, "MLFLOW_SSO_ADMIN_USERS": "sam@corp.test,kim@corp.test"})
    assert not sso.is_admin(claim, {}, s)
    assert sso.is_admin("SAM@corp.test", {}, s) and sso.is_admin("Kim@Corp.test", {}, s)
