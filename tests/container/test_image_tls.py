"""The image verifies database TLS by default: the Amazon RDS global CA bundle at the path the task
definitions name (components/container_definition.py DB_TLS_CA), set as the image's own default.

Amazon Aurora User Guide, "Using SSL/TLS to encrypt a connection to a DB cluster": a client that
verifies the server certificate needs the RDS CA bundle; the cluster parameter group the program
creates refuses plain connections, so the image must not fall back to them.
"""

from __future__ import annotations

import os
import re

from components.container_definition import DB_TLS_CA
from tests.container.conftest import ROOT, UID, docker
from tests.support.peers import LOOPBACK, free_port

BUNDLE = ROOT / "image" / "certs" / "rds-global-bundle.pem"
LOCKED_DOWN = ("--rm", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
               "--user", f"{UID}:{UID}")


def test_the_bundle_is_the_images_default_and_loads_in_its_openssl(image):
    probe = ("import os, ssl; p = os.environ['MLFLOW_DB_TLS_CA']; "
             "print(p, len(ssl.create_default_context(cafile=p).get_ca_certs()))")
    run = docker("run", *LOCKED_DOWN, "--network", "none", "--entrypoint", "python3", image.tag, "-c", probe,
                 timeout=120)
    expected = len(re.findall("-----BEGIN CERTIFICATE-----", BUNDLE.read_text()))
    assert run.stdout.split() == [DB_TLS_CA, str(expected)], (run.stdout, run.stderr)


def test_by_default_a_database_without_tls_is_refused_in_one_line(image, mariadb, tmp_path):
    """MLFLOW_DB_TLS_CA not given: the image's bundle applies, and a MariaDB that offers no TLS is
    refused at once (no plain fallback), in one line naming MLFLOW_DB_TLS_CA."""
    env_file = tmp_path / "server.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{k}={v}\n" for k, v in {
            "MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": mariadb.port,
            "MLFLOW_DB_USER": "nobody", "MLFLOW_DB_PASSWORD": "not-a-real-password",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": "not-a-real-key", "MLFLOW_AUTH_ADMIN_PASSWORD": "not-a-real-password",
            "MLFLOW_ARTIFACTS_DESTINATION": "/var/spool/mlflow/artifacts", "MLFLOW_PORT": free_port(),
            "MLFLOW_DB_WAIT_SECONDS": 300}.items()))
    run = docker("run", *LOCKED_DOWN, "--network", "host", "--env-file", str(env_file),
                 "--tmpfs", f"/var/spool/mlflow:uid={UID},gid={UID},mode=0700", image.tag, check=False, timeout=120)
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(errors) == 1, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    assert "does not offer TLS" in errors[0] and "MLFLOW_DB_TLS_CA" in errors[0], errors[0]
