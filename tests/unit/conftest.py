"""Fixtures: the whole program run under mocks for each stack file (see ``harness.py``)."""

from __future__ import annotations

import pytest

from tests.unit.harness import PROMOTED_REF, Run, run, stack_config


def run_program(stack: str, **overrides) -> Run:
    import program

    return run(program.define_stack, stack_config(stack, **overrides), stack)


@pytest.fixture(scope="session")
def dev() -> Run:
    """``Pulumi.dev.yaml`` as committed."""
    return run_program("dev")


PROD_DOMAIN = "mlflow.example.com"
PROD_ZONE = "Z0123456789ABCDEFGHIJ"
PROD_OVERRIDES = {"domainName": PROD_DOMAIN, "hostedZoneId": PROD_ZONE, "imageRef": PROMOTED_REF}
"""What a user sets before the first prod update: the domain and its Route 53 zone (``pulumi config
set``) and the promoted image digest (``python -m deploy promote dev prod``)."""


@pytest.fixture(scope="session")
def prod() -> Run:
    """``Pulumi.prod.yaml`` plus :data:`PROD_OVERRIDES`."""
    return run_program("prod", **PROD_OVERRIDES)


def pytest_configure(config):
    # Noise from the SDKs themselves (deprecated resources they define, asyncio in the mock loop).
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")
    config.addinivalue_line("filterwarnings", "ignore:There is no current event loop:DeprecationWarning")
