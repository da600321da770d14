"""Single sign-on for the web UI (docs/sso.md): the ``sso`` stack setting, the load balancer's
authenticate action and the listener rules that keep programmatic clients off the login, and the
``MLFLOW_SSO_*`` variables the server task gets (the contract with the image: docs/sso.md).

- The HTTPS listener's default action becomes ``authenticate-oidc`` (or ``authenticate-cognito``)
  then ``forward``: the UI (``/``, ``/static-files/*``), its own API calls (``/ajax-api/*``,
  ``/get-artifact``, ``/graphql``, ``/gateway/*``...) and any unknown path go through the login.
- Listener rules of higher priority forward :data:`PROGRAMMATIC_PATHS` without it (MLflow's basic
  auth still guards them), split into rules of at most :data:`MAX_CONDITION_VALUES` path values
  (ELB User Guide, "Quotas for your Application Load Balancers": 5 condition values per rule).
- The OIDC client secret is read from Secrets Manager at deploy time and given to the action as a
  Pulumi secret; it is in no setting, no task definition and no log.

    sso:
      provider: oidc                  # or cognito (userPoolArn, userPoolClientId, userPoolDomain)
      issuer: https://idp.example.com
      authorizationEndpoint: https://idp.example.com/authorize
      tokenEndpoint: https://idp.example.com/token
      userInfoEndpoint: https://idp.example.com/userinfo
      clientId: abc
      clientSecretArn: arn:aws:secretsmanager:eu-west-1:123456789012:secret:mlflow-oidc-AbCdEf
      adminUsers: [alice@example.com]
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws

PROGRAMMATIC_PATHS = ("/api/*", "/v1/traces", "/health", "/version")
"""What MLflow 3.17.2's own clients call (forwarded without the login): the REST API
(``mlflow.utils.rest_utils``: ``/api/2.0``, ``/api/2.1``, ``/api/3.0``, ``/api/4.0``, including the
artifact proxy ``/api/2.0/mlflow-artifacts/artifacts``), the OTLP span export of
``RestStore.log_spans`` (``mlflow.tracing.utils.otlp.OTLP_TRACES_PATH``), and the health and version
probes (``mlflow.server.security_utils.HEALTH_ENDPOINTS``). The UI's bundle calls none of them (it
uses ``ajax-api/``, ``get-artifact``, ``graphql`` and ``gateway/``), so the UI keeps the login's
identity on every call it makes."""
MAX_CONDITION_VALUES = 5
"""ELB quota: condition values per listener rule."""
RULE_PRIORITY_BASE = 10
"""Priority of the first programmatic rule (lower wins; the default action comes last)."""
CALLBACK_PATH = "/oauth2/idpresponse"
"""The redirect URI the ALB uses with the IdP (ELB User Guide, "Authenticate users using an
Application Load Balancer"): register ``https://<domainName>/oauth2/idpresponse``."""
SESSION_TIMEOUT_RANGE = (1, 604800)
"""The ALB's session cookie lifetime: at most 7 days (ELB API Reference, AuthenticateOidcActionConfig)."""

SECRET_ARN_RE = re.compile(r"^arn:aws[a-z\-]*:secretsmanager:(?P<region>[a-z0-9\-]+):\d{12}:secret:[A-Za-z0-9/_+=.@\-]+$")
USER_POOL_ARN_RE = re.compile(
    r"^arn:aws[a-z\-]*:cognito-idp:(?P<region>[a-z0-9\-]+):\d{12}:userpool/(?P<id>[a-z0-9\-]+_[A-Za-z0-9]+)$")
HTTPS_URL_RE = re.compile(r"^https://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[^\s]*)?$")
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]{0,61}[a-z0-9])?)*$")
CLAIM_RE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")
"""A claim name as the server accepts it (image/sso_settings.py): 1-256 printable characters, no spaces."""
CLIENT_ID_RE = re.compile(r"^[\x21-\x7e]{1,256}$")

