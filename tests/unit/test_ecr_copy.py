"""The promotion copy: a digest copied from dev's ECR repository into prod's, unchanged.

Runs ``components.ecr_copy`` against ``tests/unit/fake_ecr.py``, a stand-in as strict as the
*Amazon ECR API Reference* (layers are per repository, PutImage refuses a manifest whose blobs are
not in the target repository, parts of 5 to 10 MiB, IMMUTABLE tags never pushed twice).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from pulumi.runtime.rpc import UNKNOWN

from components import ecr_copy
from components.ecr_copy import CopyError, EcrImageCopyProvider, copy_image
from tests.unit.fake_ecr import MIB, FakeEcr, digest_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEV_ACCOUNT = PROD_ACCOUNT = "123456789012"
REGION = "eu-west-1"
HOST = f"{DEV_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
DEV_REPO, PROD_REPO = "mlflow-dev-1a2b", "mlflow-prod-3c4d"
PROD_URL = f"{HOST}/{PROD_REPO}"
BIG = os.urandom(12 * MIB + 3)  # three parts' worth: 10 MiB + 2 MiB + 3 bytes


@pytest.fixture
def ecr() -> FakeEcr:
    fake = FakeEcr()
    fake.repo(DEV_ACCOUNT, REGION, DEV_REPO)
    fake.repo(PROD_ACCOUNT, REGION, PROD_REPO)  # what the prod stack's aws.ecr.Repository created
    return fake


def copy(ecr: FakeEcr, ref: str) -> str:
    return copy_image(ref, PROD_URL, client=ecr.client, fetch=ecr.fetch)


def dev_ref(digest: str) -> str:
    return f"{HOST}/{DEV_REPO}@{digest}"


def test_the_copy_keeps_the_digest_and_the_manifest_bytes(ecr):
    """ECR API Reference, PutImage: ``imageDigest`` must equal the SHA-256 ECR computes, so the
    manifest goes over byte for byte; the blobs go first (PutImage: LayersNotFoundException)."""
    small = b"layer-two" * 100
    digest = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [BIG, small], tag="abc123")

    ref = copy(ecr, dev_ref(digest))

    assert ref == f"{PROD_URL}@{digest}"
    src, dst = ecr.repo(DEV_ACCOUNT, REGION, DEV_REPO), ecr.repo(PROD_ACCOUNT, REGION, PROD_REPO)
    assert dst.images[digest] == src.images[digest]
    assert dst.tags == {"sha256-" + digest.split(":")[1]: digest}  # a tag unique per content
    assert set(dst.blobs) == set(src.blobs)  # config and both layers, now prod's own
    parts = [c[2]["size"] for c in ecr.ops("UploadLayerPart")]
    assert sorted(parts, reverse=True)[:2] == [10 * MIB, 2 * MIB + 3]
    assert all(p <= 10 * MIB for p in parts)
    (put,) = ecr.ops("PutImage")
    assert put[2]["imageDigest"] == digest and put[2]["repositoryName"] == PROD_REPO


def test_layers_prod_already_holds_are_not_copied_again(ecr):
    first = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [BIG, b"app v1"])
    copy(ecr, dev_ref(first))
    ecr.calls.clear()
    second = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [BIG, b"app v2"])

    copy(ecr, dev_ref(second))

    fetched = {c[2]["layerDigest"] for c in ecr.ops("GetDownloadUrlForLayer")}
    assert digest_of(BIG) not in fetched and digest_of(b"app v2") in fetched
    assert ecr.repo(PROD_ACCOUNT, REGION, PROD_REPO).images.keys() == {first, second}


def test_an_image_prod_already_holds_is_left_alone_even_with_dev_destroyed(ecr):
    """Idempotent: a second ``up`` (or a re-promotion of the same digest) changes nothing, and in
    an IMMUTABLE repository a second PutImage of the same tag would fail (roadmap#2179)."""
    digest = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"x" * 1000])
    copy(ecr, dev_ref(digest))
    del ecr.repos[(DEV_ACCOUNT, REGION, DEV_REPO)]  # pulumi destroy -s dev (force_delete)
    ecr.calls.clear()

    assert copy(ecr, dev_ref(digest)) == f"{PROD_URL}@{digest}"
    assert [c[1] for c in ecr.calls] == ["DescribeImages"]


def test_an_image_index_is_copied_with_its_platform_images(ecr):
    amd = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"amd64 layer"])
    arm = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"arm64 layer"])
    index = ecr.push_index(DEV_ACCOUNT, REGION, DEV_REPO, [amd, arm], tag="multi")

    copy(ecr, dev_ref(index))

    dst = ecr.repo(PROD_ACCOUNT, REGION, PROD_REPO)
    assert dst.images.keys() == {amd, arm, index}
    assert list(dst.tags.values()) == [index]  # platform images untagged, the index tagged


@pytest.mark.parametrize("gone", ["image", "repository"])
def test_a_missing_source_image_is_one_clear_line(ecr, gone):
    """ECR API Reference, BatchGetImage: a missing image is a ``failures`` entry (ImageNotFound),
    a missing repository a RepositoryNotFoundException."""
    missing = "sha256:" + "d" * 64
    if gone == "repository":
        del ecr.repos[(DEV_ACCOUNT, REGION, DEV_REPO)]
    with pytest.raises(CopyError) as err:
        copy(ecr, dev_ref(missing))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"cannot copy {dev_ref(missing)}: ")
    assert f"repository '{DEV_REPO}'" in msg and "promote" in msg
    assert not ecr.ops("PutImage")


