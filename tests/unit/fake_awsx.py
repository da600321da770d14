"""A stand-in for the awsx provider's ``awsx:ec2:Vpc`` under mocks.

awsx is a component provider: a real engine sends ``awsx:ec2:Vpc`` to the awsx plugin, which
creates the VPC's children itself; under mocks nothing creates them, and the program only sees
what the component reports back. This stand-in computes that report the way awsx 3.11 does
(pulumi/pulumi-awsx ``awsx/ec2/vpc.ts``, ``subnetDistributorNew.ts``, ``subnetNaming.ts``) and
is as strict as they are where this program could go wrong:

- ``availabilityZoneNames`` and ``numberOfAvailabilityZones`` together are refused;
- ``subnetStrategy`` defaults to ``Legacy``, whose allocator never reads ``cidrBlocks``
  (``subnetDistributorLegacy.ts``): explicit blocks under ``Legacy`` are refused here rather than
  silently replaced by a layout this stand-in does not model;
- explicit layouts: every spec has ``cidrBlocks``, one per zone, a ``cidrMask`` agreeing with them,
  at most one unnamed spec per type, no two subnets overlapping (``validateSubnets``);
- ``natGateways.strategy`` defaults to ``OnePerAz``; ``Single``/``OnePerAz`` need a public subnet
  and a private or isolated one (``validateNatGatewayStrategy``);
- and, as EC2 ``CreateSubnet`` does (``InvalidSubnet.Range``), a subnet outside the VPC's range.

Children, as ``vpc.ts`` creates them: the ``aws:ec2/vpc:Vpc`` and internet gateway named after
the component; per zone and spec (public first) a subnet ``<vpc>-<spec name>-<zone number>``
(``mapPublicIpOnLaunch`` only for public), a route table and an association of the same name,
a route to the internet gateway (public) or to the zone's NAT gateway (private; ``Single``: the
first), none for isolated; NAT gateways and their EIPs ``<vpc>-<zone number>`` in the public
subnets. The component's transforms run on each child as the engine runs them (``transforms``
apply to the children of packaged components: Pulumi docs, Resource option ``transforms``), and
the aliases they return are kept (:attr:`Child.aliases`).

The outputs carry the children as resource references, which the SDK rehydrates through
``pulumi:pulumi:getResource``: :func:`register` puts the children where the mock monitor finds
them, not among the resources the program registered.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable

import pulumi

VPC_TYPE = "awsx:ec2:Vpc"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_SIG_KEY = "4dabf18193072939515e22adb298388d"


class AwsxError(ValueError):
    """What the awsx provider would fail the update with."""


@dataclass
class Child:
    urn: str
    type: str
    name: str
    id: str
    inputs: dict[str, Any]
    parent: str
    aliases: list[str] = field(default_factory=list)
    """URNs the component's transforms gave this child as aliases."""

    def ref(self) -> dict[str, Any]:
        return {_SIG_KEY: _RESOURCE_SIG, "urn": self.urn, "id": self.id, "packageVersion": ""}