OIDC_KEYS = ("issuer", "authorizationEndpoint", "tokenEndpoint", "userInfoEndpoint", "clientId", "clientSecretArn")
COGNITO_KEYS = ("userPoolArn", "userPoolClientId", "userPoolDomain")
COMMON_KEYS = ("scope", "userClaim", "adminUsers", "adminGroupClaim", "adminGroup", "sessionTimeoutSeconds")
ALLOWED = ("an object {provider: oidc, issuer, authorizationEndpoint, tokenEndpoint, userInfoEndpoint (https URLs), "
           "clientId, clientSecretArn (a Secrets Manager secret ARN)} or {provider: cognito, userPoolArn, "
           "userPoolClientId, userPoolDomain}, with optional scope, userClaim, adminUsers, adminGroupClaim + "
           "adminGroup, sessionTimeoutSeconds (docs/sso.md)")


@dataclass(frozen=True)
class SingleSignOn:
    """Single sign-on for the web UI through the load balancer (docs/sso.md); programmatic clients keep basic auth."""

    provider: str
    """oidc (a generic OpenID Connect IdP) or cognito (an Amazon Cognito user pool)."""
    issuer: Optional[str] = None
    """oidc: the IdP's issuer URL (the iss of its tokens)."""
    authorization_endpoint: Optional[str] = None
    """oidc: the IdP's authorization endpoint (https)."""
    token_endpoint: Optional[str] = None
    """oidc: the IdP's token endpoint (https; the load balancer calls it)."""
    user_info_endpoint: Optional[str] = None
    """oidc: the IdP's user info endpoint (https; the load balancer calls it)."""
    client_id: Optional[str] = None
    """oidc: the client id of the app registered at the IdP."""
    client_secret_arn: Optional[str] = None
    """oidc: ARN of the Secrets Manager secret whose value is the client secret (read at deploy time, never stored in the stack file)."""
    user_pool_arn: Optional[str] = None
    """cognito: ARN of the user pool."""
    user_pool_client_id: Optional[str] = None
    """cognito: the user pool app client id (an app client with a secret)."""
    user_pool_domain: Optional[str] = None
    """cognito: the user pool's hosted UI domain prefix, or its full custom domain."""
    scope: str = "openid email"
    """Claims asked of the IdP (must include openid)."""
    user_claim: str = "email"
    """The claim that names the MLflow user."""
    admin_users: tuple[str, ...] = field(default_factory=tuple)
    """MLflow user names that are admins."""
    admin_group_claim: Optional[str] = None
    """A claim (a string or a list of strings) whose value adminGroup makes a user an admin; with adminGroup."""
    admin_group: Optional[str] = None
    """The value of adminGroupClaim that makes an admin; with adminGroupClaim."""
    session_timeout_seconds: int = 43200
    """Lifetime of the load balancer's session cookie (1 to 604800 seconds)."""

    @property
    def issuer_url(self) -> str:
        """The ``iss`` of the identity: the OIDC issuer, or Cognito's
        ``https://cognito-idp.<region>.amazonaws.com/<user pool id>``."""
        if self.provider == "oidc":
            return str(self.issuer)
        m = USER_POOL_ARN_RE.match(str(self.user_pool_arn))
        return f"https://cognito-idp.{m.group('region')}.amazonaws.com/{m.group('id')}"

    def environment(self, signer_arn: pulumi.Input[str]) -> dict[str, Any]:
        """The server container's ``MLFLOW_SSO_*`` variables (none is a secret)."""
        env: dict[str, Any] = {
            "MLFLOW_SSO_SIGNER_ARN": signer_arn,
            "MLFLOW_SSO_ISSUER": self.issuer_url,
            "MLFLOW_SSO_USER_CLAIM": self.user_claim,
            "MLFLOW_SSO_ADMIN_USERS": ",".join(self.admin_users),
        }
        if self.admin_group_claim:
            env["MLFLOW_SSO_ADMIN_GROUP_CLAIM"] = self.admin_group_claim
            env["MLFLOW_SSO_ADMIN_GROUP"] = self.admin_group
        return env


