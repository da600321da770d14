"""IAM roles of the Service's two task definitions, built by :class:`components.service.Service`
with itself as parent (the server's roles were part of ``service.py``; their names and URNs are
unchanged).

Every role trusts ``ecs-tasks.amazonaws.com`` of this account only. Each policy names its
resources; the one ``*`` is ``ecr:GetAuthorizationToken``, which IAM cannot scope.

- Server, execution role: pull the image, write the log group, read its three secrets (the
  application user's database secret, the MLflow admin user's, the Flask key). Never the master
  secret.
- Server, task role: the artifact prefix of the bucket, nothing else.
- Admin step, execution role: pull the image, write the log group, read the *master* secret (RDS's,
  for ``MLFLOW_DB_ADMIN_USER``/``PASSWORD``) and nothing else.
- Admin step, task role: read and write the application user's secret (the step generates its
  password the first time and stores it), nothing else.

RDS encrypts its master secret with the AWS managed key ``aws/secretsmanager`` (no
``master_user_secret_kms_key_id``): its key policy lets Secrets Manager decrypt for any principal
of the account allowed to read the secret, so no ``kms:Decrypt`` grant is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws

from components.naming import fitted_name


@dataclass(frozen=True)
class Roles:
    execution_role: aws.iam.Role
    task_role: aws.iam.Role
    policies: list[aws.iam.RolePolicy]
    """What a task of these roles must wait for (ECS assumes the role at start)."""


def statement(actions: list[str], resources: list, condition: Optional[dict] = None, sid: str = "") -> dict:
    """One ``Allow`` statement."""
    st: dict = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if sid:
        st["Sid"] = sid
    if condition:
        st["Condition"] = condition
    return st


def _trust(account_id: str) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ecs-tasks.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        }],
    })


def _document(statements: list[dict]) -> pulumi.Output[str]:
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": statements})


def _start_statements(log_group_arn: pulumi.Input[str], repository_arn: Optional[pulumi.Input[str]]) -> list[dict]:
    """What ECS needs to start any of the two tasks: write the log group, pull the image."""
    out = [statement(["logs:CreateLogStream", "logs:PutLogEvents"], [pulumi.Output.concat(log_group_arn, ":*")],
                     sid="WriteOwnLogs")]
    if repository_arn is not None:
        out += [
            statement(["ecr:GetAuthorizationToken"], ["*"], sid="EcrLogin"),  # cannot be scoped
            statement(["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
                      [repository_arn], sid="PullOwnImage"),
        ]
    return out


def server_roles(name: str, *, parent: pulumi.Resource, account_id: str, log_group_arn: pulumi.Input[str],
                 secret_arns: list[pulumi.Input[str]], repository_arn: Optional[pulumi.Input[str]],
                 bucket_arn: pulumi.Input[str], prefix: str, bucket_kms_key_arn: Optional[str],
                 tags: dict[str, str]) -> Roles:
    """The MLflow server's execution role and task role (``<name>-execution-role``, ``<name>-task-role``)."""
    child = pulumi.ResourceOptions(parent=parent)
    assume = _trust(account_id)
    execution_role = aws.iam.Role(f"{name}-execution-role", assume_role_policy=assume,
                                  description="ECS: pull the MLflow image, write its logs, read its secrets",
                                  tags=tags, opts=child)
    exec_statements = _start_statements(log_group_arn, repository_arn)
    exec_statements.insert(1, statement(["secretsmanager:GetSecretValue"], secret_arns, sid="ReadOwnSecrets"))
    exec_policy = aws.iam.RolePolicy(f"{name}-execution-policy", role=execution_role.id,
                                     policy=_document(exec_statements), opts=child)

    task_role = aws.iam.Role(f"{name}-task-role", assume_role_policy=assume,
                             description="MLflow server: artifacts under its bucket prefix only", tags=tags,
                             opts=child)
    task_statements = [
        # PutObject also covers CreateMultipartUpload, UploadPart and CompleteMultipartUpload; MLflow
        # aborts uploads (AbortMultipartUpload) but never lists their parts (tests/server/test_iam_s3.py)
        statement(["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                  [pulumi.Output.concat(bucket_arn, f"/{prefix}/*")], sid="ArtifactObjects"),
        # Unconditioned: the entrypoint's start-up check is HeadBucket, which AWS authorizes as
        # s3:ListBucket with no s3:prefix in the request context, and a condition on a key the
        # context lacks is false (IAM User Guide, "Condition operators"). A StringLike s3:prefix
        # grant therefore denies it; no condition key tells HeadBucket from an unprefixed list,
        # so any grant that allows it lets the role list the whole (dedicated) bucket anyway.
        statement(["s3:ListBucket"], [bucket_arn], sid="ListArtifactBucket"),
    ]
    if bucket_kms_key_arn:
        task_statements.append(statement(["kms:Decrypt", "kms:GenerateDataKey"], [bucket_kms_key_arn],
                                         sid="ArtifactKey"))
    task_policy = aws.iam.RolePolicy(f"{name}-task-policy", role=task_role.id, policy=_document(task_statements),
                                     opts=child)
    return Roles(execution_role, task_role, [exec_policy, task_policy])


def admin_roles(name: str, *, parent: pulumi.Resource, account_id: str, log_group_arn: pulumi.Input[str],
                master_secret_arn: pulumi.Input[str], app_secret_arn: pulumi.Input[str],
                repository_arn: Optional[pulumi.Input[str]], tags: dict[str, str],
                takeover_object_arns: Optional[list[pulumi.Input[str]]] = None,
                bucket_kms_key_arn: Optional[str] = None) -> Roles:
    """The admin step's execution role and task role (``<name>-dbadmin-exec-role``,
    ``<name>-dbadmin-task-role``; a name prefix where the autoname would pass IAM's 64 characters)."""
    child = pulumi.ResourceOptions(parent=parent)
    assume = _trust(account_id)
    execution_role = aws.iam.Role(
        f"{name}-dbadmin-exec-role", assume_role_policy=assume,
        description="ECS: pull the MLflow image, write the admin step's logs, read the database master secret",
        tags=tags, **fitted_name(f"{name}-dbadmin-exec-role", 64, 38), opts=child)
    exec_statements = _start_statements(log_group_arn, repository_arn)
    exec_statements.insert(1, statement(["secretsmanager:GetSecretValue"], [master_secret_arn],
                                        sid="ReadMasterSecret"))
    exec_policy = aws.iam.RolePolicy(f"{name}-dbadmin-exec-policy", role=execution_role.id,
                                     policy=_document(exec_statements), opts=child)
    task_role = aws.iam.Role(
        f"{name}-dbadmin-task-role", assume_role_policy=assume,
        description="MLflow admin step: read and write the database application user's secret only", tags=tags,
        **fitted_name(f"{name}-dbadmin-task-role", 64, 38), opts=child)
    task_statements = [statement(["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"],
                                 [app_secret_arn], sid="ApplicationUserSecret")]
    if takeover_object_arns:  # a takeover (components/takeover.py): read exactly the dump objects
        task_statements.append(statement(["s3:GetObject"], takeover_object_arns, sid="TakeoverDumps"))
        if bucket_kms_key_arn:
            task_statements.append(statement(["kms:Decrypt"], [bucket_kms_key_arn], sid="TakeoverDumpsKey"))
    task_policy = aws.iam.RolePolicy(
        f"{name}-dbadmin-task-policy", role=task_role.id, opts=child, policy=_document(task_statements))
    return Roles(execution_role, task_role, [exec_policy, task_policy])
