"""``deploy.promote``: run the digest one stack built in another stack, from that stack's own copy.

Promotion is by digest, and the target owns what it runs: the program (``ContainerImage`` with
``imageRef`` set, :mod:`components.ecr_copy`) copies the digest into the target's own ECR
repository before the task definition names it, so the target keeps running after the source's
lifecycle policy expires the image or the source stack is destroyed. This module only writes the
source's reference into the target's config, previews (where the copy's check refuses a digest
that no longer exists) and updates, then verifies that the target runs the same digest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pulumi.automation as auto

from components import outputs as stack_outputs
from deploy.engine import CONFIG_IMAGE_REF, DIGEST_REF_RE, Confirm, DeployError, OnOutput, _Deployer
from deploy.results import PromotionResult


def promote(
    source: str,
    target: str,
    *,
    repository: Optional[str] = None,
    yes: bool = False,
    confirm: Optional[Confirm] = None,
    on_output: Optional[OnOutput] = None,
    work_dir: Optional[str | Path] = None,
    pulumi_command: Optional[auto.PulumiCommand] = None,
    workspace_options: Optional[auto.LocalWorkspaceOptions] = None,
) -> PromotionResult:
    """Deploy the image ``source`` runs to ``target``, by digest.

    Reads ``source``'s ``imageRef`` output (refused unless ``<repo>@sha256:<64 hex>``), writes it
    to ``target``'s ``mlflow-tracking:imageRef`` config (so the target never builds), previews
    with the diff streamed to ``on_output``, then updates. The target's program copies the digest
    into its own repository; its ``imageRef`` output must then carry the same digest
    (``PromotionResult.running_image_ref``). A production target needs ``yes`` or a ``confirm``
    that agrees after the preview; when it declines, or the preview fails (e.g. the digest has
    expired from the source repository), the previous config is restored and nothing is deployed.

    ``repository`` (e.g. a cross-Region or cross-account replica ``<acct>.dkr.ecr.<region>.amazonaws.com/<repo>``)
    replaces the repository part of the reference and keeps the digest: the target copies from
    there instead.
    """
    d = _Deployer(on_output, confirm, work_dir, pulumi_command, workspace_options)
    with d.errors():
        if source == target:
            raise DeployError(f"cannot promote stack '{source}' to itself")
        source, target = d.resolve(source), d.resolve(target)
        if source == target:
            raise DeployError(f"cannot promote stack '{source}' to itself")
        ref = _source_ref(d, source, repository)
        prod = d.is_production(target)
        if prod:
            d.require_can_confirm(target, yes, "promote to")
        previous = d.config(target, CONFIG_IMAGE_REF)
        dst = d.select(target)
        d.say(f"{target}: setting {CONFIG_IMAGE_REF} = {ref}")
        dst.set_config(CONFIG_IMAGE_REF, auto.ConfigValue(value=ref, secret=False))
        try:  # until the update starts, a failure or a "no" leaves the target's config as it was
            plan = d.preview(dst)
            if prod and not yes:
                d.ask(
                    f"Promote {ref} from '{source}' to production stack '{target}' "
                    f"({plan.describe()})?",
                    target,
                    "promote to",
                )
        except BaseException:
            d.restore_config(dst, CONFIG_IMAGE_REF, previous)
            raise
        result = d.up(dst)
        running = result.outputs.image_ref
        digest = ref.rsplit("@", 1)[1]
        if running is not None and (not isinstance(running, str) or not running.endswith("@" + digest)):
            raise DeployError(
                f"stack '{target}' reports {stack_outputs.IMAGE_REF} {running!r} after the update, "
                f"expected the promoted digest {digest}"
            )
        d.say(f"{target}: now runs {running or ref}" + (f" (copied from {ref})" if running not in (None, ref) else ""))
        return PromotionResult(source, target, ref, previous, plan, result, running)


def _source_ref(d: _Deployer, source: str, repository: Optional[str]) -> str:
    """The source's ``imageRef`` output, checked to be a digest reference (``repository`` swapped in)."""
    ref = d.outputs(d.select(source)).image_ref
    if not ref:
        raise DeployError(
            f"stack '{source}' has no '{stack_outputs.IMAGE_REF}' output: "
            f"run `python -m deploy up {source}` first"
        )
    if not isinstance(ref, str) or not DIGEST_REF_RE.fullmatch(ref):
        raise DeployError(
            f"stack '{source}' output '{stack_outputs.IMAGE_REF}' is {ref!r}, not a digest "
            f"reference (<repository>@sha256:<64 hex>); only a digest can be promoted"
        )
    if repository is not None:
        ref = f"{repository.rstrip('/')}@{ref.rsplit('@', 1)[1]}"
        if not DIGEST_REF_RE.fullmatch(ref):
            raise DeployError(f"repository {repository!r} does not make a digest reference: {ref!r}")
    return ref
