"""Taking over an existing MLflow (docs/takeover.md): its database dump into a new stack's empty
databases through the admin step, its artifacts copied, its users' URIs resolving through the proxy.

For real, on 127.0.0.1: an "old" MLflow (this image's MLflow 3.17.2 on its own databases and its
own bucket/prefix, artifacts either proxied or written by the clients straight to S3, as MLflow's
"Artifact Stores" documentation describes the two modes) is filled by the MLflow client; its
databases are dumped with the real mariadb-dump / pg_dump of this machine, as the docs say
(`--single-transaction --no-tablespaces`, `--no-owner --no-privileges`), by the RDS-like master
user (tests/support/dbadmin.py); the dumps go to the new stack's bucket under `takeover/`; the
artifacts are copied object by object with boto3 (standing in for the operator's `aws s3 sync`);
the admin step imports; the new server runs as the application user only. The MLflow client then
reads the same runs and downloads the same bytes through the proxy, with no S3 access of its own.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import requests

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, DB_PASSWORD, unique
from tests.support.dbadmin import MASTER_PASSWORD, MASTER_USER, run_admin_step
from tests.support.peers import LOOPBACK
from tests.support.server import Server, client_env, s3_env
from tests.support.takeover import dump_database, tables_of

NEW_ADMIN_PASSWORD = "N3w-stack-admin-password"  # the new stack's setting: the imported admin keeps its own
ALICE, ALICE_PASSWORD = "alice", "Al1ce-old-password-42"
PROXY_ONLY = {"MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false", "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
              "MLFLOW_S3_ENDPOINT_URL": None, "AWS_ENDPOINT_URL_S3": None, "AWS_ENDPOINT_URL": None,
              "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": None}


def bucket_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def fill_old(server: Server, s3, direct: bool, tmp: Path) -> dict:
    """What the old server's users made: a user, an experiment, a run with an artifact, a registered model."""
    import mlflow
    from mlflow import MlflowClient

    r = requests.post(server.url + "/api/2.0/mlflow/users/create", json={"username": ALICE, "password": ALICE_PASSWORD},
                      auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
    assert r.status_code == 200, r.text
    payload = os.urandom(300_000)
    (tmp / "data.bin").write_bytes(payload)
    env = {**server.client_env(ADMIN, ADMIN_PASSWORD), **(s3.env if direct else PROXY_ONLY)}
    with client_env(env):
        mlflow.set_tracking_uri(server.url)
        client = MlflowClient(server.url)
        experiment_id = client.create_experiment("takeover-experiment")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("alpha", "0.5")
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            mlflow.log_artifact(str(tmp / "data.bin"), "blobs")
            mlflow.pyfunc.log_model(name="model", python_model=_echo(), pip_requirements=["mlflow"],
                                    registered_model_name="takeover-model")
        old_run = client.get_run(run.info.run_id)
        version = client.get_model_version("takeover-model", "1")
    return {"experiment_id": experiment_id, "run": old_run, "payload": payload, "version": version}


def copy_artifacts(s3, old_bucket: str, old_prefix: str, new_bucket: str, new_prefix: str) -> int:
    """`aws s3 sync s3://old/prefix s3://new/prefix`, object by object (the docs' step, by the operator)."""
    client, copied = s3.client(), 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=old_bucket, Prefix=old_prefix + "/"):
        for obj in page.get("Contents", []):
            key = new_prefix + obj["Key"][len(old_prefix):]
            client.copy_object(Bucket=new_bucket, Key=key, CopySource={"Bucket": old_bucket, "Key": obj["Key"]})
            copied += 1
    return copied


def _echo():
    """A tiny pyfunc model (defined late: mlflow is imported by the test, not at collection)."""
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    return Echo()


CASES = [  # engine, the old server's artifact mode, dumps gzipped
    pytest.param("mariadb", "direct", True, id="mariadb-direct-s3-gzip"),
    pytest.param("postgresql", "direct", False, id="postgresql-direct-s3-plain"),
    pytest.param("postgresql", "proxied", True, id="postgresql-proxied-gzip"),
    pytest.param("mariadb", "proxied", False, id="mariadb-proxied-plain"),
]


