"""The gc task's role as the program renders it, with IAM enforced (moto + AWS's condition rules):
`entrypoint.py gc` (image/gc_step.py) with a session of exactly that role collects what it should
(tests/server/test_gc.py has the collection itself), and every request it made is allowed, every
granted action needed.

The role is rendered in a child process (`python -m tests.server.test_gc_role`, the `__main__`
block below): the program under the unit tests' mocks with gc on.
"""

from __future__ import annotations

import contextlib

import pytest
import sqlalchemy

from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.server.test_gc import DAYS, _gc
from tests.support.server import Server, client_env


def _render_gc_role() -> dict:
    """Run in a child process: the program under the unit tests' mocks with gc on, the gc task's
    role policies, bucket, destination and region (as tests/support/iam.py does for the server's)."""
    import program
    from tests.unit.harness import run, stack_config

    r = run(program.define_stack, stack_config("dev", allowedCidrs=["203.0.113.0/24"], gcOlderThanDays="7"), "dev")
    task_def = r.named("mlflow-service-gc-task")
    (role,) = [x for x in r.of_type("aws:iam/role:Role") if x.outputs.get("arn") == task_def.inputs["taskRoleArn"]]
    refs = {role.id, role.outputs.get("name")} - {None, ""}
    if [a for a in r.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.inputs.get("role") in refs]:
        raise AssertionError("the gc task role has attached policies: render them too")
    (container,) = task_def.container_definitions()
    env = {e["name"]: e["value"] for e in container["environment"]}
    bucket = r.one("aws:s3/bucket:Bucket").outputs
    return {"policies": [p.policy() for p in r.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs.get("role") in refs],
            "bucket": bucket["bucket"], "bucket_arn": bucket["arn"],
            "destination": env["MLFLOW_ARTIFACTS_DESTINATION"], "region": env["AWS_REGION"]}


