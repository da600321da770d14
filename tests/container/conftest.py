"""The server image for real: built with Docker from image/ and run as a locked-down container.

    docker_engine  -- skips (loudly) when no Docker engine answers; REQUIRE_DOCKER=1 makes that a failure
    image          -- `docker build image/` under a unique tag (module scope), removed afterwards; on
                      the Dockerfile's pinned base when it is present locally, else (loudly) on the
                      local stand-in `python:3.12-slim` that docker-offline.sh provides
    container      -- the image run non-root, read-only root, the spool mounted the way Fargate mounts
                      it (fargate_spool: nothing chmod'ed or chown'ed by the test), all capabilities
                      dropped, no-new-privileges, --network host, configured by an --env-file (0600)
                      for a MariaDB peer and a moto S3 bucket; waits for /health

Everything listens on and connects to 127.0.0.1 only (--network host: the container reaches the
peers on their loopback ports). Containers, volumes, the image tag, temp dirs and databases are
removed even when a test fails.
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
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.service import SPOOL_PATH
from tests.container import dockerfile
from tests.support.dbadmin import ADMIN_VARIABLES, MASTER_PASSWORD, drop_app_user, ensure_master
from tests.support.peers import LOOPBACK, free_port
from tests.support.server import health

ROOT = Path(__file__).resolve().parents[2]
IMAGE_DIR = ROOT / "image"
UID = 10001  # the image's USER; the container is run with it explicitly
STAND_IN = "python:3.12-slim"  # what ../shared/tools/docker-offline.sh builds when Docker Hub is out of reach
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
    base: str                        # the PYTHON_IMAGE the build used
    stand_in: bool                   # True: built on the local stand-in, not on the Dockerfile's pinned base


def base_image() -> tuple[str, list[str]]:
    """The base to build on and the --build-args that select it: the Dockerfile's default (pinned by
    digest) when it is present locally, else the local stand-in, said loudly (it is not the base the
    image ships with: Debian bookworm + this machine's CPython, see docker-offline.sh)."""
    default = dockerfile.arg_defaults().get("PYTHON_IMAGE") or STAND_IN
    if docker("image", "inspect", default, check=False).returncode == 0:
        return default, []
    msg = (f"BUILT ON THE LOCAL STAND-IN {STAND_IN} (../shared/tools/docker-offline.sh), NOT ON THE PINNED BASE "
           f"{default}: that reference is not present locally and no registry can be reached here. "
           f"The image tested is the image/ build on another base.")
    print(f"\n[container] {msg}")
    warnings.warn(msg, UserWarning, stacklevel=2)
    return STAND_IN, ["--build-arg", f"PYTHON_IMAGE={STAND_IN}", "--build-arg", "PYTHON_IMAGE_DIGEST="]


@pytest.fixture(scope="module")
def image(docker_engine):
    tag = f"mlflow-server-test:{os.getpid()}-{uuid.uuid4().hex[:8]}"
    base, build_args = base_image()
    t0 = time.monotonic()
    try:
        build = docker("build", "--force-rm", *build_args, "-t", tag, str(IMAGE_DIR), timeout=1800, check=False)
        assert build.returncode == 0, f"docker build of image/ failed:\n{build.stdout[-5000:]}\n{build.stderr[-5000:]}"
        elapsed = time.monotonic() - t0
        size = inspect(tag, "image")["Size"]
        print(f"\n[container] docker build: {elapsed:.1f} s, image {size / 1e6:.0f} MB ({tag}, base {base})")
        yield Image(tag, elapsed, size, base, stand_in=bool(build_args))
    finally:
        docker("rmi", "-f", tag, check=False, timeout=300)


@dataclass
class SpoolMount:
    """The spool as a Fargate task gets it: a fresh named volume or an empty host directory."""
    source: str                      # volume name or host directory
    kind: str                        # "volume" or "bind"

    @property
    def arg(self) -> str:
        return f"{self.source}:{SPOOL_PATH}"


def declares_spool_volume(image_tag: str) -> bool:
    return SPOOL_PATH in (inspect(image_tag, "image")["Config"].get("Volumes") or {})


def empty_root_dir(parent: Path) -> Path:
    """A new empty directory owned by root (when the test runs as root), mode 0755: what Fargate
    mounts when the image does not declare the path a VOLUME. Never made friendlier for UID 10001."""
    d = parent / "spool"
    d.mkdir()
    os.chmod(d, 0o755)
    with contextlib.suppress(PermissionError):  # not root: owned by the runner, still not 10001's
        os.chown(d, 0, 0)
    return d


@contextlib.contextmanager
def fargate_spool(image_tag: str, tmp: Path):
    """The spool mounted the way Amazon ECS mounts the task's bind-mount volume on Fargate.

    Amazon ECS Developer Guide, "Use bind mounts with Amazon ECS", Considerations: "the Amazon ECS
    data plane looks for a VOLUME directive. If the absolute path that's specified in the VOLUME
    directive is the same as the containerPath that's specified in the task definition, the data in
    the VOLUME directive path is copied to the data volume", and "By default, the volume permissions
    are set to 0755 and the owner as root. You can customize these permissions in the Dockerfile."
    So: the image declares SPOOL_PATH a VOLUME -> a fresh Docker named volume (Docker copies the
    image's directory, its owner and mode into a new empty named volume, as ECS does); it does not ->
    an empty root-owned 0755 host directory (Docker never copies into a bind mount). Volumes are
    removed afterwards (the caller removes its container first).
    """
    if not declares_spool_volume(image_tag):
        yield SpoolMount(str(empty_root_dir(tmp)), "bind")
        return
    name = f"mlflow-spool-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    docker("volume", "create", "--label", "mlflow-server-test=spool", name)
    try:
        yield SpoolMount(name, "volume")
    finally:
        docker("volume", "rm", "-f", name, check=False)


def run_admin_container(image_tag: str, tmp: Path, env: dict[str, str], secrets: list[str]) -> float:
    """`docker run <image> admin` as the ECS admin task runs it (components/container_definition.py,
    admin_container_definition: read-only root, no capabilities, the image's user, its own spool
    volume), configured by an --env-file (0600) with the master credentials; must exit 0 and print
    no secret. Returns its run time in seconds."""
    env_file = tmp / "admin.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))
    name = f"mlflow-admin-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    (tmp / "admin").mkdir()
    with fargate_spool(image_tag, tmp / "admin") as spool:
        t0 = time.monotonic()
        try:
            p = docker("run", "--name", name, "--user", f"{UID}:{UID}", "--read-only", "-v", spool.arg,
                       "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "host",
                       "--env-file", str(env_file), image_tag, "admin", timeout=600, check=False)
        finally:
            docker("rm", "-f", "-v", name, check=False)
    elapsed = time.monotonic() - t0
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"the admin step exited {p.returncode}:\n{out[-4000:]}"
    assert "admin step: done" in p.stdout and p.stderr.strip() == "", out[-4000:]
    for value in (*secrets, env.get("MLFLOW_DB_PASSWORD", ""), MASTER_PASSWORD):
        assert not value or value not in out, "the admin step printed a secret"
    return elapsed


@dataclass
class Running:
    name: str
    image: Image
    port: int
    url: str
    spool: SpoolMount
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

    def spool_files(self) -> list[str]:
        """Every file in the spool (paths relative to it), as the running container sees the mount."""
        p = self.exec("find", SPOOL_PATH, "-type", "f", "-printf", "%P\\n", check=True)
        return sorted(p.stdout.split())

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
    port = free_port()

    tmp = Path(tempfile.mkdtemp(prefix="mlflow-container-"))
    env_file = tmp / "server.env"
    env = {
        "MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(mariadb.port),
        "MLFLOW_DB_NAME": db_name, "MLFLOW_DB_USER": user, "MLFLOW_DB_PASSWORD": db_password,
        "MLFLOW_AUTH_DB_NAME": auth_name, "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_key,
        "MLFLOW_ARTIFACTS_DESTINATION": f"s3://{bucket}/artifacts",
        "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "2",
        "MLFLOW_DB_TLS_CA": "",  # this MariaDB speaks plain; the image's default is the RDS CA bundle
        **{k: v for k, v in s3.env.items() if k != "NO_PROXY"},
    }
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in env.items()))

    running = None
    volumes = contextlib.ExitStack()
    try:
        # as `pulumi up` does: the admin step (same image, command `admin`, master credentials) first
        admin = run_admin_container(image.tag, tmp, {
            **{k: v for k, v in env.items() if k.startswith("MLFLOW_DB_") or k == "MLFLOW_AUTH_DB_NAME"},
            **dict(zip(ADMIN_VARIABLES, ensure_master(mariadb)))}, secrets=[db_password, admin_password, flask_key])
        print(f"\n[container] admin step (docker run ... admin): {admin:.1f} s")
        assert not set(ADMIN_VARIABLES) & set(env), "the server container must not get the master credentials"
        spool = volumes.enter_context(fargate_spool(image.tag, tmp))
        print(f"\n[container] spool: {spool.kind} {spool.source} at {SPOOL_PATH}")
        t0 = time.monotonic()
        docker("run", "-d", "--name", name, "--user", f"{UID}:{UID}", "--read-only",
               "-v", spool.arg, "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
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
        volumes.close()  # after the container: a volume in use cannot be removed
        shutil.rmtree(tmp, ignore_errors=True)
        for db in (db_name, auth_name):
            with contextlib.suppress(Exception):
                mariadb.drop_database(db)
        with contextlib.suppress(Exception):
            drop_app_user(mariadb, user)
