"""Opt-in: the promotion copy (``components.ecr_copy``) against the real Amazon ECR API.

Runs only with ``RUN_AWS_E2E=1`` and AWS credentials (no Pulumi CLI needed). Creates two
throw-away repositories ``mlflow-copy-e2e-<random>-{src,dst}`` (IMMUTABLE, like the stacks'),
pushes a small synthetic image into the first through the ECR API (a 12 MiB layer: three upload
parts), copies it with :func:`components.ecr_copy.copy_image`, checks that the second holds the
same digest and manifest bytes, that a second copy changes nothing, and that a missing digest is
one clear line; then deletes both repositories (always). Costs a few cents at most.

    RUN_AWS_E2E=1 AWS_PROFILE=... .venv/bin/python -m pytest tests/automation/test_e2e_ecr_copy.py -v
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets

import pytest

from tests.automation.test_e2e_aws import _aws_credentials_present

_SKIP = ("opt-in: set RUN_AWS_E2E=1 (needs AWS credentials; never run in CI here)"
         if os.environ.get("RUN_AWS_E2E") != "1" else
         None if _aws_credentials_present() else "no AWS credentials configured")
pytestmark = [pytest.mark.aws_e2e, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

MIB = 1024 * 1024


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push(ecr, account: str, repo: str, blobs: list[bytes]) -> str:
    """Blobs through the layer-upload API, then a Docker v2 manifest; returns its digest."""
    for blob in blobs:
        up = ecr.initiate_layer_upload(registryId=account, repositoryName=repo)
        for first in range(0, len(blob), 10 * MIB):
            part = blob[first:first + 10 * MIB]
            ecr.upload_layer_part(registryId=account, repositoryName=repo, uploadId=up["uploadId"],
                                  partFirstByte=first, partLastByte=first + len(part) - 1, layerPartBlob=part)
        ecr.complete_layer_upload(registryId=account, repositoryName=repo, uploadId=up["uploadId"],
                                  layerDigests=[_sha(blob)])
    config, *layers = blobs
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": len(config),
                   "digest": _sha(config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": len(b),
                    "digest": _sha(b)} for b in layers]}, indent=3)
    ecr.put_image(registryId=account, repositoryName=repo, imageManifest=manifest, imageTag="built")
    return _sha(manifest.encode())


def test_copy_between_two_repositories_of_one_registry_keeps_the_digest():
    import boto3

    from components.ecr_copy import CopyError, boto_client, copy_image

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "eu-west-1"
    ecr = boto_client(region)
    account = boto3.client("sts", region_name=region).get_caller_identity()["Account"]
    base = f"mlflow-copy-e2e-{secrets.token_hex(4)}"
    names = [f"{base}-src", f"{base}-dst"]
    urls = []
    try:
        for name in names:
            repo = ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")["repository"]
            urls.append(repo["repositoryUri"])
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
        digest = _push(ecr, account, names[0], [config, os.urandom(12 * MIB), b"small layer"])
        src_ref = f"{urls[0]}@{digest}"

        assert copy_image(src_ref, urls[1]) == f"{urls[1]}@{digest}"
        got = ecr.batch_get_image(registryId=account, repositoryName=names[1], imageIds=[{"imageDigest": digest}])
        want = ecr.batch_get_image(registryId=account, repositoryName=names[0], imageIds=[{"imageDigest": digest}])
        assert got["images"][0]["imageManifest"] == want["images"][0]["imageManifest"]
        assert copy_image(src_ref, urls[1]) == f"{urls[1]}@{digest}"  # IMMUTABLE: a second copy is a no-op

        with pytest.raises(CopyError) as err:
            copy_image(f"{urls[0]}@sha256:{'0' * 64}", urls[1])
        assert "\n" not in str(err.value) and f"repository '{names[0]}'" in str(err.value)
    finally:
        for name in names:
            try:
                ecr.delete_repository(registryId=account, repositoryName=name, force=True)
            except ecr.exceptions.RepositoryNotFoundException:
                pass
