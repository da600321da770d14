"""Single sign-on (components/sso.py, docs/sso.md) in the whole program under mocks, per stack file:
the HTTPS listener's default action (log in, then forward), the rules that forward programmatic
paths without the login (their path conditions, priorities, order), the server's MLFLOW_SSO_*
variables, the OIDC client secret only from Secrets Manager, the load balancer's egress to the
IdP, the callback URL output, and no change at all without ``sso`` (the refusals at preview:
test_sso_settings.py).

Documents the expectations come from:
- ELB User Guide, "Authenticate users using an Application Load Balancer": authenticate-oidc /
  authenticate-cognito actions on HTTPS listeners only, followed by a forward; the redirect URI
  ``https://<DNS or CNAME>/oauth2/idpresponse``; the load balancer itself calls the IdP's token and
  user info endpoints (its security group must allow outbound 443; an internal load balancer reaches
  public IdP endpoints only through a NAT gateway: AWS re:Post knowledge center,
  "elb-configure-authentication-alb"); the ``x-amzn-oidc-data`` header is added only by the
  authenticate action, signed by the regional key at ``public-keys.auth.elb.<region>.amazonaws.com``.
- ELB User Guide, "Listener rules for your Application Load Balancer" (path-pattern conditions:
  case-sensitive, ``*`` and ``?`` wildcards, the path only, no query string; lower priority value
  first, the default action last) and "Quotas for your Application Load Balancers" (5 condition
  values per rule).
- MLflow 3.17.2's client (mlflow/utils/rest_utils.py, mlflow/tracing/utils/otlp.py,
  mlflow/server/security_utils.py) and its UI bundle (mlflow/server/js/build).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from components import sso as sso_mod
from tests.unit.conftest import run_program
from tests.unit.harness import REGION, SECRET_STRING, Run, is_secret, stack_config
from tests.unit.sso_cases import EGRESS, GET_SECRET, LISTENER, POOL_ID, RULE, SECRET_ARN, VARIANTS

_RUNS: dict[str, Run] = {}


def run_of(key: str) -> Run:
    if key not in _RUNS:
        stack, overrides = VARIANTS[key]
        _RUNS[key] = run_program(stack, **overrides)
    return _RUNS[key]


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request) -> tuple[str, dict, Run]:
    stack, overrides = VARIANTS[request.param]
    return request.param, overrides["sso"], run_of(request.param)


def https_listener(r: Run):
    (listener,) = [x for x in r.of_type(LISTENER) if x.name == "mlflow-service-https"]
    return listener


def rules(r: Run) -> list:
    return sorted(r.of_type(RULE), key=lambda x: x.inputs["priority"])


def server_env(r: Run, task: str = "mlflow-service-task") -> dict[str, str]:
    (c,) = r.named(task).container_definitions()
    return {e["name"]: e["value"] for e in c["environment"]}


def alb_sg(r: Run):
    return r.named("mlflow-service-alb-sg")


def path_matches(pattern: str, path: str) -> bool:
    """An ALB path-pattern condition value: case-sensitive, ``*`` any characters, ``?`` one."""
    return re.fullmatch("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), path) is not None


def forwarded_without_login(r: Run, path: str) -> bool:
    return any(path_matches(v, path) for rule in rules(r) for c in rule.inputs["conditions"]
               for v in c["pathPattern"]["values"])


# --- the listener ----------------------------------------------------------------------------------

def test_https_listener_logs_in_then_forwards(variant):
    key, sso, r = variant
    actions = sorted(https_listener(r).inputs["defaultActions"], key=lambda a: a["order"])
    assert [a["type"] for a in actions] == [f"authenticate-{sso['provider']}", "forward"]
    assert [a["order"] for a in actions] == [1, 2]
    assert actions[1]["targetGroupArn"] == r.one("aws:lb/targetGroup:TargetGroup").outputs["arn"]
    auth = actions[0]["authenticateOidc" if sso["provider"] == "oidc" else "authenticateCognito"]
    assert auth["onUnauthenticatedRequest"] == "authenticate"
    assert auth["scope"] == "openid email"
    assert auth["sessionTimeout"] == sso.get("sessionTimeoutSeconds", 43200)
    if sso["provider"] == "oidc":
        for setting, field in (("issuer", "issuer"), ("authorizationEndpoint", "authorizationEndpoint"),
                               ("tokenEndpoint", "tokenEndpoint"), ("userInfoEndpoint", "userInfoEndpoint"),
                               ("clientId", "clientId")):
            assert auth[field] == sso[setting]
    else:
        assert (auth["userPoolArn"], auth["userPoolClientId"], auth["userPoolDomain"]) == (
            sso["userPoolArn"], sso["userPoolClientId"], sso["userPoolDomain"])
    # HTTP only redirects to HTTPS: nobody reaches the server around the login.
    (http,) = [x for x in r.of_type(LISTENER) if x.name == "mlflow-service-http"]
    assert [a["type"] for a in http.inputs["defaultActions"]] == ["redirect"]


def test_programmatic_paths_skip_the_login_in_rules_of_higher_priority(variant):
    _, _, r = variant
    found = rules(r)
    listener_arn = https_listener(r).outputs["arn"]
    tg = r.one("aws:lb/targetGroup:TargetGroup").outputs["arn"]
    assert [x.inputs["priority"] for x in found] == [sso_mod.RULE_PRIORITY_BASE + i for i in range(len(found))]
    values = []
    for rule in found:
        assert rule.inputs["listenerArn"] == listener_arn
        assert rule.inputs["actions"] == [{"type": "forward", "targetGroupArn": tg}]  # no authenticate action
        (condition,) = rule.inputs["conditions"]
        assert set(condition) == {"pathPattern"}
        assert 1 <= len(condition["pathPattern"]["values"]) <= sso_mod.MAX_CONDITION_VALUES
        values += condition["pathPattern"]["values"]
    assert values == ["/api/*", "/v1/traces", "/health", "/version"]


@pytest.mark.parametrize("path", ["/api/2.0/mlflow/runs/log-metric", "/api/2.0/mlflow-artifacts/artifacts/1/a.bin",
                                  "/api/3.0/mlflow/traces", "/api/2.0/mlflow/users/create", "/v1/traces", "/health",
                                  "/version"])
def test_client_paths_forward_without_login(path):
    assert forwarded_without_login(run_of("prod-oidc"), path)


@pytest.mark.parametrize("path", ["/", "/static-files/static/js/main.js", "/ajax-api/2.0/mlflow/experiments/search",
                                  "/get-artifact", "/model-versions/get-artifact", "/graphql",
                                  "/gateway/mlflow/v1/chat/completions", "/signup", "/API/2.0/mlflow/runs/get",
                                  "/healthz", "/oauth2/idpresponse"])
def test_ui_paths_and_unknown_paths_are_behind_the_login(path):
    assert not forwarded_without_login(run_of("prod-oidc"), path)


def test_rules_are_split_at_five_condition_values():
    paths = tuple(f"/p{i}/*" for i in range(11))
    assert [len(c) for c in sso_mod.path_chunks(paths)] == [5, 5, 1]
    assert [p for c in sso_mod.path_chunks(paths) for p in c] == list(paths)


def test_the_rules_cover_what_mlflows_client_calls():
    """MLflow 3.17.2's client: every REST prefix is under /api/, spans go to OTLP_TRACES_PATH, and
    the probes are HEALTH_ENDPOINTS; none needs a browser login."""
    from mlflow.server.security_utils import HEALTH_ENDPOINTS
    from mlflow.tracing.utils import otlp
    from mlflow.utils import rest_utils

    prefixes = [v for k, v in vars(rest_utils).items() if k.endswith("_PATH_PREFIX") and isinstance(v, str)]
    assert prefixes and all(p.startswith("/api/") for p in prefixes), prefixes
    r = run_of("prod-cognito")
    for path in [*(p + "/x" for p in prefixes), otlp.OTLP_TRACES_PATH, *HEALTH_ENDPOINTS]:
        assert forwarded_without_login(r, path), path


def test_the_ui_bundle_calls_no_programmatic_path():
    """The UI's calls carry the login's identity only on paths behind the login. Its bundle names
    api/<version> and /v1/traces only where it is no request of its own: in code snippets it shows
    the user (after ``${e}``, the tracking URI, for their own programs), in the artifact view's list
    of proxy URL prefixes it strips (next to the ajax-api/ one), and as the gateway path it hands to
    the server's ajax-api gateway proxy."""
    import mlflow

    build = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    own_calls, snippets = set(), 0
    files = sorted(build.glob("*.js"))
    assert files, build
    for f in files:
        text = f.read_text(errors="replace")
        for m in re.finditer(r"(?<!ajax-)(api/\d\.\d[^\"'`\s]{0,60}|/v1/traces)", text):
            before = text[max(0, m.start() - 8):m.start()]
            if re.search(r"\$\{\w+\}/?$", before):  # `${trackingUri}/api/...` in a snippet for the user
                snippets += 1
            else:
                own_calls.add(before[-2:] + m.group(1))
    assert snippets >= 1
    assert own_calls <= {'["api/2.0/mlflow-artifacts/artifacts/', ':"api/2.0/endpoints/'}, own_calls


