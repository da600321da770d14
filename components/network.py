"""Network: a VPC over N availability zones with public, private and isolated subnets.

- public subnets: the load balancer and the NAT gateways (route to the internet gateway)
- private subnets: the ECS tasks (default route through a NAT gateway, when there is one)
- isolated subnets: the database (no route out of the VPC)

NAT per stack: ``none`` | ``single`` | ``perAz``. An S3 gateway endpoint (free) is always on
the private route tables, so artifact traffic never pays NAT. With ``none``, interface
endpoints for ECR (api, dkr), CloudWatch Logs and Secrets Manager let tasks start without
internet access; their security group (``endpoint_security_group_id``) has no rule of its own:
the composition admits 443 from the service security group, which is created after the VPC.

Built from pulumi-aws resources (not ``awsx.ec2.Vpc``) so that every route, NAT gateway and
endpoint is visible to the unit tests.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_aws as aws

NAT_MODES = ("none", "single", "perAz")
INTERFACE_ENDPOINT_SERVICES = ("ecr.api", "ecr.dkr", "logs", "secretsmanager")
"""What a Fargate task needs without a NAT: pull from ECR, write logs, read its secrets."""


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
    tags: dict[str, str] = field(default_factory=dict)
    """Tags on every resource."""

    def __post_init__(self) -> None:
        if not 2 <= len(self.availability_zones) <= 4 or len(set(self.availability_zones)) != len(self.availability_zones):
            raise ValueError(f"availability_zones: 2 to 4 distinct zones, got {self.availability_zones!r}")
        if self.nat_mode not in NAT_MODES:
            raise ValueError(f"nat_mode: one of {NAT_MODES}, got {self.nat_mode!r}")
        net = ipaddress.IPv4Network(self.cidr_block)
        if not 16 <= net.prefixlen <= 20:
            raise ValueError(f"cidr_block: a /16 to /20 network, got {self.cidr_block!r}")
        if not self.region:
            raise ValueError("region: required")

    def subnet_cidrs(self) -> dict[str, list[str]]:
        """CIDRs per tier and zone: the VPC range split into 16 blocks; public 0-3, private 4-7,
        isolated 8-11 (12-15 left free)."""
        blocks = list(ipaddress.IPv4Network(self.cidr_block).subnets(prefixlen_diff=4))
        n = len(self.availability_zones)
        return {tier: [str(blocks[base + i]) for i in range(n)]
                for tier, base in (("public", 0), ("private", 4), ("isolated", 8))}


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
    """Security group of the interface endpoints (``nat_mode`` ``none`` only), else ``None``."""

    def __init__(self, name: str, args: NetworkArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = dict(args.tags)
        zones = args.availability_zones
        cidrs = args.subnet_cidrs()

        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr_block, enable_dns_support=True,
                          enable_dns_hostnames=True, tags={**tags, "Name": f"{name}-vpc"}, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-igw"}, opts=child)

        def subnets(tier: str) -> list[aws.ec2.Subnet]:
            return [aws.ec2.Subnet(f"{name}-{tier}-{i}", vpc_id=vpc.id, cidr_block=cidrs[tier][i],
                                   availability_zone=zone, map_public_ip_on_launch=False,
                                   tags={**tags, "Name": f"{name}-{tier}-{zone}", "tier": tier}, opts=child)
                    for i, zone in enumerate(zones)]

        public, private, isolated = subnets("public"), subnets("private"), subnets("isolated")

        public_rt = aws.ec2.RouteTable(f"{name}-public-rt", vpc_id=vpc.id, tags={**tags, "Name": f"{name}-public"}, opts=child)
        aws.ec2.Route(f"{name}-public-default", route_table_id=public_rt.id, destination_cidr_block="0.0.0.0/0",
                      gateway_id=igw.id, opts=child)
        for i, s in enumerate(public):
            aws.ec2.RouteTableAssociation(f"{name}-public-rta-{i}", subnet_id=s.id, route_table_id=public_rt.id, opts=child)

        nat_count = {"none": 0, "single": 1, "perAz": len(zones)}[args.nat_mode]
        nats = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(f"{name}-nat-eip-{i}", domain="vpc", tags={**tags, "Name": f"{name}-nat-{zones[i]}"},
                              opts=child)
            nats.append(aws.ec2.NatGateway(f"{name}-nat-{i}", allocation_id=eip.id, subnet_id=public[i].id,
                                           connectivity_type="public", tags={**tags, "Name": f"{name}-nat-{zones[i]}"},
                                           opts=pulumi.ResourceOptions(parent=self, depends_on=[igw])))

        private_rts = []
        for i, s in enumerate(private):
            rt = aws.ec2.RouteTable(f"{name}-private-rt-{i}", vpc_id=vpc.id,
                                    tags={**tags, "Name": f"{name}-private-{zones[i]}"}, opts=child)
            if nats:
                aws.ec2.Route(f"{name}-private-default-{i}", route_table_id=rt.id, destination_cidr_block="0.0.0.0/0",
                              nat_gateway_id=nats[i % len(nats)].id, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-private-rta-{i}", subnet_id=s.id, route_table_id=rt.id, opts=child)
            private_rts.append(rt)

        isolated_rt = aws.ec2.RouteTable(f"{name}-isolated-rt", vpc_id=vpc.id,
                                         tags={**tags, "Name": f"{name}-isolated"}, opts=child)
        for i, s in enumerate(isolated):
            aws.ec2.RouteTableAssociation(f"{name}-isolated-rta-{i}", subnet_id=s.id, route_table_id=isolated_rt.id,
                                          opts=child)

        s3 = aws.ec2.VpcEndpoint(f"{name}-s3", vpc_id=vpc.id, service_name=f"com.amazonaws.{args.region}.s3",
                                 vpc_endpoint_type="Gateway", route_table_ids=[rt.id for rt in private_rts],
                                 tags={**tags, "Name": f"{name}-s3"}, opts=child)

        self.endpoint_security_group_id = None
        if args.nat_mode == "none":
            sg = aws.ec2.SecurityGroup(f"{name}-endpoints-sg", vpc_id=vpc.id,
                                       description="Interface VPC endpoints: HTTPS from the service only",
                                       tags={**tags, "Name": f"{name}-endpoints"}, opts=child)
            self.endpoint_security_group_id = sg.id
            for svc in INTERFACE_ENDPOINT_SERVICES:
                aws.ec2.VpcEndpoint(f"{name}-{svc.replace('.', '-')}", vpc_id=vpc.id,
                                    service_name=f"com.amazonaws.{args.region}.{svc}", vpc_endpoint_type="Interface",
                                    private_dns_enabled=True, subnet_ids=[s.id for s in private],
                                    security_group_ids=[sg.id], tags={**tags, "Name": f"{name}-{svc}"}, opts=child)

        self.vpc_id = vpc.id
        self.vpc_cidr_block = args.cidr_block
        self.public_subnet_ids = [s.id for s in public]
        self.private_subnet_ids = [s.id for s in private]
        self.isolated_subnet_ids = [s.id for s in isolated]
        self.private_route_table_ids = [rt.id for rt in private_rts]
        self.nat_gateway_ids = [n.id for n in nats]
        self.s3_endpoint_id = s3.id
        self.register_outputs({
            "vpcId": self.vpc_id,
            "publicSubnetIds": self.public_subnet_ids,
            "privateSubnetIds": self.private_subnet_ids,
            "isolatedSubnetIds": self.isolated_subnet_ids,
            "natGatewayIds": self.nat_gateway_ids,
            "s3EndpointId": self.s3_endpoint_id,
        })