def parse(raw: Any) -> Optional[SingleSignOn]:
    """The setting's value (a mapping, or its JSON text as the engine passes objects); None when empty.

    :raises ValueError: what is allowed (one line)."""
    if raw is None or (isinstance(raw, str) and raw.strip() in ("", "{}")):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError(ALLOWED) from None
    if not isinstance(raw, dict):
        raise ValueError(ALLOWED)
    provider = raw.get("provider")
    if provider not in ("oidc", "cognito"):
        raise ValueError(f"{ALLOWED}; provider: oidc or cognito")
    own = OIDC_KEYS if provider == "oidc" else COGNITO_KEYS
    unknown = sorted(set(raw) - {"provider", *own, *COMMON_KEYS})
    if unknown:
        raise ValueError(f"{ALLOWED}; not with provider {provider}: {', '.join(unknown)}")
    missing = [k for k in own if raw.get(k) in (None, "")]
    if missing:
        raise ValueError(f"{ALLOWED}; provider {provider} needs {', '.join(missing)}")
    if not all(isinstance(raw[k], str) for k in own):
        raise ValueError(f"{ALLOWED}; {', '.join(own)}: strings")
    values: dict[str, Any] = {"provider": provider}
    if provider == "oidc":
        for key in ("issuer", "authorizationEndpoint", "tokenEndpoint", "userInfoEndpoint"):
            if not HTTPS_URL_RE.match(raw[key]):
                raise ValueError(f"{key}: a full https:// URL (the load balancer accepts no other)")
        if not CLIENT_ID_RE.match(raw["clientId"]):
            raise ValueError("clientId: the IdP app's client id (1-256 printable characters, no spaces)")
        if not SECRET_ARN_RE.match(raw["clientSecretArn"]):
            raise ValueError("clientSecretArn: a Secrets Manager secret ARN "
                             "(arn:aws:secretsmanager:<region>:<account>:secret:<name>) holding the client secret; "
                             "the secret itself never goes in the stack file")
        values.update(issuer=raw["issuer"], authorization_endpoint=raw["authorizationEndpoint"],
                      token_endpoint=raw["tokenEndpoint"], user_info_endpoint=raw["userInfoEndpoint"],
                      client_id=raw["clientId"], client_secret_arn=raw["clientSecretArn"])
    else:
        if not USER_POOL_ARN_RE.match(raw["userPoolArn"]):
            raise ValueError("userPoolArn: arn:aws:cognito-idp:<region>:<account>:userpool/<region>_<id>")
        if not CLIENT_ID_RE.match(raw["userPoolClientId"]):
            raise ValueError("userPoolClientId: the user pool app client id")
        if not DOMAIN_RE.match(raw["userPoolDomain"]):
            raise ValueError("userPoolDomain: the hosted UI domain prefix (e.g. my-mlflow) or its full custom domain")
        values.update(user_pool_arn=raw["userPoolArn"], user_pool_client_id=raw["userPoolClientId"],
                      user_pool_domain=raw["userPoolDomain"])
    scope = raw.get("scope", "openid email")
    if not isinstance(scope, str) or "openid" not in scope.split() or not re.fullmatch(r"[\x21-\x7e]+( [\x21-\x7e]+)*", scope):
        raise ValueError("scope: space-separated scopes including openid, e.g. \"openid email\"")
    values["scope"] = scope
    for key, name in (("userClaim", "user_claim"), ("adminGroupClaim", "admin_group_claim")):
        claim = raw.get(key)
        if claim is None:
            continue
        if not isinstance(claim, str) or not CLAIM_RE.match(claim):
            raise ValueError(f"{key}: a claim name (1-256 characters, no spaces)")
        values[name] = claim
    group = raw.get("adminGroup")
    if group is not None:
        if (not isinstance(group, str) or not group or len(group) > 256 or group != group.strip()
                or any(c in group for c in "\r\n")):
            raise ValueError("adminGroup: the value (at most 256 characters, one line) of adminGroupClaim that makes an admin")
        values["admin_group"] = group
    if ("admin_group_claim" in values) != ("admin_group" in values):
        raise ValueError("adminGroupClaim and adminGroup: both or neither (the claim, and its value that makes an admin)")
    if provider == "cognito" and values.get("admin_group_claim", "").startswith("cognito:"):
        # The load balancer signs the claims of the IdP's user info endpoint (x-amzn-oidc-data); Cognito's
        # userInfo returns user attributes only (Cognito Developer Guide, "The user attributes endpoint"),
        # and cognito:groups is in its ID and access tokens only (aws-load-balancer-controller issue #1715).
        raise ValueError(f"adminGroupClaim: not {values['admin_group_claim']} with provider cognito: Cognito's userInfo "
                         "response, whose claims the load balancer passes on, has user attributes only, never the "
                         "tokens' cognito:* claims; list admins in adminUsers (or use a custom attribute, custom:...)")
    users = raw.get("adminUsers", [])
    if isinstance(users, str):
        users = [u.strip() for u in users.split(",") if u.strip()]
    if not isinstance(users, list) or not all(
            isinstance(u, str) and u and re.fullmatch(r"[^\s,]{1,256}", u) for u in users):
        raise ValueError("adminUsers: a list of MLflow user names (no spaces or commas)")
    values["admin_users"] = tuple(users)
    timeout = raw.get("sessionTimeoutSeconds", 43200)
    lo, hi = SESSION_TIMEOUT_RANGE
    try:
        timeout = int(timeout) if not isinstance(timeout, bool) else None
    except (TypeError, ValueError):
        timeout = None
    if timeout is None or not lo <= timeout <= hi:
        raise ValueError(f"sessionTimeoutSeconds: an integer from {lo} to {hi} (7 days)")
    values["session_timeout_seconds"] = timeout
    return SingleSignOn(**values)


