"""The cost estimate's data: the price table (``deploy/prices.json``), the resource types that are
free and why, the errors, and the estimate itself (its lines, usage notes, assumptions, rendering).
The graph is built in :mod:`deploy.cost`, priced in :mod:`deploy.cost_pricing`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRICES_FILE = Path(__file__).with_name("prices.json")
FALLBACK_REGION = "us-east-1"
AWAKE_FLOOR_ACU = 0.5
"""Capacity assumed while a 0-ACU (auto-pause) Aurora Serverless v2 instance is awake: the smallest
non-zero capacity Serverless v2 has (0.5 ACU); not a documented floor for min 0, an assumption."""
GC_RUN_SECONDS = 600
"""Assumed length of one scheduled gc task run (it holds a database connection while it runs)."""
WEEKS_PER_MONTH = 365.0 / 7 / 12

FREE: dict[str, str] = {
    "aws:ec2/vpc:Vpc": "VPCs are free",
    "aws:ec2/subnet:Subnet": "subnets are free",
    "aws:ec2/internetGateway:InternetGateway": "internet gateways are free (data transfer out is usage)",
    "aws:ec2/routeTable:RouteTable": "route tables are free",
    "aws:ec2/route:Route": "routes are free",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "free",
    "aws:ec2/securityGroup:SecurityGroup": "security groups are free",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "free",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "free",
    "aws:ecr/repository:Repository": "priced by storage (usage: ecr_storage_gb_month)",
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": "free (keeps ECR storage bounded)",
    "aws:ecs/taskDefinition:TaskDefinition": "a definition is free; its running tasks are priced with the ECS service "
                                             "(server) or as usage (admin step on deploys, gc per schedule)",
    "aws:iam/role:Role": "IAM is free",
    "aws:iam/rolePolicy:RolePolicy": "IAM is free",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "IAM is free",
    "aws:lb/listener:Listener": "included in the load balancer-hour",
    "aws:lb/listenerRule:ListenerRule": "included in the load balancer-hour (rule evaluations beyond 10 count in LCUs)",
    "aws:lb/targetGroup:TargetGroup": "included in the load balancer-hour",
    "aws:rds/clusterParameterGroup:ClusterParameterGroup": "free",
    "aws:rds/subnetGroup:SubnetGroup": "free",
    "aws:s3/bucket:Bucket": "priced by storage and requests (usage)",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "free (lifecycle transitions are requests)",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "free",
    "aws:s3/bucketPolicy:BucketPolicy": "free",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "free",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration":
        "free with SSE-S3 (SSE-KMS requests to a customer key are KMS requests: usage)",
    "aws:s3/bucketVersioning:BucketVersioning": "free (noncurrent versions are storage: usage)",
    "aws:s3/bucketNotification:BucketNotification": "free",
    "aws:secretsmanager/secretVersion:SecretVersion": "versions are included in the secret-month",
    "aws:acm/certificate:Certificate": "public ACM certificates are free",
    "aws:acm/certificateValidation:CertificateValidation": "not an AWS resource (waits for validation)",
    "aws:route53/record:Record": "records are free; alias queries to an ALB are free; the hosted zone is yours, "
                                 "not created by the program",
    "aws:appautoscaling/target:Target": "Application Auto Scaling is free for ECS",
    "aws:appautoscaling/policy:Policy": "free (its CloudWatch alarms are created and owned by Auto Scaling, "
                                        "not billed as alarms of yours: documented for target tracking)",
    "aws:appautoscaling/scheduledAction:ScheduledAction": "Application Auto Scaling is free",
    "aws:scheduler/schedule:Schedule": "EventBridge Scheduler: first 14 million invocations a month free "
                                       "(the gc task it starts: see usage)",
    "aws:cloudwatch/logGroup:LogGroup": "priced by ingestion and storage (usage)",
    "aws:cloudwatch/eventRule:EventRule": "rules on AWS service events are free",
    "aws:cloudwatch/eventTarget:EventTarget": "free",
    "aws:cloudwatch/logSubscriptionFilter:LogSubscriptionFilter": "free (the destination is usage)",
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": "the filter is free; its metric is a custom metric (usage)",
    "aws:sns/topic:Topic": "free; first million publishes a month free (usage)",
    "aws:sns/topicSubscription:TopicSubscription": "free (email notifications: first 1,000 a month free)",
    "aws:sns/topicPolicy:TopicPolicy": "free",
    "aws:kms/alias:Alias": "aliases are free",
    "aws:kms/keyPolicy:KeyPolicy": "free",
    "aws:wafv2/webAclAssociation:WebAclAssociation": "free (the web ACL is priced)",
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": "free (the logs are usage)",
    "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders": "free",
    "aws:cloudwatch/logResourcePolicy:LogResourcePolicy": "free",
    "docker:index/image:Image": "built and pushed by the deployer (ECR storage: usage)",
    "random:index/randomPassword:RandomPassword": "not an AWS resource",
    "random:index/randomString:RandomString": "not an AWS resource",
    "random:index/randomId:RandomId": "not an AWS resource",
    "pulumi-python:dynamic/mlflowtracking:DatabaseAdminRun": "not an AWS resource: runs the admin task on deploys "
                                                            "(a few Fargate minutes each: usage)",
    "pulumi-python:dynamic/mlflowtracking:EcrImageCopy": "not an AWS resource: copies the image on promotion",
}
"""Resource types that cost nothing by themselves, and why."""


class CostError(Exception):
    """The estimate cannot be made (one line)."""


class UnpricedType(CostError):
    """A resource type in the graph that is neither priced nor in :data:`FREE`."""


@dataclass
class Line:
    monthly: float
    what: str
    detail: str


@dataclass
class Estimate:
    stack: str
    region: str
    price_region: str
    read: str
    lines: list[Line] = field(default_factory=list)
    usage: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    unconfirmed: set[str] = field(default_factory=set)

    @property
    def total(self) -> float:
        return round(sum(line.monthly for line in self.lines), 2)

    def amount(self, prefix: str) -> float:
        """The sum of the lines whose ``what`` starts with ``prefix``."""
        return round(sum(line.monthly for line in self.lines if line.what.startswith(prefix)), 2)

    def render(self) -> str:
        out = [f"{self.stack} ({self.region}): idle monthly cost, list prices of {self.price_region} read {self.read} "
               f"(deploy/prices.json), {HOURS:g} h a month"]
        width = max((len(line.what) for line in self.lines), default=10)
        for line in sorted(self.lines, key=lambda x: -x.monthly):
            out.append(f"  ${line.monthly:8.2f}  {line.what:<{width}}  {line.detail}")
        out.append(f"  ${self.total:8.2f}  total when idle")
        out.append("Not in the total, grows with use:")
        out.extend(f"  - {u}" for u in self.usage)
        out.append("Assumptions:")
        out.extend(f"  - {a}" for a in self.assumptions)
        if self.unconfirmed:
            out.append(f"Unconfirmed prices used (see 'status' in deploy/prices.json): {', '.join(sorted(self.unconfirmed))}")
        return "\n".join(out) + "\n"


HOURS = 730.0


def load_prices(path: Path = PRICES_FILE) -> dict[str, Any]:
    return json.loads(path.read_text())

