"""Every S3 call of the server and of its clients is allowed by the task role's policy as the
program renders it, with IAM enforced.

The task role's policies are read from the Pulumi program run under the unit tests' mocks
(``Pulumi.dev.yaml``; tests/support/iam.py), bucket, prefix and region included, and put
unchanged on a role of moto's server with IAM enforcement on (moto's docs, "IAM-like Access
Control": ``INITIAL_NO_AUTH_ACTION_COUNT``). The entrypoint runs as a process with a session of
that role, as an ECS task does, against MariaDB; the real MLflow client then uploads, lists,
downloads and deletes through the proxy, and uploads (multipart) and downloads through presigned
URLs straight to S3, and aborts a multipart upload.

What moto evaluates and what it does not (read from moto 5.2.5, moto/iam/access_control.py and
policy_conditions.py; unchanged upstream): it matches Action and Resource with ``*`` wildcards and
lets an explicit Deny win, but it passes no request context to identity policies and implements
only the ``StringEquals`` operator: every other operator, ``StringLike`` included, is ignored, so
the ``s3:prefix`` condition never refuses anything there. It also authorizes HeadBucket as the
non-existent ``s3:HeadBucket``, crashes on presigned URLs and authorizes DeleteObjects on the
bucket instead of each key: tests/support/moto_iam.py makes those three follow AWS's documents.

So moto alone cannot fail the way AWS fails for a ListBucket grant conditioned on ``s3:prefix``.
AWS: HeadBucket needs ``s3:ListBucket`` (S3 API Reference, HeadBucket, "Permissions") and its
request carries no ``prefix``; "If the key that you specify in a policy condition is not present
in the request context, the values do not match and the condition is false" (IAM User Guide, "IAM
JSON policy elements: Condition operators"; true only for negated operators and ...IfExists). So
these tests also judge the rendered policy, and every request moto saw, with an evaluator of
exactly those rules (tests/support/iam.py), using the ``s3:prefix`` each request really carried.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, DB_PASSWORD, SECRET_KEY, unique
from tests.support import iam
from tests.support.dbadmin import drop_app_user, prepare_databases
from tests.support.peers import S3Server
from tests.support.server import Server, client_env, database_env

MiB = 1024 * 1024
BIG = 12 * MiB  # above boto3's 8 MiB multipart threshold (proxied) and the client threshold below (presigned)
PROXIED = {"MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false", "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}
PRESIGNED = {"MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": None, "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": None,
             "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(10 * MiB),
             "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(5 * MiB),  # S3's smallest part
             "MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE": str(5 * MiB)}


@pytest.fixture(scope="module")
def role() -> iam.TaskRole:
    # allowedCidrs: a setting the program requires without HTTPS; it does not touch the task role
    return iam.render_task_role("dev", allowedCidrs=["203.0.113.0/24"])


@pytest.fixture(scope="module")
def task(role, mariadb):
    """moto with IAM enforced, the program's bucket, a session of the task role, the entrypoint."""
    name, auth_name, user = unique("t"), unique("a"), unique("u")[:30]
    prepare_databases(mariadb, user, DB_PASSWORD, name, auth_name)  # the admin step, as a deployment runs it
    try:
        with S3Server(enforce_iam=True) as s3:
            admin = s3.client(region=role.region)
            admin.create_bucket(Bucket=role.bucket, CreateBucketConfiguration={"LocationConstraint": role.region})
            # no versioning here (IAM is the same with it): moto then lists a "directory" holding only
            # delete markers as a CommonPrefix, which AWS does not
            session = iam.assume_task_role(s3.endpoint_url, role.region, s3.admin, role)
            env = {**database_env(mariadb, user, DB_PASSWORD, name, auth_name), **session,
                   "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                   "MLFLOW_ARTIFACTS_DESTINATION": role.destination, "AWS_REGION": role.region,
                   "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url, "AWS_ENDPOINT_URL_S3": s3.endpoint_url,
                   "NO_PROXY": "127.0.0.1,localhost"}
            with Server(env) as server:
                yield s3, server
    finally:
        for db in (name, auth_name):
            with contextlib.suppress(Exception):
                mariadb.drop_database(db)
        with contextlib.suppress(Exception):
            drop_app_user(mariadb, user)


def test_the_rendered_policy_allows_head_bucket(role):
    """The entrypoint's start-up check is HeadBucket: ``s3:ListBucket`` on the bucket ARN with no
    ``s3:prefix`` in the request context. A grant conditioned on s3:prefix (StringLike) is false
    there, so AWS denies it and the entrypoint exits "access to the artifact bucket ... is denied";
    moto ignores the condition, hence this check of the policy itself."""
    decision = iam.decide(role.policies, "s3:ListBucket", role.bucket_arn, {})
    assert decision == iam.ALLOW, f"HeadBucket on {role.bucket_arn}: {decision} by {json.dumps(role.policies)}"


