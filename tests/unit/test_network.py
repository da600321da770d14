"""Network on its own: subnets per tier and zone, NAT per mode, the S3 gateway endpoint, and
interface endpoints (admitting 443 only from the client SG) when there is no NAT."""

from __future__ import annotations

import ipaddress

import pytest

from components.network import INTERFACE_ENDPOINT_SERVICES, Network, NetworkArgs
from tests.unit.harness import REGION, ZONES, run

SUBNET = "aws:ec2/subnet:Subnet"
NAT = "aws:ec2/natGateway:NatGateway"
ROUTE = "aws:ec2/route:Route"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
RTA = "aws:ec2/routeTableAssociation:RouteTableAssociation"


def network(nat_mode: str, zones=ZONES[:2]):
    return run(lambda: Network("net", NetworkArgs(availability_zones=tuple(zones), region=REGION, nat_mode=nat_mode)))


@pytest.mark.parametrize("mode,count", [("none", 0), ("single", 1), ("perAz", 3)])
def test_nat_gateways_per_mode(mode, count):
    r = network(mode, ZONES)
    assert len(r.of_type(NAT)) == count
    assert len(r.of_type("aws:ec2/eip:Eip")) == count
    defaults = [x for x in r.of_type(ROUTE) if x.name.startswith("net-private-default")]
    assert len(defaults) == (0 if mode == "none" else 3)
    assert {d.inputs["natGatewayId"] for d in defaults} <= {n.id for n in r.of_type(NAT)}
    if mode == "perAz":  # each private route table goes through the NAT of its own zone
        rt_zone = {f"net-private-rt-{i}-id": i for i in range(3)}
        nat_zone = {f"net-nat-{i}-id": i for i in range(3)}
        assert all(rt_zone[d.inputs["routeTableId"]] == nat_zone[d.inputs["natGatewayId"]] for d in defaults)
        assert len({d.inputs["natGatewayId"] for d in defaults}) == 3


def test_three_tiers_in_each_zone_without_overlap_and_no_public_ips():
    r = network("single", ZONES[:2])
    subnets = r.of_type(SUBNET)
    assert len(subnets) == 6
    for tier in ("public", "private", "isolated"):
        zones = sorted(s.inputs["availabilityZone"] for s in subnets if s.inputs["tags"]["tier"] == tier)
        assert zones == ZONES[:2]
    nets = [ipaddress.ip_network(s.inputs["cidrBlock"]) for s in subnets]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    assert all(ipaddress.ip_network(n).subnet_of(ipaddress.ip_network("10.0.0.0/16")) for n in map(str, nets))
    assert all(s.inputs.get("mapPublicIpOnLaunch") is False for s in subnets)


def test_only_public_subnets_route_to_the_internet_gateway_and_isolated_route_nowhere():
    r = network("perAz")
    igw_routes = [x for x in r.of_type(ROUTE) if "gatewayId" in x.inputs]
    assert [x.inputs["routeTableId"] for x in igw_routes] == ["net-public-rt-id"]
    isolated = [a for a in r.of_type(RTA) if a.name.startswith("net-isolated")]
    assert {a.inputs["routeTableId"] for a in isolated} == {"net-isolated-rt-id"}
    assert not [x for x in r.of_type(ROUTE) if x.inputs["routeTableId"] == "net-isolated-rt-id"]


@pytest.mark.parametrize("mode", ["none", "single", "perAz"])
def test_s3_gateway_endpoint_on_every_private_route_table(mode):
    r = network(mode)
    s3 = r.named("net-s3")
    assert s3.inputs["serviceName"] == f"com.amazonaws.{REGION}.s3"
    assert s3.inputs["vpcEndpointType"] == "Gateway"
    assert sorted(s3.inputs["routeTableIds"]) == ["net-private-rt-0-id", "net-private-rt-1-id"]


def test_without_nat_interface_endpoints_let_tasks_reach_ecr_logs_and_secrets():
    r = network("none")
    interface = [e for e in r.of_type(ENDPOINT) if e.inputs["vpcEndpointType"] == "Interface"]
    assert sorted(e.inputs["serviceName"] for e in interface) == sorted(
        f"com.amazonaws.{REGION}.{s}" for s in INTERFACE_ENDPOINT_SERVICES)
    sg = r.named("net-endpoints-sg")
    private = sorted(s.id for s in r.of_type(SUBNET) if s.inputs["tags"]["tier"] == "private")
    for e in interface:
        assert e.inputs["privateDnsEnabled"] is True
        assert e.inputs["securityGroupIds"] == [sg.id]
        assert sorted(e.inputs["subnetIds"]) == private
    # the endpoint SG has no rule of its own (the composition admits the service SG only)
    assert not [x for x in r.resources if x.type.startswith("aws:vpc/securityGroup")]


def test_with_nat_no_interface_endpoints():
    r = network("single")
    assert [e.inputs["vpcEndpointType"] for e in r.of_type(ENDPOINT)] == ["Gateway"]


def test_children_are_parented_and_named_after_the_component():
    r = network("single")
    comp = r.one("mlflowtracking:index:Network")
    children = [x for x in r.resources if x is not comp]
    assert all(x.parent == comp.urn for x in children)
    assert all(x.name.startswith("net-") for x in children)


@pytest.mark.parametrize("kwargs", [
    {"availability_zones": ("a",)}, {"nat_mode": "double"}, {"cidr_block": "10.0.0.0/8"}, {"region": ""},
])
def test_args_validation(kwargs):
    base = {"availability_zones": tuple(ZONES[:2]), "region": REGION}
    with pytest.raises(ValueError):
        NetworkArgs(**{**base, **kwargs})
