"""The server image for real: built with Docker from image/ and run as a locked-down container.

    docker_engine  -- skips (loudly) when no Docker engine answers; REQUIRE_DOCKER=1 makes that a failure
    image          -- `docker build image/` under a unique tag (module scope), removed afterwards
    container      -- the image run non-root, read-only root, spool on a writable mount, all
                      capabilities dropped, no-new-privileges, --network host, configured by an
                      --env-file (0600) for a MariaDB peer and a moto S3 bucket; waits for /health

Everything listens on and connects to 127.0.0.1 only (--network host: the container reaches the
peers on their loopback ports). Containers, the image tag, temp dirs and databases are removed
even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.peers import LOOPBACK, free_port
from tests.support.server import health

ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "image"
UID = 10001  # the image's USER; the container is run with it explicitly
ADMIN = "admin"

NO_ENGINE = ("NO DOCKER ENGINE ANSWERS: the container tests (docker build + run of image/) DID NOT RUN. "
             "Start one with `bash ../shared/tools/docker-offline.sh` (as .ci/run does), or set "
             "REQUIRE_DOCKER=1 to make this a failure. Detail: {}")


def docker(*args: str, timeout: float = 120, check: bool = True, input: str | None = None
           ) -> subprocess.CompletedProcess:
    """Run the docker CLI; on failure (check=True) the message carries its output."""
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])}... exited {p.returncode}:\n{p.stdout[-3000:]}\n"
                             f"{p.stderr[-3000:]}")
    return p


def inspect(obj: str, kind: str = "container") -> dict:
    return json.loads(docker(kind, "inspect", obj).stdout)[0]


@pytest.fixture(scope="module")
def docker_engine() -> str:
    """The engine's version; skip (or fail with REQUIRE_DOCKER=1) when none answers."""
    why = None
    if not shutil.which("docker"):
        why = "no `docker` CLI on PATH"
    else:
        try:
            p = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                               text=True, timeout=30)
            if p.returncode != 0 or not p.stdout.strip():
                why = f"`docker info` exited {p.returncode}: {(p.stderr or p.stdout).strip()[:300]}"
        except subprocess.TimeoutExpired:
            why = "`docker info` did not answer within 30 s"
    if why:
        if os.environ.get("REQUIRE_DOCKER") == "1":
            pytest.fail(NO_ENGINE.format(why), pytrace=False)
        pytest.skip(NO_ENGINE.format(why))
    return p.stdout.strip()


@dataclass
class Image:
    tag: str
    build_seconds: float
    size_bytes: int


@pytest.fixture(scope="module")
def image(docker_engine):
    tag = f"mlflow-server-test:{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    try:
        build = docker("build", "-t", tag, str(IMAGE_DIR), timeout=1800, check=False)
        assert build.returncode == 0, f"docker build of image/ failed:\n{build.stdout[-5000:]}\n{build.stderr[-5000:]}"
        elapsed = time.monotonic() - t0
        size = inspect(tag, "image")["Size"]
        print(f"\n[container] docker build: {elapsed:.1f} s, image {size / 1e6:.0f} MB ({tag})")
        yield Image(tag, elapsed, size)
    finally:
        docker("rmi", "-f", tag, check=False, timeout=300)


