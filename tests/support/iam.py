"""IAM for the S3 tests: the task role's policies as the program renders them, an evaluator with
AWS's condition rules, and the principals on moto's IAM-enforcing server.

    role = render_task_role()                 # the Pulumi program under mocks, in a child process
    decide(role.policies, "s3:ListBucket", role.bucket_arn, {})   # -> ALLOW / IMPLICIT_DENY / ...

    admin = bootstrap_admin(endpoint, region)  # during moto's unauthenticated window
    creds = assume_task_role(endpoint, region, admin, role)   # a session of a role holding exactly
                                                               # role.policies, like an ECS task's

The evaluator (`decide`) implements the identity-policy logic of "Policy evaluation logic" (IAM User
Guide): an explicit Deny wins, else any Allow, else an implicit deny; Action matched case-
insensitively and Resource case-sensitively with the ``*`` and ``?`` wildcards; and the rule of
"IAM JSON policy elements: Condition operators": "If the key that you specify in a policy
condition is not present in the request context, the values do not match and the condition is
false", true for a negated operator (StringNotEquals, StringNotLike) and for the ``...IfExists``
variants. It knows the operators StringEquals, StringNotEquals, StringLike, StringNotLike (with
IfExists) and the context key ``s3:prefix``; anything else in a policy raises `Unsupported`, so a
policy it cannot judge never passes silently.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable

ALLOW, IMPLICIT_DENY, EXPLICIT_DENY = "allow", "implicit deny", "explicit deny"
STRING_OPERATORS = {"StringEquals": (False, False), "StringNotEquals": (False, True),
                    "StringLike": (True, False), "StringNotLike": (True, True)}
"""operator -> (wildcards, negated)"""
MODELLED_KEYS = frozenset({"s3:prefix"})


class Unsupported(ValueError):
    """The policy uses an element, operator or condition key this evaluator does not model."""


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def condition_holds(condition: dict, context: dict[str, str]) -> bool:
    """Every operator block and every key in it must hold (AND); the values of one key are ORed."""
    for operator, keys in condition.items():
        base, if_exists = (operator[:-len("IfExists")], True) if operator.endswith("IfExists") else (operator, False)
        if base not in STRING_OPERATORS:
            raise Unsupported(f"condition operator {operator!r}")
        wildcards, negated = STRING_OPERATORS[base]
        for key, expected in keys.items():
            if key not in MODELLED_KEYS:
                raise Unsupported(f"condition key {key!r}")
            if key not in context:
                holds = if_exists or negated
            else:
                matched = any(_wildcard(e, context[key]) if wildcards else e == context[key]
                              for e in _as_list(expected))
                holds = matched != negated
            if not holds:
                return False
    return True


def _statement_applies(st: dict, action: str, resource: str, context: dict[str, str]) -> bool:
    for element in ("NotAction", "NotResource", "Principal", "NotPrincipal"):
        if element in st:
            raise Unsupported(f"statement element {element!r} in an identity policy")
    if not any(_wildcard(a, action, ignore_case=True) for a in _as_list(st["Action"])):
        return False
    if not any(_wildcard(r, resource) for r in _as_list(st["Resource"])):
        return False
    return condition_holds(st.get("Condition") or {}, context)


def decide(policies: list[dict], action: str, resource: str, context: dict[str, str] | None = None) -> str:
    """ALLOW, IMPLICIT_DENY or EXPLICIT_DENY for one request against identity policies."""
    allowed = False
    for policy in policies:
        for st in _as_list(policy["Statement"]):
            if _statement_applies(st, action, resource, context or {}):
                if st["Effect"] == "Deny":
                    return EXPLICIT_DENY
                allowed = True
    return ALLOW if allowed else IMPLICIT_DENY


def granted_actions(policies: list[dict]) -> set[str]:
    return {a for p in policies for st in _as_list(p["Statement"]) if st["Effect"] == "Allow"
            for a in _as_list(st["Action"])}


# --------------------------------------------------------------------------------------------
# The task role as the program renders it
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskRole:
    policies: list[dict]
    """Every policy document of the role the ECS task runs as (the task definition's taskRoleArn)."""
    bucket: str
    bucket_arn: str
    destination: str
    """The container's MLFLOW_ARTIFACTS_DESTINATION."""
    region: str
    """The container's AWS_REGION."""


def _render(stack: str, overrides: dict) -> dict:
    """Run in a child process: the program under the unit tests' mocks (tests/unit/harness.py)."""
    import program
    from tests.unit.harness import run, stack_config

    r = run(program.define_stack, stack_config(stack, **overrides), stack)
    task_def = r.named("mlflow-service-task")  # the server's (the admin step's has a role of its own)
    (role,) = [x for x in r.of_type("aws:iam/role:Role") if x.outputs.get("arn") == task_def.inputs["taskRoleArn"]]
    refs = {role.id, role.outputs.get("name")} - {None, ""}
    attached = [a.name for a in r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if a.inputs.get("role") in refs]
    if attached or role.inputs.get("managedPolicyArns") or role.inputs.get("inlinePolicies"):
        raise Unsupported(f"the task role has managed or inline-in-role policies ({attached}): render them too")
    (container,) = task_def.container_definitions()
    env = {e["name"]: e["value"] for e in container["environment"]}
    bucket = r.one("aws:s3/bucket:Bucket").outputs
    policies = [p.policy() for p in r.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs.get("role") in refs]
    return {"policies": policies, "bucket": bucket["bucket"], "bucket_arn": bucket["arn"],
            "destination": env["MLFLOW_ARTIFACTS_DESTINATION"], "region": env["AWS_REGION"]}


def render_task_role(stack: str = "dev", timeout: float = 180, **overrides) -> TaskRole:
    """The task role of ``Pulumi.<stack>.yaml`` plus `overrides` (settings without namespace, as in
    tests/unit/harness.stack_config); a child process keeps Pulumi's global state out of the caller."""
    p = subprocess.run([PYTHON, "-m", "tests.support.iam", stack, json.dumps(overrides)], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0 or "@@ROLE@@" not in p.stdout:
        raise RuntimeError(f"rendering the task role failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return TaskRole(**json.loads(p.stdout.split("@@ROLE@@", 1)[1]))


# --------------------------------------------------------------------------------------------
# Principals on moto's IAM-enforcing server (tests/support/moto_iam.py)
# --------------------------------------------------------------------------------------------
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def _client(service: str, endpoint: str, region: str, creds: dict[str, str]):
    import boto3

    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                        aws_session_token=creds.get("AWS_SESSION_TOKEN"))


def bootstrap_admin(endpoint: str, region: str, unauthenticated: dict[str, str]) -> dict[str, str]:
    """An IAM user allowed everything, and its access key (made in moto's unauthenticated window)."""
    iam = _client("iam", endpoint, region, unauthenticated)
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=json.dumps(ADMIN_POLICY))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def start_enforcing(endpoint: str, region: str, unauthenticated: dict[str, str], timeout: float = 10) -> None:
    """Close moto's unauthenticated window now (moto's /moto-api/reset-auth with 0), and check it."""
    import urllib.request

    import botocore.exceptions

    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=timeout) as r:
        r.read()
    try:
        _client("s3", endpoint, region, unauthenticated).list_buckets()
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] == "InvalidAccessKeyId":
            return
        raise
    raise RuntimeError("moto still accepts requests from an unknown access key: IAM is not enforced")


def assume_task_role(endpoint: str, region: str, admin: dict[str, str], role: TaskRole,
                     name: str = "mlflow-task") -> dict[str, str]:
    """A role holding exactly `role.policies`, and credentials of a session of it (AWS_* variables).

    ECS gives a task the credentials of a session of its task role; the role's trust policy names
    ``ecs-tasks.amazonaws.com``, which cannot sign a request here, so this role trusts the admin user.
    """
    iam = _client("iam", endpoint, region, admin)
    admin_arn = _client("sts", endpoint, region, admin).get_caller_identity()["Arn"]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": admin_arn},
                                                     "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    for i, document in enumerate(role.policies):
        iam.put_role_policy(RoleName=name, PolicyName=f"task-policy-{i}", PolicyDocument=json.dumps(document))
    c = _client("sts", endpoint, region, admin).assume_role(RoleArn=arn, RoleSessionName=name)["Credentials"]
    return {"AWS_ACCESS_KEY_ID": c["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": c["SecretAccessKey"],
            "AWS_SESSION_TOKEN": c["SessionToken"]}


if __name__ == "__main__":
    sys.stdout.write("\n@@ROLE@@" + json.dumps(_render(sys.argv[1], json.loads(sys.argv[2]))) + "\n")