# --- the server task -----------------------------------------------------------------------------------

def test_server_task_gets_the_sso_variables(variant):
    _, sso, r = variant
    env = server_env(r)
    got = {k: v for k, v in env.items() if k.startswith("MLFLOW_SSO_")}
    expected = {"MLFLOW_SSO_SIGNER_ARN": r.one("aws:lb/loadBalancer:LoadBalancer").outputs["arn"],
                "MLFLOW_SSO_USER_CLAIM": "email",
                "MLFLOW_SSO_ADMIN_USERS": ",".join(sso.get("adminUsers", []))}
    if sso["provider"] == "oidc":
        expected.update(MLFLOW_SSO_ISSUER="https://idp.example.com", MLFLOW_SSO_ADMIN_GROUP_CLAIM="groups",
                        MLFLOW_SSO_ADMIN_GROUP="mlflow-admins")
    else:
        expected["MLFLOW_SSO_ISSUER"] = f"https://cognito-idp.{REGION}.amazonaws.com/{POOL_ID}"
    assert got == expected
    assert re.fullmatch(r"arn:aws:elasticloadbalancing:[a-z0-9-]+:\d{12}:loadbalancer/app/[^/]+/[^/]+",
                        got["MLFLOW_SSO_SIGNER_ARN"])
    for task in ("mlflow-service-dbadmin-task", "mlflow-service-gc-task"):
        if any(x.name == task for x in r.resources):
            assert not [k for k in server_env(r, task) if k.startswith("MLFLOW_SSO_")], task