@dataclass
class Running:
    name: str
    image: Image
    port: int
    url: str
    spool: Path
    bucket: str
    s3: object
    db: object
    db_name: str
    secrets: dict[str, str]          # what must never leak: name -> value
    admin_password: str
    started_in: float                # seconds from `docker run` to /health 200
    stopped: dict = field(default_factory=dict)

    def exec(self, *argv: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
        return docker("exec", self.name, *argv, check=check, timeout=timeout)

    def logs(self) -> str:
        p = docker("logs", self.name, check=False)
        return p.stdout + p.stderr

    def client_env(self, username: str | None = ADMIN, password: str | None = None) -> dict[str, str | None]:
        """Environment of the MLflow client in this process: forced proxy, no S3 access of its own."""
        return {"MLFLOW_TRACKING_URI": self.url,
                "MLFLOW_TRACKING_USERNAME": username,
                "MLFLOW_TRACKING_PASSWORD": self.admin_password if password is None and username else password,
                "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
                "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
                # the client must go through the server's artifact proxy, never straight to S3
                "MLFLOW_S3_ENDPOINT_URL": None, "AWS_ENDPOINT_URL_S3": None, "AWS_ACCESS_KEY_ID": None,
                "AWS_SECRET_ACCESS_KEY": None, "AWS_PROFILE": None}


def _writable_by_uid(path: Path) -> None:
    try:
        os.chown(path, UID, UID)
        os.chmod(path, 0o700)
    except PermissionError:  # not root: let the container's UID in anyway
        os.chmod(path, 0o777)


@pytest.fixture(scope="module")
def container(image, mariadb, s3):
    tag = uuid.uuid4().hex[:8]
    name = f"mlflow-server-test-{os.getpid()}-{tag}"
    db_name, auth_name, user = f"ct_{tag}", f"ct_{tag}_auth", f"ct_{tag}"
    # unique, greppable secrets; the database password also carries every URL-special character
    db_password = f"ctdb{secrets.token_hex(12)}@:/?#%&+"
    admin_password = f"ctadm{secrets.token_hex(12)}"
    flask_key = f"ctkey{secrets.token_hex(16)}"
    bucket = s3.create_bucket(f"ct-{tag}")
    mariadb.create_database(db_name)
    mariadb.create_user(user, db_password, [db_name, auth_name])
    port = free_port()

    tmp = Path(tempfile.mkdtemp(prefix="mlflow-container-"))
    spool = tmp / "spool"
    spool.mkdir()
    _writable_by_uid(spool)
    env_file = tmp / "server.env"
    env = {
        "MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(mariadb.port),
        "MLFLOW_DB_NAME": db_name, "MLFLOW_DB_USER": user, "MLFLOW_DB_PASSWORD": db_password,
        "MLFLOW_AUTH_DB_NAME": auth_name, "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key,
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/artifacts",
        "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "2",
        **{k: v for k, v in s3.env.items() if k != "NO_PROXY"},
    }
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))

    running = None
    try:
        t0 = time.monotonic()
        docker("run", "-d", "--name", name, "--user", f"{UID}:{UID}", "--read-only",
               "-v", f"{spool}:/var/spool/mlflow", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--network", "host", "--env-file", str(env_file),
               "--health-interval", "2s", "--health-start-period", "120s", "--health-timeout", "6s",
               image.tag)
        url = f"http://{LOOPBACK}:{port}"
        deadline = time.monotonic() + 180
        while health(url, timeout=1.0) != 200:
            state = inspect(name)["State"]
            if not state["Running"]:
                pytest.fail(f"the container exited with {state['ExitCode']} before /health; its logs:\n"
                            f"{docker('logs', name, check=False).stderr[-4000:]}", pytrace=False)
            if time.monotonic() > deadline:
                pytest.fail(f"no /health 200 on {url} within 180 s; logs:\n"
                            f"{docker('logs', name, check=False).stderr[-4000:]}", pytrace=False)
            time.sleep(0.2)
        started_in = time.monotonic() - t0
        print(f"\n[container] docker run -> /health 200: {started_in:.1f} s")
        running = Running(name, image, port, url, spool, bucket, s3, mariadb, db_name,
                          {"database password": db_password, "admin password": admin_password,
                           "Flask secret key": flask_key},
                          admin_password, started_in)
        yield running
    finally:
        if running is None or os.environ.get("CONTAINER_TEST_SHOW_LOGS"):
            print(docker("logs", name, check=False).stderr[-4000:])
        docker("rm", "-f", "-v", name, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        for db in (db_name, auth_name):
            with contextlib.suppress(Exception):
                mariadb.drop_database(db)
        with contextlib.suppress(Exception):
            mariadb.execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
