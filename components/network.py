"""Network: a VPC over N availability zones with public, private and isolated subnets.

- public subnets: the load balancer and the NAT gateways (route to the internet gateway)
- private subnets: the ECS tasks (default route through a NAT gateway, when there is one)
- isolated subnets: the database (no route out of the VPC)

Built on ``awsx.ec2.Vpc`` (``networkImplementation: awsx``, the default): NAT strategy from
``nat_mode`` (``none`` -> ``None``, ``single`` -> ``Single``, ``perAz`` -> ``OnePerAz``), one subnet
spec per tier with explicit CIDR blocks (``subnet_strategy`` ``Auto``: awsx's explicit allocator
keeps them as given), so the layout is the hand-built one: the VPC range split into 16 blocks,
public 0-3, private 4-7, isolated 8-11. The S3 gateway endpoint (free, always) and, with
``nat_mode`` ``none`` and the tasks in the private subnets (``task_subnets``), the interface
endpoints for ECR (api, dkr), CloudWatch Logs and Secrets Manager stay pulumi-aws resources on the
VPC's outputs (tasks in the public subnets reach those services over their public IP and the
internet gateway, so they need neither a NAT nor the endpoints): the S3 endpoint goes on the route tables
the VPC reports for its private subnets (its route table associations). The interface endpoints'
security group (``endpoint_security_group_id``) has no rule of its own: the composition admits
443 from the service security group, which is created after the VPC.

A stack deployed with the hand-built network (before awsx) is adopted in place: a transform on the
awsx component gives each of its children that has a hand-built counterpart an alias to that
resource's URN (``network_legacy.legacy_names``), so the VPC, its subnets (and so the database's
subnet group), NAT gateways and EIPs keep their IDs; only route tables awsx adds (one per
public/isolated subnet where there was one shared) are new. ``networkImplementation: legacy``
keeps the hand-built resources themselves (``components/network_legacy.py``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
import pulumi_aws as aws
import pulumi_awsx as awsx

from components.network_legacy import build_legacy, legacy_names

NAT_MODES = ("none", "single", "perAz")
IMPLEMENTATIONS = ("awsx", "legacy")
INTERFACE_ENDPOINT_SERVICES = ("ecr.api", "ecr.dkr", "logs", "secretsmanager")
"""What a Fargate task needs without a NAT: pull from ECR, write logs, read its secrets."""
NAT_STRATEGY = {"none": awsx.ec2.NatGatewayStrategy.NONE, "single": awsx.ec2.NatGatewayStrategy.SINGLE,
                "perAz": awsx.ec2.NatGatewayStrategy.ONE_PER_AZ}
SUBNET_STRATEGY = awsx.ec2.SubnetAllocationStrategy.AUTO
"""awsx's explicit allocator takes ``cidrBlocks`` as given; its default (``Legacy``) never reads them."""
TIERS = (("public", awsx.ec2.SubnetType.PUBLIC), ("private", awsx.ec2.SubnetType.PRIVATE),
         ("isolated", awsx.ec2.SubnetType.ISOLATED))


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    availability_zones: tuple[str, ...]
    """Names of the availability zones to span (2 to 4; resolved once by the program)."""
    region: str
    """AWS region, for VPC endpoint service names (``com.amazonaws.<region>.s3``)."""
    cidr_block: str = "10.0.0.0/16"
    """IPv4 range of the VPC, /16 to /20. Each subnet gets 1/16 of it."""
    nat_mode: str = "single"
    """``none`` (interface endpoints instead), ``single`` (one NAT, cheap) or ``perAz`` (HA)."""
    task_subnets: str = "private"
    """Where the tasks run: ``private`` (without NAT they need the interface endpoints) or ``public``
    (a public IP each: no interface endpoints)."""
    implementation: str = "awsx"
    """``awsx`` (``awsx.ec2.Vpc``) or ``legacy`` (the hand-built resources, see network_legacy.py)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags on every resource."""

    def __post_init__(self) -> None:
        if not 2 <= len(self.availability_zones) <= 4 or len(set(self.availability_zones)) != len(self.availability_zones):
            raise ValueError(f"availability_zones: 2 to 4 distinct zones, got {self.availability_zones!r}")
        if self.nat_mode not in NAT_MODES:
            raise ValueError(f"nat_mode: one of {NAT_MODES}, got {self.nat_mode!r}")
        if self.task_subnets not in ("private", "public"):
            raise ValueError(f"task_subnets: private or public, got {self.task_subnets!r}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation: one of {IMPLEMENTATIONS}, got {self.implementation!r}")
        net = ipaddress.IPv4Network(self.cidr_block)
        if not 16 <= net.prefixlen <= 20:
            raise ValueError(f"cidr_block: a /16 to /20 network, got {self.cidr_block!r}")
        if not self.region:
            raise ValueError("region: required")

    @property
    def nat_count(self) -> int:
        return {"none": 0, "single": 1, "perAz": len(self.availability_zones)}[self.nat_mode]

    @property
    def interface_endpoints(self) -> bool:
        """Private tasks without a NAT reach ECR, Logs and Secrets Manager only through them."""
        return self.nat_mode == "none" and self.task_subnets == "private"

    def subnet_cidrs(self) -> dict[str, list[str]]:
        """CIDRs per tier and zone: the VPC range split into 16 blocks; public 0-3, private 4-7,
        isolated 8-11 (12-15 left free)."""
        blocks = list(ipaddress.IPv4Network(self.cidr_block).subnets(prefixlen_diff=4))
        n = len(self.availability_zones)
        return {tier: [str(blocks[base + i]) for i in range(n)]
                for tier, base in (("public", 0), ("private", 4), ("isolated", 8))}


