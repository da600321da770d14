"""Taking over an existing MLflow (docs/takeover.md): the ``takeover`` stack setting, the admin
task role's read access to exactly the dump objects, and the admin container's environment.

The dumps are objects of the stack's own artifact bucket under ``takeover/`` (outside the artifact
prefix, so the server's task role, limited to ``<prefix>/*``, cannot read them: an auth dump holds
password hashes). The admin step (image/admin_import.py) loads them into the empty databases.

    takeover:
      dump: mlflow.sql.gz              # s3://<artifact bucket>/takeover/mlflow.sql.gz (required)
      authDump: mlflow_auth.sql.gz     # the basic-auth database (optional)
      artifactRoot: s3://old-bucket/mlruns   # only when the old clients wrote to S3 directly
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional

import pulumi

PREFIX = "takeover"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,199}")
ROOT_RE = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()\-/]*[A-Za-z0-9_\-])?")
KEYS = ("dump", "authDump", "artifactRoot")
ALLOWED = ("empty, or an object {dump: <file name under s3://<artifact bucket>/takeover/>, authDump: <file name, "
           "optional>, artifactRoot: <s3://old-bucket/old-prefix, optional: only when the old clients wrote to S3 "
           "directly>} (docs/takeover.md)")


@dataclass(frozen=True)
class Takeover:
    dump: str
    auth_dump: Optional[str] = None
    artifact_root: Optional[str] = None

    @property
    def keys(self) -> list[str]:
        return [f"{PREFIX}/{n}" for n in (self.dump, self.auth_dump) if n]

    def object_arns(self, bucket_arn: pulumi.Input[str]) -> list[pulumi.Output[str]]:
        """The dump objects' ARNs: what the admin task role may read, nothing else of the bucket."""
        return [pulumi.Output.concat(bucket_arn, "/", key) for key in self.keys]

    def environment(self, bucket_name: pulumi.Input[str]) -> dict[str, Any]:
        """The admin container's MLFLOW_IMPORT_* variables (image/admin_import.py)."""
        env: dict[str, Any] = {"MLFLOW_IMPORT_TRACKING_DUMP": pulumi.Output.concat("s3://", bucket_name, "/",
                                                                                 f"{PREFIX}/{self.dump}")}
        if self.auth_dump:
            env["MLFLOW_IMPORT_AUTH_DUMP"] = pulumi.Output.concat("s3://", bucket_name, "/", f"{PREFIX}/{self.auth_dump}")
        if self.artifact_root:
            env["MLFLOW_IMPORT_ARTIFACT_ROOT"] = self.artifact_root
        return env


def parse(raw: Any) -> Optional[Takeover]:
    """The setting's value (a mapping, or its JSON text as the engine passes objects); None when empty.

    :raises ValueError: with what is allowed."""
    if raw is None or (isinstance(raw, str) and raw.strip() in ("", "{}")):
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValueError(ALLOWED) from None
    if not isinstance(raw, dict) or set(raw) - set(KEYS) or not raw.get("dump"):
        raise ValueError(ALLOWED)
    names = [raw.get("dump"), raw.get("authDump") or None]
    if any(n is not None and (not isinstance(n, str) or not NAME_RE.fullmatch(n)) for n in names):
        raise ValueError(f"dump / authDump: a file name (letters, digits, . _ -; at most 200) under "
                         f"s3://<artifact bucket>/{PREFIX}/")
    if names[0] == names[1]:
        raise ValueError("dump and authDump: two different files")
    root = raw.get("artifactRoot") or None
    if root is not None:
        if not isinstance(root, str) or not ROOT_RE.fullmatch(root.rstrip("/")):
            raise ValueError("artifactRoot: s3://<old bucket>/<old prefix> (the old server's artifact root, where its "
                             "runs' s3:// artifact URIs begin)")
        root = root.rstrip("/")
    return Takeover(names[0], names[1], root)
