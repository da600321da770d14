"""ArtifactStore: the S3 bucket behind MLflow's artifact proxy.

Never public: all four public-access blocks, ``BucketOwnerEnforced`` (no ACLs), server-side
encryption (SSE-S3 by default, a KMS key optional), a bucket policy denying any request not
made over TLS, aborted incomplete multipart uploads cleaned up, versioning with expiry of
noncurrent versions where the stack wants it (an unversioned bucket is never versioned),
``force_destroy`` only where the stack allows it.
Clients never need AWS credentials: they reach artifacts through the server's proxy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True, kw_only=True)
class ArtifactStoreArgs:
    prefix: str = "artifacts"
    """Key prefix under which MLflow stores artifacts (``s3://<bucket>/<prefix>``)."""
    force_destroy: bool = False
    """Let ``pulumi destroy`` delete the bucket with its objects (dev only)."""
    versioning: bool = True
    """Keep previous versions of overwritten/deleted objects."""
    noncurrent_version_days: int = 30
    """Days before a noncurrent version expires (with ``versioning``)."""
    abort_multipart_days: int = 7
    """Days before an incomplete multipart upload is aborted."""
    kms_key_arn: Optional[str] = None
    """KMS key for SSE-KMS; ``None`` = SSE-S3 (AES256)."""
    protect: bool = True
    """Pulumi ``protect`` on the bucket."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags on every resource."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*(/[A-Za-z0-9_\-]+)*", self.prefix):
            raise ValueError(f"prefix: letters, digits, _ - and / between segments, got {self.prefix!r}")
        if not 1 <= self.noncurrent_version_days <= 3650:
            raise ValueError(f"noncurrent_version_days: 1 to 3650, got {self.noncurrent_version_days!r}")
        if not 1 <= self.abort_multipart_days <= 365:
            raise ValueError(f"abort_multipart_days: 1 to 365, got {self.abort_multipart_days!r}")


class ArtifactStore(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    """Name of the bucket."""
    bucket_arn: pulumi.Output[str]
    """ARN of the bucket."""
    prefix: str
    """Artifact key prefix."""
    artifacts_uri: pulumi.Output[str]
    """``s3://<bucket>/<prefix>``: the server's ``MLFLOW_ARTIFACTS_DESTINATION``."""
    kms_key_arn: Optional[str]
    """The KMS key, if SSE-KMS is used."""

    def __init__(self, name: str, args: ArtifactStoreArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:ArtifactStore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)

        bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=args.force_destroy, tags=tags,
                               opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        block = aws.s3.BucketPublicAccessBlock(f"{name}-public-access-block", bucket=bucket.id,
                                               block_public_acls=True, block_public_policy=True,
                                               ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketOwnershipControls(f"{name}-ownership", bucket=bucket.id,
                                       rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
        if args.kms_key_arn:
            sse = {"sse_algorithm": "aws:kms", "kms_master_key_id": args.kms_key_arn}
        else:
            sse = {"sse_algorithm": "AES256"}
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": sse, "bucket_key_enabled": bool(args.kms_key_arn)}],
            opts=child)
        # No versioning resource without versioning: a new bucket then stays unversioned (putting
        # "Suspended" would make it versioning-suspended for good), and a bucket that had
        # versioning is suspended when the resource is deleted. The provider refuses an update to
        # "Disabled" from "Enabled" or "Suspended", so that status cannot express the switch.
        versioning = None
        if args.versioning:
            versioning = aws.s3.BucketVersioning(f"{name}-versioning", bucket=bucket.id,
                                                 versioning_configuration={"status": "Enabled"}, opts=child)

        rules = [{"id": "abort-incomplete-multipart-uploads", "status": "Enabled", "filter": {},
                  "abort_incomplete_multipart_upload": {"days_after_initiation": args.abort_multipart_days}}]
        if args.versioning:
            rules.append({"id": "expire-noncurrent-versions", "status": "Enabled", "filter": {},
                          "noncurrent_version_expiration": {"noncurrent_days": args.noncurrent_version_days},
                          "expiration": {"expired_object_delete_marker": True}})
        aws.s3.BucketLifecycleConfiguration(f"{name}-lifecycle", bucket=bucket.id, rules=rules,
                                            opts=pulumi.ResourceOptions(parent=self,
                                                                        depends_on=[versioning] if versioning else []))

        policy = pulumi.Output.json_dumps({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }],
        })
        aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.id, policy=policy,
                            opts=pulumi.ResourceOptions(parent=self, depends_on=[block]))

        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.prefix = args.prefix
        self.artifacts_uri = pulumi.Output.concat("s3://", bucket.bucket, "/", args.prefix)
        self.kms_key_arn = args.kms_key_arn
        self.register_outputs({
            "bucketName": self.bucket_name,
            "bucketArn": self.bucket_arn,
            "artifactsUri": self.artifacts_uri,
        })
