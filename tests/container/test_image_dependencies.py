"""The image's dependency set (image/dependency_set.py): MLflow's declared data-science packages are not
in it, what is in it is consistent, and everything the server and the one-off commands import is there.

The full `mlflow` 3.17.2 distribution declares pyarrow, scipy, scikit-learn, matplotlib, skops, docker,
gunicorn, gitpython (via mlflow-skinny), ...; its tracking server imports none of them, or only inside
`try: ... except ImportError` (mlflow/data/dataset_registry.py registers the pandas/numpy/... dataset
sources that way). numpy and pandas are NOT optional: mlflow/server/fastapi_app.py imports
mlflow.gateway, whose providers/base.py imports numpy and whose guardrails import
mlflow/metrics/genai/genai_metric.py, which imports pandas, at module level (MLflow 3.17.2 source).
So the image keeps those two and installs `mlflow` with `pip install --no-deps` (pip documentation,
"pip install --no-deps": "Don't install package dependencies"); `pip check` then reports the omitted
packages as "not installed", and only them (pip documentation, "pip check": "Verify installed packages
have compatible dependencies").

The last test runs the real thing on PostgreSQL (the MariaDB side is test_container.py's fixture):
`admin` (both alembic schemas created by MLflow's migrations on psycopg2), the server with the
basic-auth app (/health, the UI's index page and a static asset, GraphQL, the REST API, a proxied
artifact upload and download to the S3 stand-in), then `gc` removing a deleted run and its artifact.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.container.conftest import IMAGE_DIR, UID, docker, fargate_spool, inspect, run_admin_container
from tests.support.dbadmin import ADMIN_VARIABLES, drop_app_user, ensure_master
from tests.support.peers import LOOPBACK, free_port
from tests.support.server import health

sys.path.insert(0, str(IMAGE_DIR))
import dependency_set  # noqa: E402  (image/dependency_set.py)

sys.path.remove(str(IMAGE_DIR))

# import name -> distribution: the heavy packages the image must not carry (dependency_set.OMITTED)
HEAVY = {"pyarrow": "pyarrow", "scipy": "scipy", "sklearn": "scikit-learn", "matplotlib": "matplotlib",
         "PIL": "pillow", "fontTools": "fonttools", "skops": "skops", "joblib": "joblib",
         "docker": "docker", "gunicorn": "gunicorn", "git": "gitpython"}


def run_python(image_tag: str, code: str, *, env: dict[str, str] | None = None,
               timeout: float = 300) -> str:
    """`python3 -c code` in the image as its user, read-only root; stdout (must exit 0)."""
    args = ["run", "--rm", "--user", f"{UID}:{UID}", "--read-only", "--network", "none", "--entrypoint", "python3"]
    for k, v in (env or {}).items():
        args += ["-e", f"{k}={v}"]
    p = docker(*args, image_tag, "-c", code, timeout=timeout, check=False)
    assert p.returncode == 0, f"python3 in the image exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    return p.stdout


def test_the_omitted_list_names_the_heavy_packages():
    assert set(HEAVY.values()) <= set(dependency_set.OMITTED)
    assert not {"numpy", "pandas"} & set(dependency_set.OMITTED)  # imported by mlflow.server.fastapi_app


def test_the_heavy_packages_mlflow_declares_are_not_in_the_image(image):
    code = ("import importlib.util, importlib.metadata as m, json\n"
            f"mods = {sorted(HEAVY)!r}\n"
            f"dists = {sorted(HEAVY.values())!r}\n"
            "found = [n for n in mods if importlib.util.find_spec(n)]\n"
            "def has(d):\n"
            "    try: m.distribution(d); return True\n"
            "    except m.PackageNotFoundError: return False\n"
            "print(json.dumps(found + [d for d in dists if has(d)]))\n")
    present = json.loads(run_python(image.tag, code).strip().splitlines()[-1])
    assert present == [], (f"the image carries {present}: packages mlflow declares but the server never imports "
                           f"(image/dependency_set.py OMITTED; docs/image.md, 'Size')")


def test_the_dependency_set_is_consistent_and_pip_check_names_only_the_omitted(image):
    out = run_python(image.tag, "import runpy, sys; sys.argv = ['dependency_set.py', '--check']; "
                                "runpy.run_path('/app/dependency_set.py', run_name='__main__')")
    assert "dependency set: consistent" in out, out
    p = docker("run", "--rm", "--user", f"{UID}:{UID}", "--read-only", "--network", "none", "--entrypoint",
               "python3", image.tag, "-m", "pip", "check", check=False, timeout=300)
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    pattern = re.compile(r"^(?P<dist>\S+) (?P<version>\S+) requires (?P<req>[A-Za-z0-9_.-]+), which is not installed\.$")
    missing = set()
    for line in lines:
        m = pattern.match(line)
        assert m, f"pip check in the image reports more than omitted packages: {line!r}\n{p.stdout}{p.stderr}"
        missing.add(dependency_set.normalize(m["req"]))
    # exactly the omitted packages that an installed distribution declares (the rest hang off those)
    assert missing and missing <= set(dependency_set.OMITTED), missing
    assert {"pyarrow", "scipy", "scikit-learn", "matplotlib", "skops", "docker", "gunicorn", "gitpython"} <= missing


def test_every_module_the_server_and_the_one_off_commands_import_is_there(image):
    """Imports (and boto3 clients) of every path: both apps and the fastapi app, the SQL stores, the S3
    artifact repository, both engines' SQLAlchemy dialects, every alembic migration of both schemas,
    the image's own modules (admin, gc, takeover import), and the UI's build."""
    code = r"""
