"""Physical names fit AWS's limits for any valid composite resource name (not just ``mlflow``).

Pulumi names most resources ``<logical name>-<7 hex>`` (8 characters added; Pulumi docs
"Resource names: autonaming", pulumi-aws issue 2121), and AWS refuses names over its limits
only at ``pulumi up``: the mocks never see it. This test computes every physical name the way
the engine will and checks it against the limits AWS documents.
"""

from __future__ import annotations

import pytest

from tests.unit.harness import run, stack_config

AUTONAME_SUFFIX = 8
"""``-`` plus 7 random hex characters."""
PREFIX_SUFFIX = 26
"""terraform-plugin-sdk ``id.PrefixedUniqueId``: a ``*_prefix`` argument gets a 26-character suffix."""

# type -> (name argument, prefix argument, name limit, prefix limit)
LIMITS = {
    # Elastic Load Balancing API, CreateLoadBalancer / CreateTargetGroup: at most 32 characters;
    # terraform-provider-aws aws_lb / aws_lb_target_group: name_prefix at most 6.
    "aws:lb/loadBalancer:LoadBalancer": ("name", "namePrefix", 32, 6),
    "aws:lb/targetGroup:TargetGroup": ("name", "namePrefix", 32, 6),
    # IAM User Guide, "IAM object quotas": role names 64, inline policy names 128.
    "aws:iam/role:Role": ("name", "namePrefix", 64, 38),
    "aws:iam/rolePolicy:RolePolicy": ("name", "namePrefix", 128, 102),
    # RDS API, CreateDBCluster / CreateDBInstance: identifiers 1-63 characters.
    "aws:rds/cluster:Cluster": ("clusterIdentifier", "clusterIdentifierPrefix", 63, 37),
    "aws:rds/clusterInstance:ClusterInstance": ("identifier", "identifierPrefix", 63, 37),
    "aws:rds/subnetGroup:SubnetGroup": ("name", "namePrefix", 255, 229),
    # RDS API, CreateDBClusterParameterGroup: DBClusterParameterGroupName 1-255 characters.
    "aws:rds/clusterParameterGroup:ClusterParameterGroup": ("name", "namePrefix", 255, 229),
    # S3 User Guide, "Bucket naming rules": 3-63 characters.
    "aws:s3/bucket:Bucket": ("bucket", "bucketPrefix", 63, 37),
    "aws:ec2/securityGroup:SecurityGroup": ("name", "namePrefix", 255, 229),
    "aws:ecs/cluster:Cluster": ("name", None, 255, 0),
    "aws:ecs/service:Service": ("name", None, 255, 0),
    "aws:ecs/taskDefinition:TaskDefinition": ("family", None, 255, 0),
    "aws:cloudwatch/logGroup:LogGroup": ("name", "namePrefix", 512, 483),
    "aws:secretsmanager/secret:Secret": ("name", "namePrefix", 512, 486),
    "aws:ecr/repository:Repository": ("name", None, 256, 0),
    "aws:appautoscaling/policy:Policy": ("name", None, 256, 0),
}

LONG_NAME = "analytics-mlflow-dev"  # 20 characters


def physical_names(r) -> list[tuple[str, str, int, str]]:
    """(resource, how named, length, limit) for every named resource of the graph."""
    out = []
    for x in r.resources:
        if x.type not in LIMITS:
            continue
        name_arg, prefix_arg, limit, prefix_limit = LIMITS[x.type]
        if x.inputs.get(name_arg):
            out.append((x.name, f"{name_arg}={x.inputs[name_arg]}", len(x.inputs[name_arg]), limit))
        elif prefix_arg and x.inputs.get(prefix_arg):
            prefix = x.inputs[prefix_arg]
            out.append((x.name, f"{prefix_arg}={prefix}", len(prefix), prefix_limit))
            out.append((x.name, f"{prefix_arg}={prefix}+unique", len(prefix) + PREFIX_SUFFIX, limit))
        else:
            out.append((x.name, "autoname", len(x.name) + AUTONAME_SUFFIX, limit))
    return out


def run_named(name: str, **overrides):
    import program

    captured = {}

    def body():
        saved, program.RESOURCE_NAME = program.RESOURCE_NAME, name
        try:
            captured["server"] = program.define_stack()
        except ValueError as err:
            captured["error"] = err
        finally:
            program.RESOURCE_NAME = saved

    result = run(body, stack_config("dev", **overrides), "dev")
    return result, captured


@pytest.fixture(scope="module")
def long_named():
    r, captured = run_named(LONG_NAME, hostedZoneId="Z0123456789ABCDEFGHIJ", domainName="mlflow.example.com",
                            dbReader="true", natMode="none", maxTasks="3")
    assert "error" not in captured, captured.get("error")
    return r


def test_every_physical_name_fits_its_aws_limit_with_a_20_character_resource_name(long_named):
    names = physical_names(long_named)
    assert {t for t in LIMITS if long_named.of_type(t)} >= {
        "aws:lb/loadBalancer:LoadBalancer", "aws:lb/targetGroup:TargetGroup", "aws:iam/role:Role",
        "aws:rds/cluster:Cluster", "aws:rds/clusterInstance:ClusterInstance", "aws:s3/bucket:Bucket"}
    too_long = [(res, how, n, limit) for res, how, n, limit in names if n > limit]
    assert too_long == []


def test_the_longest_accepted_name_fits_too_promoted_image_included():
    from tests.unit.harness import PROMOTED_REF

    r, captured = run_named("a" * 10 + "-" + "b" * 19, hostedZoneId="Z0123456789ABCDEFGHIJ",
                            domainName="mlflow.example.com", dbReader="true", maxTasks="3", imageRef=PROMOTED_REF)
    assert "error" not in captured, captured.get("error")
    assert [(res, how, n, limit) for res, how, n, limit in physical_names(r) if n > limit] == []


def test_the_committed_name_keeps_pulumis_autonames(dev):
    """With the default resource name nothing changes for existing stacks: no explicit or prefix
    name (which would replace the load balancer and change its DNS name)."""
    for x in dev.resources:
        if x.type in LIMITS:
            _, prefix_arg, _, _ = LIMITS[x.type]
            assert not (prefix_arg and x.inputs.get(prefix_arg)), x.name


@pytest.mark.parametrize("bad", ["Mlflow", "mlflow_tracking", "9mlflow", "mlflow-", "ml--flow", "m" * 31])
def test_a_resource_name_aws_cannot_use_is_refused_with_one_line(bad):
    _, captured = run_named(bad)
    err = captured.get("error")
    assert err is not None, f"{bad!r} accepted"
    msg = str(err)
    assert bad in msg and "lower-case" in msg and "\n" not in msg
