"""The load balancer's access logs: an S3 bucket with what Elastic Load Balancing requires ("Enable
access logs for your Application Load Balancer", ELB User Guide), a child of ``MlflowTrackingServer``
created before the service, whose load balancer writes into it (prod: ``albAccessLogs``).

The bucket: same region, SSE-S3 only (SSE-KMS is not supported), a bucket policy letting the
regional ELB account (regions available before August 2022) or the
``logdelivery.elasticloadbalancing.amazonaws.com`` service principal (newer regions) put objects
under ``AWSLogs/<account>/``. Public access blocked, ``BucketOwnerEnforced``, TLS only, expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

# --------------------------------------------------------------------------------------------
# Access log delivery (ELB User Guide, "Enable access logs for your Application Load Balancer")
# --------------------------------------------------------------------------------------------

ELB_ACCOUNTS: dict[str, str] = {
    "us-east-1": "127311923021", "us-east-2": "033677994240", "us-west-1": "027434742980",
    "us-west-2": "797873946194", "af-south-1": "098369216593", "ap-east-1": "754344448648",
    "ap-southeast-3": "589379963580", "ap-south-1": "718504428378", "ap-northeast-3": "383597477331",
    "ap-northeast-2": "600734575887", "ap-southeast-1": "114774131450", "ap-southeast-2": "783225319266",
    "ap-northeast-1": "582318560864", "ca-central-1": "985666609251", "eu-central-1": "054676820928",
    "eu-west-1": "156460612806", "eu-west-2": "652711504416", "eu-south-1": "635631232127",
    "eu-west-3": "009996457667", "eu-north-1": "897822967062", "me-south-1": "076674570225",
    "sa-east-1": "507241528517", "us-gov-west-1": "048591011584", "us-gov-east-1": "190560391635",
    "cn-north-1": "638102146993", "cn-northwest-1": "037604701340",
}
"""Regions available before August 2022: the bucket policy names the regional Elastic Load Balancing
account. Every later region: the ``logdelivery.elasticloadbalancing.amazonaws.com`` principal."""
ELB_LOG_DELIVERY_SERVICE = "logdelivery.elasticloadbalancing.amazonaws.com"


def partition_of(region: str) -> str:
    """The ARN partition of a region: ``aws-cn`` (China), ``aws-us-gov`` (GovCloud), else ``aws``."""
    return "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"


def elb_log_principal(region: str) -> dict[str, str]:
    """Who delivers the region's ALB access logs, as a bucket policy ``Principal``."""
    if region in ELB_ACCOUNTS:
        return {"AWS": f"arn:{partition_of(region)}:iam::{ELB_ACCOUNTS[region]}:root"}
    return {"Service": ELB_LOG_DELIVERY_SERVICE}


@dataclass(frozen=True, kw_only=True)
class AlbAccessLogsArgs:
    region: str
    account_id: str
    expire_days: int = 90
    """Days before a log object is deleted."""
    protect: bool = True
    """Pulumi ``protect`` on the bucket (and no ``force_destroy``)."""
    tags: dict[str, str] = field(default_factory=dict)


class AlbAccessLogs(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    """The bucket, resolved only once its policy is in place (ELB writes a test object when access
    logs are turned on and refuses the change if it cannot)."""
    bucket_arn: pulumi.Output[str]

    def __init__(self, name: str, args: AlbAccessLogsArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:AlbAccessLogs", name, None, opts)
        if not 1 <= args.expire_days <= 3650:
            raise ValueError(f"expire_days: 1 to 3650, got {args.expire_days!r}")
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        bucket = aws.s3.Bucket(f"{name}-bucket", force_destroy=not args.protect, tags=tags,
                               opts=pulumi.ResourceOptions(parent=self, protect=args.protect))
        block = aws.s3.BucketPublicAccessBlock(f"{name}-public-access-block", bucket=bucket.id,
                                               block_public_acls=True, block_public_policy=True,
                                               ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketOwnershipControls(f"{name}-ownership", bucket=bucket.id,
                                       rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
        # Access logs support SSE-S3 only (ELB User Guide, "Enable access logs", bucket requirements).
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}], opts=child)
        aws.s3.BucketLifecycleConfiguration(f"{name}-lifecycle", bucket=bucket.id, rules=[
            {"id": "expire-access-logs", "status": "Enabled", "filter": {}, "expiration": {"days": args.expire_days}},
            {"id": "abort-incomplete-multipart-uploads", "status": "Enabled", "filter": {},
             "abort_incomplete_multipart_upload": {"days_after_initiation": 7}},
        ], opts=child)
        policy = aws.s3.BucketPolicy(f"{name}-policy", bucket=bucket.id, policy=pulumi.Output.json_dumps({
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "ElbLogDelivery", "Effect": "Allow", "Principal": elb_log_principal(args.region),
                 "Action": "s3:PutObject",
                 "Resource": pulumi.Output.concat(bucket.arn, f"/AWSLogs/{args.account_id}/*")},
                {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                 "Resource": [bucket.arn, pulumi.Output.concat(bucket.arn, "/*")],
                 "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            ]}), opts=pulumi.ResourceOptions(parent=self, depends_on=[block]))
        self.bucket_name = pulumi.Output.all(bucket.bucket, policy.id).apply(lambda v: v[0])
        self.bucket_arn = bucket.arn
        self.register_outputs({"bucketName": self.bucket_name})