import importlib, pkgutil, os, json, warnings
warnings.simplefilter("ignore")
import mlflow.store.db_migrations.versions as tv, mlflow.server.auth.db.migrations.versions as av
mods = ["mlflow.server", "mlflow.server.handlers", "mlflow.server.auth", "mlflow.server.fastapi_app",
        "mlflow.server.graphql.graphql_schema_extensions", "mlflow.store.tracking.sqlalchemy_store",
        "mlflow.store.model_registry.sqlalchemy_store", "mlflow.server.auth.sqlalchemy_store",
        "mlflow.store.artifact.s3_artifact_repo", "mlflow.store.db.utils", "mlflow.cli", "mlflow.server.jobs",
        "sqlalchemy.dialects.mysql.pymysql", "sqlalchemy.dialects.postgresql.psycopg2", "alembic.command",
        "uvicorn", "uvloop", "httptools", "pymysql", "psycopg2", "boto3",
        "mlflow_auth_fastpath", "mlflow_db_pool",
        "entrypoint", "admin_step", "admin_users", "admin_import", "dump_loaders", "gc_step", "db_schema",
        "auth_schema", "db_tls", "db_wait"]
mods += [f"{tv.__name__}.{m.name}" for m in pkgutil.iter_modules(tv.__path__)]
mods += [f"{av.__name__}.{m.name}" for m in pkgutil.iter_modules(av.__path__)]
for m in mods:
    importlib.import_module(m)