@pytest.mark.parametrize("engine,mode,gzipped", CASES)
def test_takeover_runs_artifacts_models_and_users(request, engine, mode, gzipped, s3, fresh_on, tmp_path):
    """The whole procedure of docs/takeover.md, both artifact modes (MLflow docs, "Artifact Stores":
    proxied `mlflow-artifacts:` URIs, or the clients' own `s3://` URIs with --no-serve-artifacts)."""
    import mlflow
    from mlflow import MlflowClient

    db = request.getfixturevalue(engine)
    direct = mode == "direct"
    old, new = fresh_on(db), fresh_on(db, prepare=False)
    old_bucket, new_bucket = s3.create_bucket(bucket_name("old")), s3.create_bucket(bucket_name("new"))
    old_prefix = "team/mlruns"
    old_env = old.env(**s3.env, MLFLOW_ARTIFACTS_DESTINATION=f"s3://{old_bucket}/{old_prefix}",
                      **({"MLFLOW_SERVE_ARTIFACTS": "false"} if direct else {}))
    with Server(old_env) as server:
        made = fill_old(server, s3, direct, tmp_path)
    old_root = f"s3://{old_bucket}/{old_prefix}"
    assert made["run"].info.artifact_uri.startswith(old_root if direct else "mlflow-artifacts:/")

    # the docs' steps: dump, upload under takeover/, copy the artifacts
    keys = {}
    for what, name in (("tracking", old.name), ("auth", old.auth_name)):
        sql = dump_database(db, name)
        body = gzip.compress(sql) if gzipped else sql
        keys[what] = f"takeover/{name}.sql{'.gz' if gzipped else ''}"
        s3.client().put_object(Bucket=new_bucket, Key=keys[what], Body=body)
    assert copy_artifacts(s3, old_bucket, old_prefix, new_bucket, "artifacts") > 3

    imports = {"MLFLOW_IMPORT_TRACKING_DUMP": f"s3://{new_bucket}/{keys['tracking']}",
               "MLFLOW_IMPORT_AUTH_DUMP": f"s3://{new_bucket}/{keys['auth']}",
               **({"MLFLOW_IMPORT_ARTIFACT_ROOT": old_root} if direct else {})}
    result = run_admin_step(new.admin_env(**s3.env, **imports))
    assert result.returncode == 0, result.output[-4000:]
    print(result.stdout)  # the admin step's log (pytest -rP shows it)
    assert "import: tracking dump loaded" in result.stdout and "import: auth dump loaded" in result.stdout
    for value in (MASTER_PASSWORD, DB_PASSWORD, ALICE_PASSWORD, ADMIN_PASSWORD):
        assert value not in result.output
    if direct:
        leftovers = tables_of(db, new.name, f"SELECT artifact_uri FROM runs WHERE artifact_uri LIKE 's3:%' UNION ALL "
                                            f"SELECT artifact_location FROM experiments WHERE artifact_location LIKE 's3:%' "
                                            f"UNION ALL SELECT storage_location FROM model_versions "
                                            f"WHERE storage_location LIKE 's3:%' UNION ALL SELECT artifact_location "
                                            f"FROM logged_models WHERE artifact_location LIKE 's3:%'")
        assert leftovers == []

    # the new server: the application user only, its own bucket, its own admin password setting
    new_env = new.env(**s3_env(s3, new_bucket), MLFLOW_AUTH_ADMIN_PASSWORD=NEW_ADMIN_PASSWORD)
    with Server(new_env) as server, client_env({**server.client_env(ADMIN, ADMIN_PASSWORD), **PROXY_ONLY}):
        mlflow.set_tracking_uri(server.url)
        client = MlflowClient(server.url)
        run_id = made["run"].info.run_id
        run = client.get_run(run_id)
        assert run.data.params == {"alpha": "0.5"}
        assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 0.5, 1.0 / 3]
        assert client.get_experiment(made["experiment_id"]).name == "takeover-experiment"
        rest = made["run"].info.artifact_uri[len(old_root):] if direct else None
        expected_uri = f"mlflow-artifacts:{rest}" if direct else made["run"].info.artifact_uri
        assert run.info.artifact_uri == expected_uri
        # the users' URIs: runs:/, the (old, when proxied) artifact URI, models:/ through the proxy
        for uri in (f"runs:/{run_id}/blobs/data.bin", f"{run.info.artifact_uri}/blobs/data.bin"):
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / uuid.uuid4().hex))
            assert Path(path).read_bytes() == made["payload"], uri
        model_dir = mlflow.artifacts.download_artifacts(artifact_uri="models:/takeover-model/1",
                                                        dst_path=str(tmp_path / "model"))
        assert (Path(model_dir) / "MLmodel").is_file()
        assert client.get_model_version("takeover-model", "1").source == made["version"].source
        # new runs in the old experiment go through the proxy to the new bucket
        with mlflow.start_run(experiment_id=made["experiment_id"]) as new_run:
            mlflow.log_text("after the takeover", "note.txt")
        assert new_run.info.artifact_uri.startswith("mlflow-artifacts:/")
        assert s3.client().list_objects_v2(Bucket=new_bucket, Prefix=f"artifacts/{made['experiment_id']}/"
                                           f"{new_run.info.run_id}/")["KeyCount"] == 1
        # the users log in with their old passwords; the imported admin keeps its own
        me = server.url + "/api/2.0/mlflow/users/get"
        assert requests.get(me, params={"username": ALICE}, auth=(ALICE, ALICE_PASSWORD), timeout=30).status_code == 200
        assert requests.get(me, params={"username": ALICE}, auth=(ALICE, "wrong-password-1"),
                            timeout=30).status_code == 401
        assert requests.get(me, params={"username": ADMIN}, auth=(ADMIN, NEW_ADMIN_PASSWORD),
                            timeout=30).status_code == 401