def test_the_evaluator_follows_the_documented_condition_rules():
    """IAM User Guide, "Condition operators": a missing key makes a condition false, except for the
    negated operators and ...IfExists; StringLike's * and ? are wildcards; unknown things raise."""
    arn = "arn:aws:s3:::b"
    cond = {"StringLike": {"s3:prefix": ["p", "p/*"]}}
    policy = [{"Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": arn, "Condition": cond}]}]
    assert iam.decide(policy, "s3:ListBucket", arn, {}) == iam.IMPLICIT_DENY
    assert iam.decide(policy, "s3:listbucket", arn, {"s3:prefix": "p/1/"}) == iam.ALLOW
    assert iam.decide(policy, "s3:ListBucket", arn, {"s3:prefix": "q/"}) == iam.IMPLICIT_DENY
    assert iam.decide(policy, "s3:ListBucket", arn + "x", {"s3:prefix": "p"}) == iam.IMPLICIT_DENY
    assert iam.condition_holds({"StringLikeIfExists": {"s3:prefix": "p/*"}}, {})
    assert iam.condition_holds({"StringNotLike": {"s3:prefix": "p/*"}}, {})
    assert not iam.condition_holds({"StringEquals": {"s3:prefix": ["p/?"]}}, {"s3:prefix": "p/x"})
    assert iam.condition_holds({"StringLike": {"s3:prefix": ["p/?"]}}, {"s3:prefix": "p/x"})
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}
    assert iam.decide([*policy, {"Statement": [deny]}], "s3:ListBucket", arn, {"s3:prefix": "p"}) == iam.EXPLICIT_DENY
    for unsupported in ({"Bool": {"aws:SecureTransport": "true"}}, {"StringEquals": {"s3:delimiter": "/"}}):
        with pytest.raises(iam.Unsupported):
            iam.condition_holds(unsupported, {})


def _file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _workload(server: Server, tmp: Path) -> tuple[str, str]:
    """Proxied upload/list/download/delete, presigned multipart upload and download, an abort."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    src = tmp / "src"
    shas = {rel: _file(src / rel, size) for rel, size in (("small.txt", 1000), ("nested/b.bin", 300_000),
                                                          ("big.bin", BIG))}
    base = {**server.client_env(ADMIN, ADMIN_PASSWORD), "NO_PROXY": "127.0.0.1,localhost",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    with client_env(base):
        client = MlflowClient(server.url)
        run = client.create_run(client.create_experiment(f"iam-{uuid.uuid4().hex[:8]}"))
        run_id, repo = run.info.run_id, get_artifact_repository(run.info.artifact_uri)
        with client_env(PROXIED):
            client.log_artifacts(run_id, str(src), "proxied")
            assert sorted(f.path for f in client.list_artifacts(run_id, "proxied")) == [
                "proxied/big.bin", "proxied/nested", "proxied/small.txt"]
            down = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="proxied",
                                                            dst_path=str(tmp / "down-proxied"),
                                                            tracking_uri=server.url))
            assert {rel: _sha(down / rel) for rel in shas} == shas
        with client_env(PRESIGNED):
            client.log_artifact(run_id, str(src / "big.bin"), "presigned")
            down = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="presigned/big.bin",
                                                            dst_path=str(tmp / "down-presigned"),
                                                            tracking_uri=server.url))
            assert _sha(down) == shas["big.bin"]
            upload = repo.create_multipart_upload(str(src / "big.bin"), 2, "aborted")
            repo.abort_multipart_upload(str(src / "big.bin"), upload.upload_id, "aborted")
        repo.delete_artifacts("proxied")  # DELETE /api/2.0/mlflow-artifacts/artifacts/<path>
        assert client.list_artifacts(run_id, "proxied") == []
    return run_id, run.info.experiment_id


def test_every_call_of_the_workload_is_allowed_by_the_rendered_policy(role, task, tmp_path):
    """moto (IAM enforced) allows every request of the task role's session, and so do AWS's condition
    rules applied to the request context each one carried; the HeadBucket is among them; presigned
    URLs act as their signer (S3 User Guide, "Sharing objects with presigned URLs"); and every
    action the policy grants was needed (least privilege on actions)."""
    s3, server = task
    assert role.destination.startswith(f"s3://{role.bucket}/")  # the bucket the policy names
    run_id, exp_id = _workload(server, tmp_path)
    prefix = f"{role.destination.split('/', 3)[3]}/{exp_id}/{run_id}/artifacts/"
    keys = sorted(o["Key"][len(prefix):] for o in
                  s3.client(region=role.region).list_objects_v2(Bucket=role.bucket, Prefix=prefix).get("Contents", []))
    assert keys == ["presigned/big.bin"]  # the proxied ones deleted, the aborted upload never completed
    log = server.output()
    assert "/mpu/create" in log and "/mpu/abort" in log and "/mlflow-artifacts/presigned/" in log

    entries = [json.loads(line) for line in s3.audit_log.read_text().splitlines()]
    mine = [e for e in entries if ":assumed-role/mlflow-task/" in e["principal"]]
    requests = [f"{e['action']} {e['resource']} {json.dumps(e['context'])}" for e in mine]
    assert "s3:ListBucket " + role.bucket_arn + " {}" in requests  # the entrypoint's HeadBucket
    assert [r for r, e in zip(requests, mine) if e["moto"] != "allow"] == [], "refused by moto"
    assert [r for r, e in zip(requests, mine)
            if iam.decide(role.policies, e["action"], e["resource"], e["context"]) != iam.ALLOW] == [], \
        "refused by AWS's condition rules (which moto skips)"
    assert {e["action"] for e in mine if e["presigned"]} == {"s3:PutObject", "s3:GetObject"}
    unused = iam.granted_actions(role.policies) - {e["action"] for e in mine}
    assert unused == set(), "granted to the task role but never needed by the server or its clients"