def _nth(ids: pulumi.Output[Any], i: int, what: str) -> pulumi.Output[Any]:
    def pick(values):
        if len(values) <= i:
            raise ValueError(f"awsx.ec2.Vpc reported {len(values)} {what}, expected at least {i + 1}")
        return values[i]
    return ids.apply(pick)


def _route_tables_of(associations: list, subnet_ids: list[str]) -> pulumi.Output[list[str]]:
    """The route table of each subnet in ``subnet_ids`` (in that order), from the VPC's route
    table associations (a subnet has exactly one)."""
    pairs = pulumi.Output.all(*[pulumi.Output.all(a.subnet_id, a.route_table_id) for a in associations])

    def pick(found):
        tables = []
        for sid in subnet_ids:
            rts = [rt for s, rt in found if s == sid]
            if len(rts) != 1:
                raise ValueError(f"awsx.ec2.Vpc reported {len(rts)} route table associations for subnet {sid}")
            tables.append(rts[0])
        return tables
    return pairs.apply(pick)


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    """ID of the VPC."""
    vpc_cidr_block: str
    """IPv4 range of the VPC."""
    public_subnet_ids: list[pulumi.Output[str]]
    """One per zone: load balancer, NAT gateways."""
    private_subnet_ids: list[pulumi.Output[str]]
    """One per zone: ECS tasks."""
    isolated_subnet_ids: list[pulumi.Output[str]]
    """One per zone: database (no route out of the VPC)."""
    private_route_table_ids: list[pulumi.Output[str]]
    """Route tables of the private subnets (carry the S3 gateway endpoint)."""
    nat_gateway_ids: list[pulumi.Output[str]]
    """NAT gateways (none, one, or one per zone)."""
    s3_endpoint_id: pulumi.Output[str]
    """The S3 gateway endpoint."""
    endpoint_security_group_id: Optional[pulumi.Output[str]]
    """Security group of the interface endpoints (``nat_mode`` ``none`` with private tasks only), else ``None``."""
    vpc: Optional[awsx.ec2.Vpc]
    """The awsx component (``None`` with ``implementation`` ``legacy``)."""

    def __init__(self, name: str, args: NetworkArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        n = len(args.availability_zones)
        self.vpc = None
        if args.implementation == "legacy":
            built = build_legacy(self, name, args)
            self.vpc_id = built.vpc.id
            self.public_subnet_ids = [s.id for s in built.public]
            self.private_subnet_ids = [s.id for s in built.private]
            self.isolated_subnet_ids = [s.id for s in built.isolated]
            self.private_route_table_ids = [rt.id for rt in built.private_route_tables]
            self.nat_gateway_ids = [g.id for g in built.nats]
        else:
            self.vpc = vpc = self._awsx_vpc(name, args, tags)
            self.vpc_id = vpc.vpc_id
            self.public_subnet_ids = [_nth(vpc.public_subnet_ids, i, "public subnets") for i in range(n)]
            self.private_subnet_ids = [_nth(vpc.private_subnet_ids, i, "private subnets") for i in range(n)]
            self.isolated_subnet_ids = [_nth(vpc.isolated_subnet_ids, i, "isolated subnets") for i in range(n)]
            private_tables = pulumi.Output.all(vpc.route_table_associations, vpc.private_subnet_ids).apply(
                lambda v: _route_tables_of(v[0], v[1]))
            self.private_route_table_ids = [_nth(private_tables, i, "private route tables") for i in range(n)]
            self.nat_gateway_ids = [_nth(vpc.nat_gateways, i, "NAT gateways").apply(lambda g: g.id)
                                    for i in range(args.nat_count)]
        self.vpc_cidr_block = args.cidr_block

        s3 = aws.ec2.VpcEndpoint(f"{name}-s3", vpc_id=self.vpc_id, service_name=f"com.amazonaws.{args.region}.s3",
                                 vpc_endpoint_type="Gateway", route_table_ids=self.private_route_table_ids,
                                 tags={**tags, "Name": f"{name}-s3"}, opts=child)

        self.endpoint_security_group_id = None
        if args.interface_endpoints:
            sg = aws.ec2.SecurityGroup(f"{name}-endpoints-sg", vpc_id=self.vpc_id,
                                       description="Interface VPC endpoints: HTTPS from the service only",
                                       tags={**tags, "Name": f"{name}-endpoints"}, opts=child)
            self.endpoint_security_group_id = sg.id
            for svc in INTERFACE_ENDPOINT_SERVICES:
                aws.ec2.VpcEndpoint(f"{name}-{svc.replace('.', '-')}", vpc_id=self.vpc_id,
                                    service_name=f"com.amazonaws.{args.region}.{svc}", vpc_endpoint_type="Interface",
                                    private_dns_enabled=True, subnet_ids=self.private_subnet_ids,
                                    security_group_ids=[sg.id], tags={**tags, "Name": f"{name}-{svc}"}, opts=child)

        self.s3_endpoint_id = s3.id
        self.register_outputs({
            "vpcId": self.vpc_id,
            "publicSubnetIds": self.public_subnet_ids,
            "privateSubnetIds": self.private_subnet_ids,
            "isolatedSubnetIds": self.isolated_subnet_ids,
            "natGatewayIds": self.nat_gateway_ids,
            "s3EndpointId": self.s3_endpoint_id,
        })

    def _awsx_vpc(self, name: str, args: NetworkArgs, tags: dict[str, str]) -> awsx.ec2.Vpc:
        vpc_name = f"{name}-vpc"
        cidrs = args.subnet_cidrs()
        adopted = legacy_names(name, vpc_name, len(args.availability_zones), args.nat_count)

        def adopt(t: pulumi.ResourceTransformArgs) -> Optional[pulumi.ResourceTransformResult]:
            """Alias an awsx child to the hand-built resource it replaces (same type, same AWS
            object): a stack deployed before awsx keeps its VPC and subnets."""
            old = adopted.get((t.type_, t.name))
            if old is None:
                return None
            alias = pulumi.Alias(name=old, type_=t.type_, parent=self)
            return pulumi.ResourceTransformResult(
                props=t.props, opts=pulumi.ResourceOptions.merge(t.opts, pulumi.ResourceOptions(aliases=[alias])))

        return awsx.ec2.Vpc(
            vpc_name,
            awsx.ec2.VpcArgs(
                cidr_block=args.cidr_block,
                availability_zone_names=list(args.availability_zones),
                enable_dns_hostnames=True,  # private DNS of the interface endpoints needs both
                enable_dns_support=True,
                nat_gateways=awsx.ec2.NatGatewayConfigurationArgs(strategy=NAT_STRATEGY[args.nat_mode]),
                subnet_strategy=SUBNET_STRATEGY,
                subnet_specs=[awsx.ec2.SubnetSpecArgs(type=kind, cidr_blocks=cidrs[tier], tags={**tags, "tier": tier})
                              for tier, kind in TIERS],
                tags=tags,
            ),
            opts=pulumi.ResourceOptions(parent=self, transforms=[adopt]))