def test_a_manifest_that_does_not_hash_to_its_digest_is_never_pushed(ecr):
    digest = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"layer"])
    src = ecr.repo(DEV_ACCOUNT, REGION, DEV_REPO)
    manifest, media_type = src.images[digest]
    src.images[digest] = (manifest.replace("   ", "  "), media_type)  # same JSON, other bytes
    with pytest.raises(CopyError, match="does not hash to"):
        copy(ecr, dev_ref(digest))
    assert not ecr.ops("PutImage")


def test_the_tag_part_of_a_tagged_reference_is_not_the_repository(ecr):
    digest = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"layer"])
    assert copy(ecr, f"{HOST}/{DEV_REPO}:v1@{digest}") == f"{PROD_URL}@{digest}"


def test_only_ecr_references_are_copied(ecr):
    with pytest.raises(CopyError, match="not an Amazon ECR image reference"):
        copy(ecr, "ghcr.io/org/mlflow@sha256:" + "a" * 64)


# --------------------------------------------------------------------------- the dynamic provider


def provider(ecr: FakeEcr) -> EcrImageCopyProvider:
    return EcrImageCopyProvider(client=ecr.client, fetch=ecr.fetch)


def props(ref: str, url: str = PROD_URL) -> dict:
    return {"source_ref": ref, "repository_url": url, "digest": ref.rsplit("@", 1)[1], "image_ref": None}


def test_check_refuses_a_source_digest_that_no_longer_exists(ecr):
    """The preview fails before anything changes (and ``deploy.promote`` restores the config)."""
    ref = dev_ref("sha256:" + "e" * 64)
    for url in (UNKNOWN, PROD_URL):  # first preview: prod's repository does not exist yet
        (failure,) = provider(ecr).check({}, props(ref, url)).failures
        assert failure.property == "source_ref" and "not in repository" in failure.reason
        assert "\n" not in failure.reason


def test_check_accepts_a_digest_prod_already_holds_after_dev_is_gone(ecr):
    digest = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"layer"])
    copy(ecr, dev_ref(digest))
    del ecr.repos[(DEV_ACCOUNT, REGION, DEV_REPO)]
    assert provider(ecr).check({}, props(dev_ref(digest))).failures == []


def test_diff_replaces_on_a_new_digest_and_when_prod_lost_the_image(ecr):
    one = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"one"])
    two = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"two"])
    p = provider(ecr)
    created = p.create(props(dev_ref(one)))
    assert created.outs["image_ref"] == f"{PROD_URL}@{one}" and created.id == f"{PROD_URL}@{one}"
    old = created.outs
    assert p.diff(created.id, old, props(dev_ref(one))).changes is False
    d = p.diff(created.id, old, props(dev_ref(two)))
    assert d.changes is True and "source_ref" in d.replaces and d.delete_before_replace is False
    ecr.repo(PROD_ACCOUNT, REGION, PROD_REPO).images.pop(one)  # someone deleted it by hand
    assert p.diff(created.id, old, props(dev_ref(one))).changes is True


def test_delete_keeps_the_image(ecr):
    """Old digests stay: ECS's circuit breaker rolls back to the previous task definition, whose
    image must still be pullable. The repository itself goes with ``force_delete`` on destroy."""
    digest = ecr.push(DEV_ACCOUNT, REGION, DEV_REPO, [b"layer"])
    p = provider(ecr)
    created = p.create(props(dev_ref(digest)))
    ecr.calls.clear()
    p.delete(created.id, created.outs)
    assert ecr.calls == [] and digest in ecr.repo(PROD_ACCOUNT, REGION, PROD_REPO).images


def test_the_engine_loads_the_provider_by_reference_from_the_project(tmp_path):
    """Pulumi stores the provider pickled (dill) in the state and loads it in a separate process
    (``python -m pulumi.dynamic``, started in the project directory). By reference, not by value:
    the state then holds no bytecode that a newer Python could not load."""
    from pulumi.dynamic.dynamic import serialize_provider

    blob = serialize_provider(EcrImageCopyProvider())
    assert len(base64.b64decode(blob)) < 300, "the provider was pickled by value"
    code = ("import base64, dill, sys; p = dill.loads(base64.b64decode(sys.argv[1])); "
            "print(type(p).__module__ + '.' + type(p).__qualname__)")
    out = subprocess.run([sys.executable, "-c", code, blob], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "components.ecr_copy.EcrImageCopyProvider", out.stderr[-2000:]


def test_boto3_clients_have_bounded_timeouts_and_the_source_region(monkeypatch):
    seen = {}

    def fake_client(service, region_name, config):
        seen.update(service=service, region=region_name, connect=config.connect_timeout, read=config.read_timeout)
        return object()

    monkeypatch.setattr(ecr_copy.boto3, "client", fake_client)
    ecr_copy.boto_client("eu-central-1")
    assert seen["service"] == "ecr" and seen["region"] == "eu-central-1"
    assert 0 < seen["connect"] <= 60 and 0 < seen["read"] <= 300