@pytest.fixture(scope="module")
def gc_role():
    import json
    import subprocess

    from tests.support.iam import PYTHON, ROOT, TaskRole

    p = subprocess.run([PYTHON, "-m", "tests.server.test_gc_role"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0 and "@@ROLE@@" in p.stdout, p.stderr[-3000:]
    return TaskRole(**json.loads(p.stdout.split("@@ROLE@@", 1)[1]))


def test_gc_under_the_rendered_least_privilege_role(gc_role, mariadb, tmp_path):
    """The gc task with a session of its task role exactly as rendered, on moto with IAM enforced
    (moto_iam.py: DeleteObjects authorized per key as s3:DeleteObject, S3 API Reference), MariaDB:
    old deleted runs lose their objects, nothing else does; every request it made is allowed by
    moto and by AWS's condition rules applied to the s3:prefix it carried (IAM User Guide,
    "Condition operators"; moto skips StringLike); and every granted action was needed."""
    import json

    from mlflow import MlflowClient

    from tests.server.conftest import DB_PASSWORD, SECRET_KEY, unique
    from tests.support import iam
    from tests.support.dbadmin import drop_app_user, prepare_databases
    from tests.support.peers import S3Server
    from tests.support.server import database_env

    role = gc_role
    assert [st["Action"] for p in role.policies for st in p["Statement"]] == [["s3:ListBucket"], ["s3:DeleteObject"]]
    name, auth_name, user = unique("t"), unique("a"), unique("u")[:30]
    prepare_databases(mariadb, user, DB_PASSWORD, name, auth_name)
    src = tmp_path / "a.txt"
    src.write_text("artifact\n")
    try:
        with S3Server(enforce_iam=True) as s3:
            admin = s3.client(region=role.region)
            admin.create_bucket(Bucket=role.bucket, CreateBucketConfiguration={"LocationConstraint": role.region})
            base = {**database_env(mariadb, user, DB_PASSWORD, name, auth_name),
                    "MLFLOW_ARTIFACTS_DESTINATION": role.destination, "AWS_REGION": role.region,
                    "MLFLOW_S3_ENDPOINT_URL": s3.endpoint_url, "AWS_ENDPOINT_URL_S3": s3.endpoint_url,
                    "NO_PROXY": "127.0.0.1,localhost"}
            server_env = {**base, "AWS_ACCESS_KEY_ID": s3.admin["AWS_ACCESS_KEY_ID"],
                          "AWS_SECRET_ACCESS_KEY": s3.admin["AWS_SECRET_ACCESS_KEY"],
                          "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
            runs = {}
            with Server(server_env) as server, client_env(server.client_env(ADMIN, ADMIN_PASSWORD)):
                client = MlflowClient(server.url)
                exp = client.create_experiment("gc-iam")
                for label in ("old", "old_missing", "recent", "live"):
                    rid = client.create_run(exp).info.run_id
                    client.log_artifact(rid, str(src))
                    client.log_text(rid, "x", "d/b.txt")
                    if label != "live":
                        client.delete_run(rid)
                    runs[label] = rid
            engine = sqlalchemy.create_engine(mariadb.url(user, DB_PASSWORD, name), poolclass=sqlalchemy.pool.NullPool)
            with engine.begin() as c:
                for label in ("old", "old_missing"):
                    c.execute(sqlalchemy.text("UPDATE runs SET deleted_time = deleted_time - :d WHERE run_uuid = :r"),
                              {"d": (DAYS + 10) * 86_400_000, "r": runs[label]})
            engine.dispose()
            root = role.destination.split("/", 3)[3]
            prefix = {k: f"{root}/{exp}/{rid}/artifacts/" for k, rid in runs.items()}
            for key in admin.list_objects_v2(Bucket=role.bucket, Prefix=prefix["old_missing"])["Contents"]:
                admin.delete_object(Bucket=role.bucket, Key=key["Key"])
            session = iam.assume_task_role(s3.endpoint_url, role.region, s3.admin, role, name="mlflow-gc")
            result = _gc({**base, **session})
            assert result.returncode == 0, result.output
            assert "gc: done: 2 run(s) deleted, 0 skipped, 0 not tried" in result.output

            def keys(p):
                return sorted(o["Key"] for o in admin.list_objects_v2(Bucket=role.bucket, Prefix=p).get("Contents", []))
            assert keys(prefix["old"]) == [] and keys(prefix["old_missing"]) == []
            for label in ("recent", "live"):
                assert keys(prefix[label]) == [prefix[label] + "a.txt", prefix[label] + "d/b.txt"], label

            entries = [json.loads(line) for line in s3.audit_log.read_text().splitlines()]
            mine = [e for e in entries if ":assumed-role/mlflow-gc/" in e["principal"]]
            requests = [f"{e['action']} {e['resource']} {json.dumps(e['context'])}" for e in mine]
            assert mine, "gc made no S3 request as its role"
            assert [r for r, e in zip(requests, mine) if e["moto"] != "allow"] == [], "refused by moto"
            assert [r for r, e in zip(requests, mine)
                    if iam.decide(role.policies, e["action"], e["resource"], e["context"]) != iam.ALLOW] == [], \
                "refused by AWS's condition rules (which moto skips)"
            assert iam.granted_actions(role.policies) == {e["action"] for e in mine}, "granted but never needed"
            outside = f"{role.bucket_arn}/elsewhere/x"
            assert iam.decide(role.policies, "s3:DeleteObject", outside, {}) == iam.IMPLICIT_DENY
            assert iam.decide(role.policies, "s3:ListBucket", role.bucket_arn, {"s3:prefix": "elsewhere/"}) == \
                iam.IMPLICIT_DENY
            assert iam.decide(role.policies, "s3:GetObject", f"{role.bucket_arn}/{prefix['live']}a.txt", {}) == \
                iam.IMPLICIT_DENY
    finally:
        for db in (name, auth_name):
            with contextlib.suppress(Exception):
                mariadb.drop_database(db)
        with contextlib.suppress(Exception):
            drop_app_user(mariadb, user)


if __name__ == "__main__":
    import json
    import sys

    sys.stdout.write("\n@@ROLE@@" + json.dumps(_render_gc_role()) + "\n")

