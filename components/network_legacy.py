"""The hand-built network (``networkImplementation: legacy``): the pulumi-aws resources this
program registered before it used ``awsx.ec2.Vpc``, under the same names and the same parent, so a
stack deployed with them keeps every resource as it is.

- public subnets: one route table to the internet gateway, shared by the zones
- private subnets: a route table per zone, default route through a NAT gateway when there is one
- isolated subnets: one route table with no route out of the VPC

:func:`legacy_names` lists what each resource is called here: the awsx build aliases its own
children to these names (see ``components/network.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws

if TYPE_CHECKING:
    from components.network import NetworkArgs


class LegacyLayout:
    """What the hand-built network created (children of the ``Network`` component)."""

    def __init__(self, vpc, public, private, isolated, private_route_tables, nats) -> None:
        self.vpc = vpc
        self.public = public
        self.private = private
        self.isolated = isolated
        self.private_route_tables = private_route_tables
        self.nats = nats


def build_legacy(component: pulumi.ComponentResource, name: str, args: "NetworkArgs") -> LegacyLayout:
    """The VPC, internet gateway, subnets, route tables, routes and NAT gateways, exactly as the
    hand-built ``Network`` registered them (parent ``component``)."""
    child = pulumi.ResourceOptions(parent=component)
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
                                       opts=pulumi.ResourceOptions(parent=component, depends_on=[igw])))

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
    return LegacyLayout(vpc, public, private, isolated, private_rts, nats)


def legacy_names(name: str, awsx_name: str, zone_count: int, nat_count: int) -> dict[tuple[str, str], str]:
    """``(type, awsx child name) -> hand-built name`` for every hand-built resource that has a
    counterpart of the same type among ``awsx.ec2.Vpc``'s children (awsx 3.11 ``awsx/ec2/vpc.ts``:
    the VPC and internet gateway are named after the component, each subnet's route table,
    association and route after the subnet, ``<vpc>-<tier>-<zone number>``, NAT gateways and their
    EIPs ``<vpc>-<zone number>``). awsx gives every subnet its own route table; the hand-built
    network shared one among the public and one among the isolated subnets: zone 1's table takes
    that one over, the others are new."""
    subnet, rt, rta, route = ("aws:ec2/subnet:Subnet", "aws:ec2/routeTable:RouteTable",
                              "aws:ec2/routeTableAssociation:RouteTableAssociation", "aws:ec2/route:Route")
    out = {("aws:ec2/vpc:Vpc", awsx_name): f"{name}-vpc",
           ("aws:ec2/internetGateway:InternetGateway", awsx_name): f"{name}-igw"}
    for tier in ("public", "private", "isolated"):
        for i in range(zone_count):
            child = f"{awsx_name}-{tier}-{i + 1}"
            out[(subnet, child)] = f"{name}-{tier}-{i}"
            out[(rta, child)] = f"{name}-{tier}-rta-{i}"
    out[(rt, f"{awsx_name}-public-1")] = f"{name}-public-rt"
    out[(route, f"{awsx_name}-public-1")] = f"{name}-public-default"
    out[(rt, f"{awsx_name}-isolated-1")] = f"{name}-isolated-rt"
    for i in range(zone_count):
        out[(rt, f"{awsx_name}-private-{i + 1}")] = f"{name}-private-rt-{i}"
        if nat_count:
            out[(route, f"{awsx_name}-private-{i + 1}")] = f"{name}-private-default-{i}"
    for i in range(nat_count):
        out[("aws:ec2/natGateway:NatGateway", f"{awsx_name}-{i + 1}")] = f"{name}-nat-{i}"
        out[("aws:ec2/eip:Eip", f"{awsx_name}-{i + 1}")] = f"{name}-nat-eip-{i}"
    return out
