"""ArtifactStore on its own: never public, owner-enforced, encrypted, TLS only, lifecycle rules."""

from __future__ import annotations

import pytest

from components.artifact_store import ArtifactStore, ArtifactStoreArgs
from tests.unit.harness import run


def store(**kw):
    return run(lambda: ArtifactStore("art", ArtifactStoreArgs(**kw)))


@pytest.fixture(scope="module")
def dev_store():
    return store(force_destroy=True, versioning=False, protect=False)


@pytest.fixture(scope="module")
def prod_store():
    return store(force_destroy=False, versioning=True, noncurrent_version_days=45, protect=True,
                 kms_key_arn="arn:aws:kms:eu-west-1:123456789012:key/abcd-1234")


def test_all_four_public_access_blocks(dev_store):
    block = dev_store.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block[flag] is True, flag


def test_bucket_owner_enforced(dev_store):
    own = dev_store.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls").inputs
    assert own["rule"] == {"objectOwnership": "BucketOwnerEnforced"}


def test_sse_s3_by_default_and_kms_when_given(dev_store, prod_store):
    enc = dev_store.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert enc.inputs["rules"][0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    enc = prod_store.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    assert enc.inputs["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"


def test_policy_denies_every_request_without_tls(dev_store):
    bucket = dev_store.one("aws:s3/bucket:Bucket")
    (st,) = dev_store.one("aws:s3/bucketPolicy:BucketPolicy").policy()["Statement"]
    assert st["Effect"] == "Deny" and st["Principal"] == "*" and st["Action"] == "s3:*"
    assert st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    arn = bucket.outputs["arn"]
    assert sorted(st["Resource"]) == sorted([arn, f"{arn}/*"])
    assert not [s for s in dev_store.one("aws:s3/bucketPolicy:BucketPolicy").policy()["Statement"]
                if s["Effect"] == "Allow"]


def test_dev_force_destroy_no_versioning_no_protect(dev_store):
    bucket = dev_store.one("aws:s3/bucket:Bucket")
    assert bucket.inputs["forceDestroy"] is True and not bucket.protect
    rules = dev_store.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    assert [r["id"] for r in rules] == ["abort-incomplete-multipart-uploads"]
    assert rules[0]["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 7


def test_a_bucket_without_versioning_is_never_versioned(dev_store):
    """S3 User Guide, "Using versioning in S3 buckets": a bucket is unversioned until versioning is
    enabled, and once enabled or suspended it can never return to unversioned. Putting
    ``Suspended`` on a new bucket makes it a versioning-suspended bucket for good. The
    provider's ``aws_s3_bucket_versioning`` refuses an update from ``Enabled``/``Suspended`` to
    ``Disabled`` and, when deleted, suspends a versioned bucket and leaves an unversioned one
    alone: so no versioning resource at all is what keeps a new bucket unversioned and still
    suspends one that had versioning."""
    assert [x.inputs["versioningConfiguration"]["status"]
            for x in dev_store.of_type("aws:s3/bucketVersioning:BucketVersioning")] == []


def test_prod_protected_versioned_with_noncurrent_expiry(prod_store):
    bucket = prod_store.one("aws:s3/bucket:Bucket")
    assert bucket.protect and bucket.inputs["forceDestroy"] is False
    assert prod_store.one("aws:s3/bucketVersioning:BucketVersioning").inputs["versioningConfiguration"][
        "status"] == "Enabled"
    rules = prod_store.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs["rules"]
    noncurrent = [r for r in rules if "noncurrentVersionExpiration" in r]
    assert noncurrent[0]["noncurrentVersionExpiration"]["noncurrentDays"] == 45


def test_children_parented_and_every_s3_setting_targets_the_bucket(dev_store):
    comp = dev_store.one("mlflowtracking:index:ArtifactStore")
    bucket = dev_store.one("aws:s3/bucket:Bucket")
    for x in dev_store.resources:
        if x is comp:
            continue
        assert x.parent == comp.urn and x.name.startswith("art-")
        if x is not bucket:
            assert x.inputs["bucket"] == bucket.id


@pytest.mark.parametrize("kw", [{"prefix": "/bad"}, {"noncurrent_version_days": 0}, {"abort_multipart_days": 0}])
def test_args_validation(kw):
    with pytest.raises(ValueError):
        ArtifactStoreArgs(**kw)