@pytest.fixture
def fresh_on():
    """fresh_on(db, prepare=True) -> tests.server.conftest.Fresh on that peer; dropped afterwards."""
    from tests.server.conftest import Fresh
    from tests.support.dbadmin import drop_app_user, prepare_databases

    made = []

    def make(db, prepare: bool = True):
        f = Fresh(db, unique("t"), unique("a"), unique("u")[:30], DB_PASSWORD)
        made.append(f)
        if prepare:
            prepare_databases(db, f.user, DB_PASSWORD, f.name, f.auth_name)
        return f

    yield make
    for f in made:
        for name in (f.name, f.auth_name):
            with contextlib.suppress(Exception):
                f.db.drop_database(name)
        with contextlib.suppress(Exception):
            drop_app_user(f.db, f.user)


def test_import_into_a_database_with_tables_is_refused_and_changes_nothing(database, fresh, tmp_path):
    """A new stack's databases only: an existing one (here: the admin step's MLflow schema with one
    experiment) is refused, one line, exit 2, before anything is read or written."""
    source = fresh()
    dump = tmp_path / "dump.sql"
    dump.write_bytes(dump_database(database, source.name))
    target = fresh()
    before = tables_of(database, target.name, "SELECT name, artifact_location FROM experiments")
    result = run_admin_step(target.admin_env(MLFLOW_IMPORT_TRACKING_DUMP=str(dump)))
    assert result.returncode == 2, result.output[-3000:]
    assert len(result.error_lines) == 1, result.stderr
    assert "refusing to import into tracking database" in result.error_lines[0]
    assert "import: loading" not in result.stdout
    assert tables_of(database, target.name, "SELECT name, artifact_location FROM experiments") == before


def test_a_takeover_setting_left_on_is_refused_before_the_upgrade_gate(database, fresh, tmp_path):
    """docs/takeover.md: the setting is turned off after the takeover. Left on, the next image with a
    newer schema must not make the admin step exit 3 (an upgrade: `pulumi up` would stop the service
    and snapshot, then fail the import): one line, exit 2, the database untouched."""
    source = fresh()
    dump = tmp_path / "dump.sql"
    dump.write_bytes(dump_database(database, source.name))
    target = fresh()
    older = "bda7b8c39065"  # MLflow 3.1.4's tracking head: below this image's
    returning = "" if database.engine == "mysql" else " RETURNING version_num"  # psycopg2 fetches a result
    tables_of(database, target.name, f"UPDATE alembic_version SET version_num = '{older}'{returning}")
    result = run_admin_step(target.admin_env(MLFLOW_IMPORT_TRACKING_DUMP=str(dump)))
    assert result.returncode == 2, result.output[-3000:]
    assert "refusing to import into tracking database" in result.error_lines[0]
    assert tables_of(database, target.name, "SELECT version_num FROM alembic_version") == [(older,)]


