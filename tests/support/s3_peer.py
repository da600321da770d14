"""moto's S3-compatible server as a peer (tests/support/peers.py), optionally with IAM enforced
(tests/support/moto_iam.py), and the test-only credentials its clients use.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.peer_process import LOOPBACK, _Peer

# Credentials for the local S3 server only (moto accepts any); never real ones.
S3_TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


class S3Server(_Peer):
    """moto's S3-compatible server (moto[server]) on 127.0.0.1; use `env` for the clients.

    `enforce_iam=True`: IAM enforced, with S3 authorized as AWS documents it (tests/support/moto_iam.py).
    Started with INITIAL_NO_AUTH_ACTION_COUNT; an admin user allowed everything is made in that
    unauthenticated window, then enforcement starts at once (checked: the test key is refused).
    `admin` holds the admin's key (`client()` uses it); every authorization lands in `audit_log`.

    `complete_like_s3=True`: CompleteMultipartUpload answered as S3 does (200 at once, a space every
    `keepalive_s` s while moto assembles the object, then the result or the error inside the 200;
    tests/support/s3_like.py); `complete_delay_s` makes that assembly slower. Combines with enforce_iam.
    """

    name = "s3"
    BOOTSTRAP_REQUESTS = 100  # moto's unauthenticated window, closed by _ready() as soon as the admin exists

    def __init__(self, root=None, enforce_iam: bool = False, complete_like_s3: bool = False,
                 keepalive_s: float = 5.0, complete_delay_s: float = 0.0, grace_s: float = 0.25) -> None:
        super().__init__(root)
        self.enforce_iam = enforce_iam
        self.complete_like_s3, self.keepalive_s, self.complete_delay_s = complete_like_s3, keepalive_s, complete_delay_s
        self.grace_s = grace_s  # an answer within this keeps its own status (s3_like.py)
        self.admin = dict(S3_TEST_CREDENTIALS)
        self.audit_log = self.root / "iam-audit.jsonl"

    def _spawn(self) -> subprocess.Popen:
        moto = Path(sys.executable).parent / "moto_server"
        argv = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        extra = {}
        if self.enforce_iam:
            argv = [sys.executable, str(Path(__file__).with_name("moto_iam.py"))]
            extra = {"INITIAL_NO_AUTH_ACTION_COUNT": str(self.BOOTSTRAP_REQUESTS),
                     "MOTO_IAM_AUDIT_LOG": str(self.audit_log)}
        if self.complete_like_s3:
            argv = [sys.executable, str(Path(__file__).with_name("s3_like.py"))]
            extra.update(S3_LIKE_KEEPALIVE_S=str(self.keepalive_s), S3_LIKE_COMPLETE_DELAY_S=str(self.complete_delay_s),
                         S3_LIKE_GRACE_S=str(self.grace_s),
                         S3_LIKE_IAM="1" if self.enforce_iam else "0")
        log = open(self.log_path, "ab")
        return subprocess.Popen(
            [*argv, "-H", LOOPBACK, "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **S3_TEST_CREDENTIALS, **extra},
        )

    def _ready(self) -> None:
        super()._ready()
        if self.enforce_iam:
            from tests.support.iam import bootstrap_admin, start_enforcing

            region = S3_TEST_CREDENTIALS["AWS_REGION"]
            self.admin = {**S3_TEST_CREDENTIALS, **bootstrap_admin(self.endpoint_url, region, S3_TEST_CREDENTIALS)}
            start_enforcing(self.endpoint_url, region, S3_TEST_CREDENTIALS)

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client or server that talks to this S3 server."""
        return {**S3_TEST_CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
                "AWS_ENDPOINT_URL_S3": self.endpoint_url, "NO_PROXY": "127.0.0.1,localhost"}

    def client(self, service: str = "s3", region: str = "us-east-1"):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=region,
                            aws_access_key_id=self.admin["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.admin["AWS_SECRET_ACCESS_KEY"])

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name
