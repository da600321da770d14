"""Drive the ``mlflow-tracking`` stacks from Python: preview, up, destroy, outputs and promotion.

A thin, guarded layer over :mod:`pulumi.automation`, working on a ``LocalWorkspace`` rooted at
this project directory (the same ``Pulumi.yaml`` and ``Pulumi.<stack>.yaml`` files the Pulumi CLI
uses)::

    import deploy

    deploy.preview("dev")                      # -> ChangeSummary
    deploy.up("dev")                           # -> UpdateResult
    ref = deploy.outputs("dev").image_ref      # "<repo>@sha256:<64 hex>"
    deploy.promote("dev", "prod", yes=True)    # -> PromotionResult (prod never builds; it runs
                                               #    its own copy of dev's digest)
    deploy.destroy("dev")                      # refused while mlflow-tracking:protectData is true

Every function takes the same keyword-only options:

``on_output``
    ``Callable[[str], None]`` receiving progress lines (the Pulumi CLI's own output and this
    module's steps). Default: the ``deploy`` logger at INFO.
``confirm``
    ``Callable[[str], bool]`` asked before changing a production stack (stack named ``prod`` or
    ``mlflow-tracking:environment: prod``) unless ``yes=True``. Default ``None``: no way to ask,
    so a production change without ``yes=True`` is refused before anything is touched.
``work_dir``
    The Pulumi project directory. Default: this project's root.
``pulumi_command`` / ``workspace_options``
    Injection points (tests, a pinned CLI): a ``pulumi.automation.PulumiCommand`` and/or a
    ``LocalWorkspaceOptions`` whose ``work_dir`` is replaced by ``work_dir``.

Every failure is a :class:`DeployError` with a one-line message (Pulumi's ``CommandError`` is
reduced to the CLI's last ``error:`` line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pulumi.automation as auto

# The module is split along its seams (results.py: the returned values; engine.py: the workspace
# and guard rails; promotion.py: promote); every name it offered before is still importable here.
from deploy.engine import (CONFIG_DELETION_PROTECTION, CONFIG_ENVIRONMENT, CONFIG_IMAGE_REF,  # noqa: F401
                           CONFIG_PROTECT_DATA, DIGEST_REF_RE, PROD, PROJECT, PROJECT_DIR, Confirm, DeployError,
                           OnOutput, _Deployer, _parse_bool, command_error_line)
from deploy.promotion import promote  # noqa: F401
from deploy.results import (ChangeSummary, PromotionResult, ResourceChange, StackOutputs,  # noqa: F401
                            UpdateResult)

__all__ = [
    "CONFIG_ENVIRONMENT",
    "CONFIG_IMAGE_REF",
    "CONFIG_PROTECT_DATA",
    "DIGEST_REF_RE",
    "ChangeSummary",
    "DeployError",
    "PromotionResult",
    "ResourceChange",
    "StackOutputs",
    "UpdateResult",
    "destroy",
    "list_stacks",
    "outputs",
    "preview",
    "promote",
    "up",
]

# --------------------------------------------------------------------------- the API


def list_stacks(
    *,
    on_output: Optional[OnOutput] = None,
    work_dir: Optional[str | Path] = None,
    pulumi_command: Optional[auto.PulumiCommand] = None,
    workspace_options: Optional[auto.LocalWorkspaceOptions] = None,
) -> list[str]:
    """Names of the stacks that exist for this project (``pulumi stack ls``)."""
    d = _Deployer(on_output, None, work_dir, pulumi_command, workspace_options)
    with d.errors():
        return d.stack_names()


def preview(
    stack: str,
    *,
    on_output: Optional[OnOutput] = None,
    work_dir: Optional[str | Path] = None,
    pulumi_command: Optional[auto.PulumiCommand] = None,
    workspace_options: Optional[auto.LocalWorkspaceOptions] = None,
) -> ChangeSummary:
    """Preview an update of ``stack`` with the diff streamed to ``on_output``. Changes nothing."""
    d = _Deployer(on_output, None, work_dir, pulumi_command, workspace_options)
    with d.errors():
        stack = d.resolve(stack)
        return d.preview(d.select(stack))


def up(
    stack: str,
    *,
    yes: bool = False,
    confirm: Optional[Confirm] = None,
    on_output: Optional[OnOutput] = None,
    work_dir: Optional[str | Path] = None,
    pulumi_command: Optional[auto.PulumiCommand] = None,
    workspace_options: Optional[auto.LocalWorkspaceOptions] = None,
) -> UpdateResult:
    """Create or update ``stack``.

    A production stack (named ``prod`` or ``mlflow-tracking:environment: prod``) must have a
    promoted ``mlflow-tracking:imageRef`` (prod never builds an image); unless ``yes``, it is
    previewed and ``confirm`` is asked before the update.
    """
    d = _Deployer(on_output, confirm, work_dir, pulumi_command, workspace_options)
    with d.errors():
        stack = d.resolve(stack)
        prod = d.is_production(stack)
        if prod:
            if d.config(stack, CONFIG_IMAGE_REF) is None:
                raise DeployError(
                    f"stack '{stack}' is a production stack and has no {CONFIG_IMAGE_REF}: "
                    f"production never builds an image; promote a tested digest first "
                    f"(python -m deploy promote dev {stack})"
                )
            d.require_can_confirm(stack, yes, "update")
        s = d.select(stack)
        if prod and not yes:
            plan = d.preview(s)
            d.ask(f"Update production stack '{stack}' ({plan.describe()})?", stack, "update")
        return d.up(s)


def destroy(
    stack: str,
    *,
    yes: bool = False,
    confirm: Optional[Confirm] = None,
    on_output: Optional[OnOutput] = None,
    work_dir: Optional[str | Path] = None,
    pulumi_command: Optional[auto.PulumiCommand] = None,
    workspace_options: Optional[auto.LocalWorkspaceOptions] = None,
) -> UpdateResult:
    """Destroy every resource of ``stack``.

    Refused before anything is touched while ``mlflow-tracking:protectData`` is missing or true
    (the default: data protected). Production stacks need ``yes`` or a ``confirm`` that agrees.
    """
    d = _Deployer(on_output, confirm, work_dir, pulumi_command, workspace_options)
    with d.errors():
        stack = d.resolve(stack)
        protect = d.config(stack, CONFIG_PROTECT_DATA)
        if protect is None or _parse_bool(CONFIG_PROTECT_DATA, protect):
            state = "is not set (default true)" if protect is None else f"is {protect}"
            raise DeployError(
                f"refusing to destroy stack '{stack}': its data is protected "
                f"({CONFIG_PROTECT_DATA} {state}). First run "
                f"`pulumi config set {CONFIG_PROTECT_DATA} false -s {stack}` (and set "
                f"{CONFIG_DELETION_PROTECTION} false too where the stack file sets it true), then "
                f"`python -m deploy up {stack}` so that the protection is lifted, then destroy"
            )
        deletion = d.config(stack, CONFIG_DELETION_PROTECTION)
        if deletion is not None and _parse_bool(CONFIG_DELETION_PROTECTION, deletion):
            raise DeployError(
                f"refusing to destroy stack '{stack}': its database has deletion protection "
                f"({CONFIG_DELETION_PROTECTION} is {deletion}). First run "
                f"`pulumi config set {CONFIG_DELETION_PROTECTION} false -s {stack}`, then "
                f"`python -m deploy up {stack}` so that the protection is lifted, then destroy"
            )
        prod = d.is_production(stack)
        if prod:
            d.require_can_confirm(stack, yes, "destroy")
            if not yes:
                d.ask(f"Destroy every resource of production stack '{stack}'?", stack, "destroy")
        return d.destroy(d.select(stack))


def outputs(
    stack: str,
    *,
    on_output: Optional[OnOutput] = None,
    work_dir: Optional[str | Path] = None,
    pulumi_command: Optional[auto.PulumiCommand] = None,
    workspace_options: Optional[auto.LocalWorkspaceOptions] = None,
) -> StackOutputs:
    """The outputs of ``stack``'s last update."""
    d = _Deployer(on_output, None, work_dir, pulumi_command, workspace_options)
    with d.errors():
        stack = d.resolve(stack)
        return d.outputs(d.select(stack))