@pytest.mark.parametrize("damage", ["bad-statement", "bad-row-in-table-data", "truncated"])
def test_corrupt_dump_fails_with_one_line_and_leaves_the_database_empty(database, fresh, tmp_path, damage):
    """A dump with a statement the database rejects, or cut off mid-way (a gzip stream cut short):
    one line naming the dump and line, exit 2, and nothing of it kept (PostgreSQL: one transaction
    rolled back; MySQL: DDL commits by itself, so the tables made are dropped)."""
    source = fresh()
    sql = dump_database(database, source.name)
    lines = sql.splitlines(keepends=True)
    if damage == "bad-statement":
        middle = next(i for i in range(len(lines) * 2 // 3, len(lines)) if lines[i].rstrip().endswith(b";"))
        body = b"".join(lines[:middle + 1]) + b"THIS IS NOT SQL;\n" + b"".join(lines[middle + 1:])
    elif damage == "bad-row-in-table-data":
        # MySQL: inside mysqldump's default --add-locks block (LOCK TABLES `t` WRITE; INSERT ...;
        # UNLOCK TABLES): the clean-up must not wait for the failed session's table locks.
        # PostgreSQL: a row of the wrong shape inside a COPY ... FROM stdin block.
        start = b"LOCK TABLES" if database.engine == "mysql" else b"COPY "
        at = next(i for i, line in enumerate(lines) if line.startswith(start))
        bad = b"THIS IS NOT SQL;\n" if database.engine == "mysql" else b"not\ta row of this table\n"
        body = b"".join(lines[:at + 1]) + bad + b"".join(lines[at + 1:])
    else:
        body = gzip.compress(sql)[: len(gzip.compress(sql)) * 2 // 3]
    dump = tmp_path / "dump.sql.gz"
    dump.write_bytes(body)
    target = fresh(prepare=False)
    result = run_admin_step(target.admin_env(MLFLOW_IMPORT_TRACKING_DUMP=str(dump)))
    assert result.returncode == 2, result.output[-3000:]
    assert len(result.error_lines) == 1, result.stderr
    assert str(dump) in result.error_lines[0] or "dump" in result.error_lines[0]
    assert tables_of(database, target.name) == []


def test_bad_import_settings_are_one_line(database, fresh):
    target = fresh(prepare=False)
    for extra, needle in (({"MLFLOW_IMPORT_AUTH_DUMP": "s3://b/k"}, "need MLFLOW_IMPORT_TRACKING_DUMP"),
                          ({"MLFLOW_IMPORT_TRACKING_DUMP": "dump.sql"}, "MLFLOW_IMPORT_TRACKING_DUMP='dump.sql'"),
                          ({"MLFLOW_IMPORT_TRACKING_DUMP": "/nonexistent/dump.sql"}, "cannot open it"),
                          ({"MLFLOW_IMPORT_TRACKING_DUMP": "/x.sql", "MLFLOW_IMPORT_ARTIFACT_ROOT": "gs://b/p"},
                           "MLFLOW_IMPORT_ARTIFACT_ROOT")):
        result = run_admin_step(target.admin_env(**extra))
        assert result.returncode == 2 and len(result.error_lines) == 1, result.output[-2000:]
        assert needle in result.error_lines[0], result.error_lines[0]


def test_postgresql_dump_of_a_newer_pg_dump_with_owners_loads(postgresql, fresh_on, tmp_path):
    """pg_dump 17 writes `SET transaction_timeout = 0;`, unknown to PostgreSQL 15/16 (PostgreSQL 17
    release notes): skipped, as psql goes on past it. A dump made without --no-owner has `ALTER ...
    OWNER TO <old role>`, which RDS's master may not do for a role it is not a member of: skipped, the
    admin step grants the application user itself. Everything else is loaded."""
    source = fresh_on(postgresql)
    sql = dump_database(postgresql, source.name)
    head, _, rest = sql.partition(b"SET statement_timeout = 0;\n")
    assert rest, "pg_dump's header changed"
    body = (head + b"SET statement_timeout = 0;\nSET transaction_timeout = 0;\n" + rest
            + b"ALTER TABLE public.experiments OWNER TO some_old_owner;\n")
    dump = tmp_path / "mlflow.sql"
    dump.write_bytes(body)
    target = fresh_on(postgresql, prepare=False)
    result = run_admin_step(target.admin_env(MLFLOW_IMPORT_TRACKING_DUMP=str(dump)))
    assert result.returncode == 0, result.output[-3000:]
    assert "skipped a setting this server does not know" in result.stdout
    assert "2 ownership/privilege/replication/unknown-setting statements skipped" in result.stdout
    assert tables_of(postgresql, target.name) == tables_of(postgresql, source.name)


def test_a_dump_of_an_older_mlflow_is_imported_and_upgraded_without_upgrade_flag(database, fresh, tmp_path):
    """A takeover of an older MLflow (here: MLflow 2.19's tracking schema, made with MLflow's own
    alembic scripts, with one experiment): the plain admin step (no --upgrade; a plain run on an
    old schema exits 3) imports it and upgrades it to the image's heads: the new stack has no
    writers yet (MLflow 3.17 release notes: upgrade with every writer stopped)."""
    import sqlalchemy

    from tests.server.test_schema import OLD_REVISION, create_as_master, head_revision, old_schema, versions

    source = fresh(prepare=False)
    engine = create_as_master(source)
    old_schema(engine, "s3://old-bucket/mlruns/1")
    engine.dispose()
    dump = tmp_path / "old.sql.gz"
    dump.write_bytes(gzip.compress(dump_database(database, source.name)))
    target = fresh(prepare=False)
    result = run_admin_step(target.admin_env(MLFLOW_IMPORT_TRACKING_DUMP=str(dump),
                                             MLFLOW_IMPORT_ARTIFACT_ROOT="s3://old-bucket/mlruns"))
    assert result.returncode == 0, result.output[-3000:]
    assert f"tracking schema: upgraded from revision {OLD_REVISION} to {head_revision()}" in result.stdout
    new = sqlalchemy.create_engine(database.url(MASTER_USER, MASTER_PASSWORD, target.name))
    try:
        assert versions(new) == [head_revision()]
        assert tables_of(database, target.name, "SELECT name, artifact_location FROM experiments") == [
            ("from-2024", "mlflow-artifacts:/1")]
    finally:
        new.dispose()
