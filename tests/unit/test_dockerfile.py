"""image/Dockerfile read as text (no Docker): the base image is pinned by digest, the labels say which
base was used, and the spool is declared a VOLUME at the path the task definition mounts.

Why the VOLUME matters (Amazon ECS Developer Guide, "Use bind mounts with Amazon ECS",
Considerations): a Fargate task's bind mount (the ephemeral-storage volume) starts empty, "By default,
the volume permissions are set to 0755 and the owner as root. You can customize these permissions in
the Dockerfile", and "the Amazon ECS data plane looks for a VOLUME directive. If the absolute path that's
specified in the VOLUME directive is the same as the containerPath that's specified in the task
definition, the data in the VOLUME directive path is copied to the data volume". Without it, the
image's non-root user finds a root-owned 0755 spool it cannot write, on a read-only root.
The Docker side is the Dockerfile reference ("VOLUME": changes to the volume's data by build steps
after the declaration are discarded) and the OCI image spec's pre-defined annotations
(org.opencontainers.image.base.name / base.digest).
"""

from __future__ import annotations

import subprocess

import pytest

from components.service import SPOOL_PATH
from tests.container import dockerfile
from tests.container.dockerfile import PINNED

OK_DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_the_default_base_image_is_pinned_by_a_digest():
    base, digest = dockerfile.pinned_base()
    assert base.startswith("python:3.12-slim@"), base
    assert len(digest) == len("sha256:") + 64


@pytest.mark.parametrize("ref, pinned", [
    (f"python:3.12-slim@{OK_DIGEST}", True),
    (f"docker.io/library/python:3.12-slim@{OK_DIGEST}", True),
    ("python:3.12-slim", False),                              # a moving tag
    (f"python:3.12-slim@{OK_DIGEST[:-1]}", False),            # 63 hex digits
    (f"python:3.12-slim@{OK_DIGEST.upper()}", False),
    (f"python:3.12-slim@sha512:{'0' * 64}", False),
])
def test_what_counts_as_pinned(ref, pinned):
    assert bool(PINNED.match(ref)) is pinned


def test_the_base_labels_name_the_base_the_build_used():
    base, digest = dockerfile.pinned_base()
    after_from = dockerfile.arg_defaults(before_from=False)
    # the digest label has its own ARG (no string surgery in a Dockerfile); its default must be the
    # digest of the default base, and both are re-declared after FROM so the labels can use them
    assert "PYTHON_IMAGE" in after_from and after_from.get("PYTHON_IMAGE_DIGEST") == digest, after_from
    labels = dockerfile.labels()
    assert labels["org.opencontainers.image.base.name"] == "${PYTHON_IMAGE}", labels
    assert labels["org.opencontainers.image.base.digest"] == "${PYTHON_IMAGE_DIGEST}", labels


def _digest_check() -> str:
    runs = [rest for k, rest in dockerfile.instructions() if k == "RUN" and "PYTHON_IMAGE_DIGEST" in rest]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.parametrize("image, digest, ok", [
    ("default", "default", True),
    ("python:3.12-slim", "", True),                         # the local stand-in: no digest to claim
    ("python:3.12-slim", "default", False),                 # PYTHON_IMAGE overridden alone
    (f"python:3.12-slim@{OK_DIGEST}", "default", False),    # pinned elsewhere, label left behind
    ("default", "", False),
    (f"python:3.13-slim@{OK_DIGEST}", OK_DIGEST, True),
])
def test_the_build_refuses_a_digest_label_that_is_not_the_bases_digest(image, digest, ok):
    """The build step that guards the base.digest label, run with sh as `docker build` runs it (each ARG
    an environment variable of the step)."""
    base, default = dockerfile.pinned_base()
    env = {"PATH": "/usr/bin:/bin", "PYTHON_IMAGE": base if image == "default" else image,
           "PYTHON_IMAGE_DIGEST": default if digest == "default" else digest}
    p = subprocess.run(["sh", "-c", _digest_check()], env=env, capture_output=True, text=True, timeout=10)
    assert (p.returncode == 0) is ok, (env, p.stderr)
    if not ok:
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("PYTHON_IMAGE_DIGEST=") and "PYTHON_IMAGE=" in lines[0]


def test_the_spool_is_a_volume_at_the_task_definitions_mount_path():
    assert dockerfile.volumes() == [SPOOL_PATH], (
        f"image/Dockerfile must declare VOLUME [\"{SPOOL_PATH}\"] (components/service.py SPOOL_PATH): "
        f"without it Fargate mounts an empty root-owned 0755 directory there; declared: {dockerfile.volumes()}")
    keywords = [k for k, _ in dockerfile.instructions()]
    assert keywords.index("VOLUME") > max(i for i, k in enumerate(keywords) if k == "RUN"), (
        "VOLUME must come after every RUN: later build steps' changes to a declared volume are discarded")
    creates = [rest for k, rest in dockerfile.instructions() if k == "RUN" and SPOOL_PATH in rest]
    assert creates and f"install -d -o 10001 -g 10001 -m 0700 {SPOOL_PATH}" in creates[0], creates


def test_the_parser_reads_continuations_comments_and_both_volume_forms():
    text = ('ARG A=1\nFROM x\nARG B="two"\n# VOLUME /not\nRUN a \\\n  # inside\n  && b\n'
            'VOLUME /v1 /v2\nVOLUME ["/v3"]\nLABEL k1="a b" \\\n      k2=c\n')
    assert dockerfile.arg_defaults(text) == {"A": "1"}
    assert dockerfile.arg_defaults(text, before_from=False) == {"B": "two"}
    assert dockerfile.volumes(text) == ["/v1", "/v2", "/v3"]
    assert dockerfile.labels(text) == {"k1": "a b", "k2": "c"}
    assert ("RUN", "a  && b") in dockerfile.instructions(text)