# --- the client secret -----------------------------------------------------------------------------------

def test_oidc_client_secret_comes_only_from_secrets_manager(variant):
    key, sso, r = variant
    calls = [args for token, args in r.recorder.calls if token == GET_SECRET]
    listener = https_listener(r)
    if sso["provider"] == "cognito":
        assert calls == []  # the ALB reads the app client's secret from Cognito itself
        assert SECRET_STRING not in json.dumps(listener.inputs)
        return
    assert [c["secretId"] for c in calls] == [SECRET_ARN]
    # A secret inside an input makes the whole input secret (the SDK marks the top-level property).
    assert is_secret(listener.raw_inputs["defaultActions"]), "the client secret must be a Pulumi secret"
    assert listener.inputs["defaultActions"][0]["authenticateOidc"]["clientSecret"] == SECRET_STRING
    # nowhere else: not in the stack's config, no other resource (task definitions included)
    stack, overrides = VARIANTS[key]
    assert SECRET_STRING not in json.dumps(stack_config(stack, **overrides))
    for res in r.resources:
        if res is not listener:
            assert SECRET_STRING not in json.dumps(res.inputs, default=str), res.name
    for task in [x for x in r.resources if x.type == "aws:ecs/taskDefinition:TaskDefinition"]:
        for c in task.container_definitions():
            assert SECRET_STRING not in json.dumps(c)
            assert not [s for s in c.get("secrets", []) if "SSO" in s["name"]]


# --- the load balancer's egress, the output --------------------------------------------------------------

def test_load_balancer_may_reach_the_idp_on_443(variant):
    _, _, r = variant
    sg = alb_sg(r).id
    mine = sorted((x for x in r.of_type(EGRESS) if x.inputs["securityGroupId"] == sg), key=lambda x: x.name)
    assert [x.name for x in mine] == ["mlflow-service-alb-to-idp", "mlflow-service-alb-to-service"]
    idp = mine[0].inputs
    assert (idp["ipProtocol"], idp["fromPort"], idp["toPort"], idp["cidrIpv4"]) == ("tcp", 443, 443, "0.0.0.0/0")


def test_callback_url_is_a_stack_output(variant):
    key, _, r = variant
    domain = VARIANTS[key][1]["domainName"]
    assert r.exports["ssoCallbackUrl"] == f"https://{domain}/oauth2/idpresponse"


# --- without sso: nothing changes ----------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_without_sso_nothing_of_it_exists(stack, dev, prod):
    r = {"dev": dev, "prod": prod}[stack]
    assert r.of_type(RULE) == []
    assert not [t for t, _ in r.recorder.calls if t == GET_SECRET]
    assert not [k for k in server_env(r) if k.startswith("MLFLOW_SSO_")]
    assert "ssoCallbackUrl" not in r.exports
    sg = alb_sg(r).id
    assert [x.name for x in r.of_type(EGRESS) if x.inputs["securityGroupId"] == sg] == ["mlflow-service-alb-to-service"]
    for listener in r.of_type(LISTENER):
        assert [a["type"] for a in listener.inputs["defaultActions"]] in (["forward"], ["redirect"])
        assert all("order" not in a for a in listener.inputs["defaultActions"])


def _graph(r: Run) -> dict[str, str]:
    return {x.urn: json.dumps(x.inputs, sort_keys=True, default=str) for x in r.resources}


@pytest.mark.parametrize("key", ["prod-oidc", "dev-cognito"])
def test_sso_adds_two_kinds_of_resource_and_changes_two_inputs_only(key, prod):
    """The rest of the graph is the same with and without sso: the same resources, the same inputs."""
    stack, overrides = VARIANTS[key]
    without = prod if stack == "prod" else run_program(stack, **{k: v for k, v in overrides.items() if k != "sso"})
    a, b = _graph(without), _graph(run_of(key))
    added = sorted(u.rsplit("::", 1)[1] for u in set(b) - set(a))
    assert added == ["mlflow-service-alb-to-idp", "mlflow-service-programmatic-0"]
    assert set(a) - set(b) == set()
    changed = sorted(u.rsplit("::", 1)[1] for u in a if a[u] != b[u])
    assert changed == ["mlflow-service-https", "mlflow-service-task"]