# --------------------------------------------------------------------------------------------
# The load balancer's part (components/load_balancer.py)
# --------------------------------------------------------------------------------------------

def authenticate_action(sso: SingleSignOn) -> dict[str, Any]:
    """The listener's first default action: log the person in (OIDC or Cognito), order 1.

    The OIDC client secret is read from Secrets Manager here (``GetSecretValue`` at deploy) and
    passed as a Pulumi secret: encrypted in the state, never in the stack file or a log."""
    common = {"on_unauthenticated_request": "authenticate", "scope": sso.scope,
              "session_timeout": sso.session_timeout_seconds}
    if sso.provider == "cognito":
        return {"type": "authenticate-cognito", "order": 1, "authenticate_cognito": {
            "user_pool_arn": sso.user_pool_arn, "user_pool_client_id": sso.user_pool_client_id,
            "user_pool_domain": sso.user_pool_domain, **common}}
    secret = aws.secretsmanager.get_secret_version_output(secret_id=sso.client_secret_arn)
    return {"type": "authenticate-oidc", "order": 1, "authenticate_oidc": {
        "issuer": sso.issuer, "authorization_endpoint": sso.authorization_endpoint,
        "token_endpoint": sso.token_endpoint, "user_info_endpoint": sso.user_info_endpoint,
        "client_id": sso.client_id, "client_secret": pulumi.Output.secret(secret.secret_string), **common}}


def path_chunks(paths: tuple[str, ...] = PROGRAMMATIC_PATHS) -> list[list[str]]:
    """``paths`` in groups of at most :data:`MAX_CONDITION_VALUES` (one listener rule each)."""
    return [list(paths[i:i + MAX_CONDITION_VALUES]) for i in range(0, len(paths), MAX_CONDITION_VALUES)]


def build_sso_listener(name: str, *, parent: pulumi.Resource, sso: SingleSignOn, listener: aws.lb.Listener,
                       target_group_arn: pulumi.Input[str], alb_security_group_id: pulumi.Input[str],
                       tags: dict[str, str]) -> list[aws.lb.ListenerRule]:
    """The rules that forward :data:`PROGRAMMATIC_PATHS` past the login, and the load balancer's
    egress to the IdP (it calls the token and user info endpoints itself: ELB User Guide,
    "Authenticate users using an Application Load Balancer"; their addresses are the IdP's, so
    any IPv4 address on 443)."""
    child = pulumi.ResourceOptions(parent=parent)
    aws.vpc.SecurityGroupEgressRule(f"{name}-alb-to-idp", security_group_id=alb_security_group_id, ip_protocol="tcp",
                                    from_port=443, to_port=443, cidr_ipv4="0.0.0.0/0",
                                    description="identity provider (token and user info endpoints)", opts=child)
    rules = []
    for i, values in enumerate(path_chunks()):
        rules.append(aws.lb.ListenerRule(
            f"{name}-programmatic-{i}", listener_arn=listener.arn, priority=RULE_PRIORITY_BASE + i,
            actions=[{"type": "forward", "target_group_arn": target_group_arn}],
            conditions=[{"path_pattern": {"values": values}}], tags=tags, opts=child))
    return rules


def callback_url(domain_name: str) -> str:
    """The redirect URI to register at the IdP (or as the Cognito app client's callback URL)."""
    return f"https://{domain_name}{CALLBACK_PATH}"
