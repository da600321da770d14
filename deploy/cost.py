"""``python -m deploy cost STACK``: a stack's idle monthly cost, line by line.

The resource graph is the one the program builds for ``Pulumi.<STACK>.yaml`` under the unit tests'
mocks (``tests/unit/harness.py``: no AWS, no Pulumi CLI, no credentials), so the estimate follows
the code: a setting that adds or removes a resource changes it. Each resource type is priced from
``deploy/prices.json`` (list prices of the stack's region, dated, with their source and whether
they were confirmed) or named in :data:`FREE` with the reason it costs nothing by itself. A type in
neither fails the estimate (:class:`UnpricedType`): a new resource must be priced on purpose.

"Idle" = deployed, nobody using it: no requests, no artifacts stored, no logs written. What grows
with use (LCUs, NAT and endpoint data, S3 storage and requests, log ingestion, Aurora storage and
I/O, ECR storage, WAF requests) is listed separately with its unit price, never summed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from deploy.cost_model import (AWAKE_FLOOR_ACU, FALLBACK_REGION, FREE, GC_RUN_SECONDS, HOURS, PRICES_FILE,  # noqa: F401
                               WEEKS_PER_MONTH, CostError, Estimate, Line, UnpricedType, load_prices)
from deploy.cost_pricing import COMPONENTS, PRICED, price_graph, unpriced_types  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER_IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow-dev@sha256:" + "0" * 64
PLACEHOLDER_DOMAIN = "mlflow.example.com"
PLACEHOLDER_ZONE = "Z0000000000PLACEHOLDER"


# --------------------------------------------------------------------------------------------
# The graph
# --------------------------------------------------------------------------------------------

def stack_overrides(stack: str, work_dir: Path = ROOT) -> tuple[dict[str, Any], list[str]]:
    """Placeholders for what a prod stack file leaves for the user to set (imageRef, the HTTPS
    zone), so that the program builds its graph; they change no price (a certificate, a DNS
    record and the image reference are free). Returns the overrides and one note per placeholder."""
    import yaml

    path = work_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise CostError(f"no stack file {path.name} in {work_dir}")
    config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
    plain = {k.split(":", 1)[1]: v for k, v in config.items() if k.startswith("mlflow-tracking:")}
    overrides: dict[str, Any] = {}
    notes = []
    if plain.get("environment") == "prod":
        if not plain.get("imageRef"):
            overrides["imageRef"] = PLACEHOLDER_IMAGE
            notes.append("imageRef is not set in the stack file: a placeholder digest is used (free)")
        if not (plain.get("certificateArn") or plain.get("hostedZoneId") or plain.get("allowInsecureHttp")):
            overrides.update(domainName=plain.get("domainName") or PLACEHOLDER_DOMAIN, hostedZoneId=PLACEHOLDER_ZONE)
            notes.append("hostedZoneId/domainName are not set in the stack file: placeholders are used (the ACM "
                         "certificate and DNS records they add are free)")
    return overrides, notes


def build_graph(stack: str, overrides: Optional[dict[str, Any]] = None, work_dir: Path = ROOT) -> list[Any]:
    """The resources ``program.define_stack()`` registers for ``Pulumi.<stack>.yaml`` (plus
    ``overrides``, keys without namespace) under the unit tests' mocks."""
    import sys

    if str(work_dir) not in sys.path:
        sys.path.insert(0, str(work_dir))
    from tests.unit.harness import run, stack_config  # the mocks: no AWS, no Pulumi CLI

    import program

    try:  # one run: the graph is deterministic, so any failure is a real one
        result = run(program.define_stack, stack_config(stack, **(overrides or {})), stack)
    except Exception as err:  # a settings error is one line; anything else: one line too
        text = " ".join(str(err).split()) or type(err).__name__
        raise CostError(f"the program did not build under mocks: {text}") from None
    # A packaged component's children (awsx's VPC: subnets, NAT gateways, EIPs...) are created by
    # its provider, not the program; the mocks compute them as awsx would (tests/unit/fake_awsx.py).
    children = [_Child(c.type, c.name, c.id, dict(c.inputs), c.parent)
                for c in getattr(result.recorder, "awsx_children", [])]
    return [*result.resources, *children]


@dataclass
class _Child:
    """A packaged component's child, shaped like the harness's records."""

    type: str
    name: str
    id: str
    inputs: dict[str, Any]
    parent: str
    outputs: dict[str, Any] = field(default_factory=dict)
    custom: bool = True


def region_of(stack: str, work_dir: Path = ROOT) -> str:
    import yaml

    config = (yaml.safe_load((work_dir / f"Pulumi.{stack}.yaml").read_text()) or {}).get("config") or {}
    return str(config.get("aws:region") or FALLBACK_REGION)


def estimate(stack: str, overrides: Optional[dict[str, Any]] = None, *, work_dir: Path = ROOT,
             prices: Optional[dict[str, Any]] = None) -> Estimate:
    """The idle monthly cost of ``Pulumi.<stack>.yaml`` (with ``overrides``)."""
    placeholders, notes = stack_overrides(stack, work_dir)
    resources = build_graph(stack, {**placeholders, **(overrides or {})}, work_dir)
    est = price_graph(resources, stack=stack, region=region_of(stack, work_dir), prices=prices or load_prices())
    est.assumptions.extend(notes)
    return est

