"""Single sign-on settings (issue 15): the MLFLOW_SSO_* variables, parsed and validated from an
environment mapping. Used twice: by the entrypoint at start (a bad value stops the server with one
line naming the variable, before anything else happens) and by the server's authorization function
(plugins/mlflow_auth_fastpath/sso.py), which loads this file by path in every server process.

    settings = from_env(os.environ)   # None: single sign-on is off (MLFLOW_SSO_SIGNER_ARN unset)
                                      # ValueError: one line, the variable and what is allowed

The variables (docs/container-contract.md; set by the program only when the stack setting `sso` is):
  MLFLOW_SSO_SIGNER_ARN   this stack's load balancer, arn:aws:elasticloadbalancing:REGION:ACCOUNT:
                          loadbalancer/app/NAME/ID: the JWT header's `signer` must equal it, and the
                          region of the key endpoint is read from it
  MLFLOW_SSO_ISSUER       the identity provider's issuer (https://...), which the token's `iss` must equal
  MLFLOW_SSO_USER_CLAIM   the claim naming the MLflow user (default email)
  MLFLOW_SSO_ADMIN_USERS  comma-separated MLflow user names that are admins (may be empty)
  MLFLOW_SSO_ADMIN_GROUP_CLAIM, MLFLOW_SSO_ADMIN_GROUP   a claim (string or list of strings) and the
                          value in it that makes an admin: both or neither
  MLFLOW_SSO_KEY_URL      TESTS ONLY: the key endpoint's base URL, on 127.0.0.1 / ::1 / localhost only

The key endpoint is AWS's (Elastic Load Balancing User Guide, "Authenticate users using an Application
Load Balancer", "User claims encoding and signature verification"):
https://public-keys.auth.elb.REGION.amazonaws.com/KEY-ID, and for AWS GovCloud (US-West / US-East)
https://s3-us-gov-west-1.amazonaws.com/aws-elb-public-keys-prod-us-gov-west-1/KEY-ID (us-gov-east-1
alike). No other partition's endpoint is documented there, so other partitions are refused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

VARIABLES = ("MLFLOW_SSO_SIGNER_ARN", "MLFLOW_SSO_ISSUER", "MLFLOW_SSO_USER_CLAIM", "MLFLOW_SSO_ADMIN_USERS",
             "MLFLOW_SSO_ADMIN_GROUP_CLAIM", "MLFLOW_SSO_ADMIN_GROUP", "MLFLOW_SSO_KEY_URL")
DEFAULT_USER_CLAIM = "email"
_ARN = re.compile(r"arn:(?P<partition>aws[a-z-]*):elasticloadbalancing:(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+):"
                  r"(?P<account>\d{12}):loadbalancer/app/[A-Za-z0-9-]{1,32}/[0-9a-f]{1,32}")
_GOVCLOUD = ("us-gov-west-1", "us-gov-east-1")
_CLAIM = re.compile(r"[^\s\x00-\x1f\x7f]{1,256}")  # a JSON member name: any printable text without spaces
_LOOPBACK_NAMES = ("localhost",)


@dataclass(frozen=True)
class SsoSettings:
    signer_arn: str
    region: str
    issuer: str
    user_claim: str
    admin_users: frozenset[str]
    admin_group_claim: str | None
    admin_group: str | None
    key_url: str  # base URL of the key endpoint, no trailing slash: KEY-ID is appended after a /
    key_url_is_test: bool

    def describe(self) -> str:
        """One line for the start-up log (nothing here is a secret)."""
        admins = f"{len(self.admin_users)} listed admin(s)"
        if self.admin_group_claim:
            admins += f", admins by claim {self.admin_group_claim!r} containing {self.admin_group!r}"
        return (f"single sign-on on: x-amzn-oidc-data signed by {self.signer_arn}, issuer {self.issuer}, "
                f"user claim {self.user_claim!r}, {admins}, keys from {self.key_url}"
                f"{' (MLFLOW_SSO_KEY_URL: tests only)' if self.key_url_is_test else ''}")


def _get(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def key_endpoint(partition: str, region: str) -> str:
    """The documented key endpoint of the load balancer's region (ValueError for an undocumented one)."""
    if partition == "aws-us-gov" and region in _GOVCLOUD:
        return f"https://s3-{region}.amazonaws.com/aws-elb-public-keys-prod-{region}"
    if partition == "aws" and not region.startswith("us-gov-"):
        return f"https://public-keys.auth.elb.{region}.amazonaws.com"
    raise ValueError(f"MLFLOW_SSO_SIGNER_ARN is in partition {partition!r} region {region!r}, whose load balancer "
                     f"key endpoint AWS does not document (allowed: partition aws, or aws-us-gov in "
                     f"{' / '.join(_GOVCLOUD)})")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def from_env(env: Mapping[str, str]) -> SsoSettings | None:
    """The single sign-on settings, None when MLFLOW_SSO_SIGNER_ARN is unset (off), or ValueError with
    one line naming the variable and what is allowed. No value here is a secret."""
    arn = _get(env, "MLFLOW_SSO_SIGNER_ARN")
    if not arn:
        stray = [n for n in VARIABLES[1:] if _get(env, n)]
        if stray:  # a half-configured sign-on must not silently run without it
            raise ValueError(f"{', '.join(stray)} set but MLFLOW_SSO_SIGNER_ARN is not (single sign-on needs the "
                             f"load balancer's ARN; unset them all to turn it off)")
        return None
    m = _ARN.fullmatch(arn)
    if not m:
        raise ValueError("MLFLOW_SSO_SIGNER_ARN is not an Application Load Balancer ARN "
                         "(arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID)")
    region, partition = m["region"], m["partition"]
    key_url = key_endpoint(partition, region)

    issuer = _get(env, "MLFLOW_SSO_ISSUER")
    if not issuer:
        raise ValueError("MLFLOW_SSO_ISSUER is not set (the identity provider's issuer URL, https://..., which "
                         "the load balancer's token names in iss)")
    parts = urlsplit(issuer)
    if parts.scheme != "https" or not parts.hostname or re.search(r"\s", issuer):
        raise ValueError("MLFLOW_SSO_ISSUER is not an https:// URL (the identity provider's issuer, e.g. "
                         "https://cognito-idp.REGION.amazonaws.com/POOL_ID)")

    user_claim = _get(env, "MLFLOW_SSO_USER_CLAIM") or DEFAULT_USER_CLAIM
    if not _CLAIM.fullmatch(user_claim):
        raise ValueError("MLFLOW_SSO_USER_CLAIM is not a claim name (1-256 characters, no spaces)")

    admin_users = frozenset(u.strip() for u in _get(env, "MLFLOW_SSO_ADMIN_USERS").split(",") if u.strip())

    group_claim = _get(env, "MLFLOW_SSO_ADMIN_GROUP_CLAIM") or None
    group = _get(env, "MLFLOW_SSO_ADMIN_GROUP") or None
    if bool(group_claim) != bool(group):
        missing = "MLFLOW_SSO_ADMIN_GROUP" if group_claim else "MLFLOW_SSO_ADMIN_GROUP_CLAIM"
        raise ValueError(f"{missing} is not set but {'MLFLOW_SSO_ADMIN_GROUP_CLAIM' if group_claim else 'MLFLOW_SSO_ADMIN_GROUP'} "
                         f"is (set both, the claim and the value in it that makes an admin, or neither)")
    if group_claim and not _CLAIM.fullmatch(group_claim):
        raise ValueError("MLFLOW_SSO_ADMIN_GROUP_CLAIM is not a claim name (1-256 characters, no spaces)")

    test_url = _get(env, "MLFLOW_SSO_KEY_URL")
    if test_url:
        u = urlsplit(test_url)
        if u.scheme not in ("http", "https") or not u.hostname or not _is_loopback(u.hostname) or u.query or u.fragment:
            raise ValueError("MLFLOW_SSO_KEY_URL is for tests only and must be http(s)://127.0.0.1, [::1] or "
                             "localhost (the real key endpoint is read from MLFLOW_SSO_SIGNER_ARN's region)")
        key_url = test_url.rstrip("/")
    return SsoSettings(signer_arn=arn, region=region, issuer=issuer, user_claim=user_claim, admin_users=admin_users,
                       admin_group_claim=group_claim, admin_group=group, key_url=key_url,
                       key_url_is_test=bool(test_url))
