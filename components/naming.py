"""Physical names that fit AWS's limits.

Pulumi names a resource ``<logical name>-<7 random hex>`` (8 characters added) unless told
otherwise, and the AWS provider refuses a name over the service's limit only at ``pulumi up``.
Load balancers and target groups allow 32 characters, so ``<name>-service-alb`` overflows once
the composite's name passes 12 characters. Where the autoname would not fit, the resource gets a
``name_prefix`` instead (the provider appends a unique 26-character suffix): replacements still
create the new resource before deleting the old one, which an explicit fixed name would block.
Where the autoname fits nothing changes, so existing stacks keep their names.
"""

from __future__ import annotations

import re

AUTONAME_SUFFIX = 8
"""``-`` plus 7 random hex characters (Pulumi's autonaming)."""
RESOURCE_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){0,29}$")
"""Composite names: lower-case letters, digits and single inner hyphens, starting with a letter,
at most 30 characters (S3 bucket and RDS identifier rules; the longest autonamed child,
``<name>-service-execution-role``, then stays within IAM's 64)."""


def check_resource_name(name: str) -> None:
    """:raises ValueError: one line naming the rule when ``name`` cannot prefix AWS names."""
    if not RESOURCE_NAME_RE.match(name):
        raise ValueError(f"resource name {name!r}: use 1-30 lower-case letters, digits and single hyphens, "
                         "starting with a letter and not ending with a hyphen (it prefixes S3, RDS, ALB and "
                         "IAM names)")


def fitted_name(logical: str, limit: int, prefix_limit: int, prefix_arg: str = "name_prefix") -> dict[str, str]:
    """Keyword arguments naming a resource within ``limit`` characters: none when Pulumi's
    autoname fits, else ``{prefix_arg: <first prefix_limit characters of logical>}``."""
    if len(logical) + AUTONAME_SUFFIX <= limit:
        return {}
    return {prefix_arg: logical[:prefix_limit].rstrip("-")}