def _h(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


_ID_PREFIX = {"aws:ec2/vpc:Vpc": "vpc", "aws:ec2/subnet:Subnet": "subnet", "aws:ec2/routeTable:RouteTable": "rtb",
              "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc", "aws:ec2/route:Route": "r",
              "aws:ec2/natGateway:NatGateway": "nat", "aws:ec2/eip:Eip": "eipalloc",
              "aws:ec2/internetGateway:InternetGateway": "igw"}


def build(urn: str, name: str, inputs: dict[str, Any], transforms: list[Callable],
          make_urn: Callable[[str, str, str], str], urn_of: Callable[[Any], str]) -> tuple[dict[str, Any], list[Child]]:
    """The component's outputs and its children. ``urn_of`` gives the URN of a resource object
    an alias names as its parent. Call it on the program's event loop, as the engine runs
    transforms (``transforms`` get a ``DependencyResource`` parent, whose ``asyncio.Future()``
    needs a current loop; the harness's ``RecordingMonitor._on_program_loop``)."""
    zones = inputs.get("availabilityZoneNames")
    if zones and inputs.get("numberOfAvailabilityZones"):
        raise AwsxError("Only one of [availabilityZoneNames] and [numberOfAvailabilityZones] can be specified")
    if not zones:
        raise AssertionError("fake_awsx: default zones (getAvailabilityZones) not modelled; pass availabilityZoneNames")
    strategy = (inputs.get("natGateways") or {}).get("strategy", "OnePerAz")
    if strategy.lower() not in ("none", "single", "oneperaz"):
        raise AwsxError(f"Unknown NatGatewayStrategy '{strategy}'")
    vpc_cidr = ipaddress.IPv4Network(inputs.get("cidrBlock") or "10.0.0.0/16")
    specs = inputs.get("subnetSpecs")
    subnet_strategy = inputs.get("subnetStrategy", "Legacy")
    if not specs or not any("cidrBlocks" in s for s in specs):
        raise AssertionError("fake_awsx: only explicit layouts (cidrBlocks) are modelled")
    if subnet_strategy in ("Legacy", "AutoMerge"):
        raise AwsxError(f'subnetStrategy "{subnet_strategy}" does not use explicit cidrBlocks '
                        "(awsx/ec2/subnetDistributorLegacy.ts never reads them; AutoMerge refuses them)")
    issues = []
    by_type: dict[str, list] = {}
    for s in specs:
        by_type.setdefault(s["type"].lower(), []).append(s.get("name"))
    for t, names in by_type.items():
        named = [x for x in names if x is not None]
        if names.count(None) > 1 or len(set(named)) < len(named):
            issues.append(f'Multiple subnet specs of type "{t}" require unique names.')
    for i, s in enumerate(specs):
        blocks = s.get("cidrBlocks")
        if blocks is None:
            issues.append("If any subnet spec has explicit cidrBlocks, all subnets must have explicit cidrBlocks.")
        elif len(blocks) != len(zones):
            issues.append(f"The number of CIDR blocks in subnetSpecs[{i}] must match the number of availability "
                          f"zones ({len(zones)}).")
        elif s.get("cidrMask") is not None and any(ipaddress.IPv4Network(b).prefixlen != s["cidrMask"] for b in blocks):
            issues.append(f"The cidrMask in subnetSpecs[{i}] must match all cidrBlocks or be left undefined.")
    if issues:
        raise AwsxError("Invalid subnet specifications:\n - " + "\n - ".join(issues))

    # per zone, public first, then private, then isolated (compareSubnetSpecs)
    order = {"public": 0, "private": 1, "isolated": 2, "unused": 3}
    layout = []  # (zone index, zone, spec, cidr, resource name)
    for zi, zone in enumerate(zones):
        for s in sorted((s for s in specs if s["type"] != "Unused"), key=lambda s: order[s["type"].lower()]):
            layout.append((zi, zone, s, s["cidrBlocks"][zi], f"{name}-{s.get('name') or s['type'].lower()}-{zi + 1}"))
    nets = [(rn, ipaddress.IPv4Network(c)) for *_, c, rn in layout]
    overlapping = [rn for rn, a in nets if any(a.overlaps(b) for rn2, b in nets if rn2 != rn)]
    if overlapping:
        raise AwsxError(f"The following subnets overlap with at least one other subnet: {overlapping}")
    for rn, net in nets:
        if not net.subnet_of(vpc_cidr):
            raise AwsxError(f"InvalidSubnet.Range: The CIDR '{net}' of {rn} is invalid (VPC {vpc_cidr})")
    types = {s["type"].lower() for s in specs}
    if strategy.lower() != "none" and not ("public" in types and types & {"private", "isolated"}):
        raise AwsxError("If NAT Gateway strategy is 'OnePerAz' or 'Single', public subnets must be declared to host "
                        "the NAT Gateway resource, along with private or isolated subnets to route through it.")

    children: list[Child] = []

    def child(typ: str, cname: str, parent: str, props: dict[str, Any]) -> Child:
        curn = make_urn(parent, typ, cname)
        c = Child(curn, typ, cname, f"{_ID_PREFIX[typ]}-{_h(curn)}", props, parent)
        for fn in transforms:
            result = fn(pulumi.ResourceTransformArgs(
                custom=True, type_=typ, name=cname, props=dict(props),
                opts=pulumi.ResourceOptions(parent=pulumi.resource.DependencyResource(parent))))
            for alias in (result.opts.aliases or []) if result is not None and result.opts is not None else []:
                if isinstance(alias, str):
                    c.aliases.append(alias)
                else:
                    parent_urn = urn_of(alias.parent) if alias.parent is not None else parent
                    c.aliases.append(make_urn(parent_urn, alias.type_ or typ, alias.name or cname))
        children.append(c)
        return c

    tags = dict(inputs.get("tags") or {})
    shared = {"Name": name, **tags}
    vpc = child("aws:ec2/vpc:Vpc", name, urn, {
        "cidrBlock": str(vpc_cidr), "enableDnsHostnames": inputs.get("enableDnsHostnames"),
        "enableDnsSupport": inputs.get("enableDnsSupport"), "tags": shared})
    igw = child("aws:ec2/internetGateway:InternetGateway", name, vpc.urn, {"vpcId": vpc.id, "tags": shared})
    out: dict[str, list] = {k: [] for k in ("subnets", "publicSubnets", "privateSubnets", "isolatedSubnets",
                                            "publicSubnetIds", "privateSubnetIds", "isolatedSubnetIds", "routeTables",
                                            "routeTableAssociations", "routes", "natGateways", "eips")}
    nats: list[Child] = []
    for zi, zone, spec, cidr, rn in layout:
        kind = spec["type"].lower()
        subnet = child("aws:ec2/subnet:Subnet", rn, vpc.urn, {
            "vpcId": vpc.id, "availabilityZone": zone, "mapPublicIpOnLaunch": kind == "public", "cidrBlock": cidr,
            "tags": {**shared, **(spec.get("tags") or {}), "Name": rn, "SubnetType": spec["type"]}})
        out["subnets"].append(subnet)
        out[f"{kind}Subnets"].append(subnet)
        out[f"{kind}SubnetIds"].append(subnet.id)
        rt = child("aws:ec2/routeTable:RouteTable", rn, subnet.urn, {
            "vpcId": vpc.id, "tags": {**shared, "Name": rn, "SubnetType": spec["type"]}})
        out["routeTables"].append(rt)
        out["routeTableAssociations"].append(child("aws:ec2/routeTableAssociation:RouteTableAssociation", rn, rt.urn,
                                                   {"routeTableId": rt.id, "subnetId": subnet.id}))
        if kind == "public" and (strategy.lower() == "single" and not nats
                                 or strategy.lower() == "oneperaz" and len(nats) < zi + 1):
            eip = child("aws:ec2/eip:Eip", f"{name}-{zi + 1}", subnet.urn, {"tags": {**tags, "Name": f"{name}-{zi + 1}"}})
            out["eips"].append(eip)
            nat = child("aws:ec2/natGateway:NatGateway", f"{name}-{zi + 1}", subnet.urn, {
                "subnetId": subnet.id, "allocationId": eip.id, "tags": {**tags, "Name": f"{name}-{zi + 1}"}})
            nats.append(nat)
        if kind == "public":
            out["routes"].append(child("aws:ec2/route:Route", rn, rt.urn, {
                "routeTableId": rt.id, "gatewayId": igw.id, "destinationCidrBlock": "0.0.0.0/0"}))
        elif kind == "private" and strategy.lower() != "none":
            gw = nats[0] if strategy.lower() == "single" else nats[zi]
            out["routes"].append(child("aws:ec2/route:Route", rn, rt.urn, {
                "routeTableId": rt.id, "natGatewayId": gw.id, "destinationCidrBlock": "0.0.0.0/0"}))
    out["natGateways"] = nats
    state: dict[str, Any] = {k: [c.ref() if isinstance(c, Child) else c for c in v] for k, v in out.items()}
    state.update(vpc=vpc.ref(), vpcId=vpc.id, internetGateway=igw.ref(), vpcEndpoints=[],
                 subnetLayout=[{k: v for k, v in s.items() if k != "tags"} for s in specs])
    return state, children


def state_of(c: Child) -> dict[str, Any]:
    """What ``getResource`` answers for a child: its inputs as outputs, plus its id."""
    return {**c.inputs, "id": c.id}