from mlflow.server import _find_app
assert _find_app("basic-auth-fastpath") and _find_app("basic-auth")
import boto3
for svc in ("s3", "secretsmanager", "sts", "sso", "sso-oidc", "signin", "bedrock-runtime"):
    boto3.client(svc, region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
import mlflow.server as s
build = os.path.join(os.path.dirname(s.__file__), "js", "build")
js = [f for _, _, fs in os.walk(build) for f in fs if f.endswith(".js")]
assert os.path.isfile(os.path.join(build, "index.html")) and len(js) > 100, (build, len(js))
print(json.dumps({"modules": len(mods), "ui_js": len(js)}))
"""
    out = run_python(image.tag, code, env={"PYTHONPATH": "/app/plugins:/app"})
    counts = json.loads(out.strip().splitlines()[-1])
    assert counts["modules"] > 100, counts  # the migrations of both schemas were found and imported


def _request(url: str, *, auth: tuple[str, str] | None = None, data: bytes | None = None,
             method: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _json(url: str, auth, body: dict) -> dict:
    status, raw = _request(url, auth=auth, data=json.dumps(body).encode(), method="POST",
                           headers={"Content-Type": "application/json"})
    assert status == 200, (url, status, raw[:500])
    return json.loads(raw)


def test_admin_gc_and_the_server_on_postgresql(image, postgresql, s3, tmp_path):
    tag = uuid.uuid4().hex[:8]
    db_name, auth_name, user = f"cd_{tag}", f"cd_{tag}_auth", f"cd_{tag}"
    db_password, admin_password = f"cddb{secrets.token_hex(12)}", f"cdadm{secrets.token_hex(12)}"
    bucket = s3.create_bucket(f"cd-{tag}")
    port = free_port()
    name = f"mlflow-deps-test-{os.getpid()}-{tag}"
    db_env = {"MLFLOW_DB_ENGINE": "postgresql", "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(postgresql.port),
              "MLFLOW_DB_NAME": db_name, "MLFLOW_DB_USER": user, "MLFLOW_DB_PASSWORD": db_password,
              "MLFLOW_AUTH_DB_NAME": auth_name, "MLFLOW_DB_TLS_CA": ""}
    env = {**db_env, "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
           "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/artifacts", "MLFLOW_PORT": str(port),
           "MLFLOW_WORKERS": "2", **{k: v for k, v in s3.env.items() if k != "NO_PROXY"}}
    tmp = Path(tempfile.mkdtemp(prefix="mlflow-deps-"))
    env_file = tmp / "server.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    volumes = contextlib.ExitStack()
    try:
        run_admin_container(image.tag, tmp, {**db_env, **dict(zip(ADMIN_VARIABLES, ensure_master(postgresql)))},
                            secrets=[db_password, admin_password])
        spool = volumes.enter_context(fargate_spool(image.tag, tmp))
        docker("run", "-d", "--name", name, "--user", f"{UID}:{UID}", "--read-only", "-v", spool.arg,
               "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "host",
               "--env-file", str(env_file), image.tag)
        url = f"http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + 180
        while health(url, timeout=1.0) != 200:
            assert inspect(name)["State"]["Running"], docker("logs", name, check=False).stderr[-4000:]
            assert time.monotonic() < deadline, docker("logs", name, check=False).stderr[-4000:]
            time.sleep(0.2)
        admin = ("admin", admin_password)

        status, page = _request(f"{url}/", auth=admin)
        assert status == 200 and b"<html" in page.lower(), (status, page[:300])
        asset = re.search(rb'(?:src|href)="(?:\./|/)?(static-files/[^"]+\.js)"', page)
        assert asset, page[:2000]
        status, body = _request(f"{url}/{asset[1].decode()}", auth=admin)
        assert status == 200 and len(body) > 1000, (asset[1], status)

        exp = _json(f"{url}/api/2.0/mlflow/experiments/create", admin, {"name": f"deps-{tag}"})["experiment_id"]
        run = _json(f"{url}/api/2.0/mlflow/runs/create", admin, {"experiment_id": exp})["run"]["info"]["run_id"]
        _json(f"{url}/api/2.0/mlflow/runs/log-metric", admin,
              {"run_id": run, "key": "m", "value": 1.5, "timestamp": 1, "step": 0})
        gql = _json(f"{url}/graphql", admin, {"query": 'query { mlflowGetExperiment(input: {experimentId: "%s"}) '
                                                       '{ experiment { name } } }' % exp})
        assert gql["data"]["mlflowGetExperiment"]["experiment"]["name"] == f"deps-{tag}", gql
        path = f"{url}/api/2.0/mlflow-artifacts/artifacts/{exp}/{run}/artifacts/a.txt"
        status, _ = _request(path, auth=admin, data=b"hello", method="PUT")
        assert status == 200, status
        assert _request(path, auth=admin) == (200, b"hello")
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="artifacts/")
        assert any(o["Key"].endswith(f"{run}/artifacts/a.txt") for o in listed.get("Contents", [])), listed
        logs = docker("logs", name, check=False)
        assert "ModuleNotFoundError" not in logs.stdout + logs.stderr, logs.stderr[-4000:]

        # gc as the scheduled task runs it, on the run deleted (back-dated 3 days) with its S3 artifact
        _json(f"{url}/api/2.0/mlflow/runs/delete", admin, {"run_id": run})
        import psycopg2
        master, master_password = ensure_master(postgresql)
        conn = psycopg2.connect(host=LOOPBACK, port=postgresql.port, user=master, password=master_password,
                                dbname=db_name)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("UPDATE runs SET deleted_time = deleted_time - 3 * 86400 * 1000 WHERE run_uuid = %s", (run,))
        finally:
            conn.close()
        (tmp / "gc").mkdir()
        with fargate_spool(image.tag, tmp / "gc") as gc_spool:
            gc = docker("run", "--rm", "--user", f"{UID}:{UID}", "--read-only", "-v", gc_spool.arg, "--cap-drop", "ALL",
                        "--network", "host", "--env-file", str(env_file), "-e", "MLFLOW_GC_OLDER_THAN_DAYS=1",
                        image.tag, "gc", check=False, timeout=300)
        assert gc.returncode == 0 and run in gc.stdout, f"gc exited {gc.returncode}:\n{gc.stdout[-3000:]}\n{gc.stderr[-3000:]}"
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="artifacts/")
        assert not any(run in o["Key"] for o in listed.get("Contents", [])), listed
    finally:
        docker("rm", "-f", "-v", name, check=False)
        volumes.close()
        shutil.rmtree(tmp, ignore_errors=True)
        for db in (db_name, auth_name):
            with contextlib.suppress(Exception):
                postgresql.drop_database(db)
        with contextlib.suppress(Exception):
            drop_app_user(postgresql, user)
