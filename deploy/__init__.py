"""Drive the ``mlflow-tracking`` stacks from Python: preview, up, destroy, outputs and promotion.

A thin, guarded layer over :mod:`pulumi.automation`, working on a ``LocalWorkspace`` rooted at
this project directory (the same ``Pulumi.yaml`` and ``Pulumi.<stack>.yaml`` files the Pulumi CLI
uses)::

    import deploy

    deploy.preview("dev")                      # -> ChangeSummary
    deploy.up("dev")                           # -> UpdateResult
    ref = deploy.outputs("dev").image_ref      # "<repo>@sha256:<64 hex>"
    deploy.promote("dev", "prod", yes=True)    # -> PromotionResult (prod never builds)
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

import copy
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

import pulumi.automation as auto

from components import outputs as stack_outputs

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

PROJECT = "mlflow-tracking"
PROJECT_DIR = Path(__file__).resolve().parent.parent

CONFIG_IMAGE_REF = f"{PROJECT}:imageRef"
CONFIG_ENVIRONMENT = f"{PROJECT}:environment"
CONFIG_PROTECT_DATA = f"{PROJECT}:protectData"
CONFIG_DELETION_PROTECTION = f"{PROJECT}:deletionProtection"

DIGEST_REF_RE = stack_outputs.DIGEST_REF_RE
"""What promote copies and ``imageRef`` accepts: one definition, shared with config.py."""

PROD = "prod"

OnOutput = Callable[[str], None]
Confirm = Callable[[str], bool]

_log = logging.getLogger("deploy")


class DeployError(Exception):
    """A refused or failed operation. ``str(err)`` is one line, fit for a terminal."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ResourceChange:
    """One planned or applied step of the engine (``same`` steps are left out)."""

    op: str
    """Engine operation: ``create``, ``update``, ``replace``, ``delete``, ``create-replacement``..."""
    urn: str
    type: str
    diffs: tuple[str, ...] = ()
    """Top-level properties that differ (updates and replacements)."""

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    def describe(self) -> str:
        symbol = _OP_SYMBOLS.get(self.op, "?")
        text = f"  {symbol} {self.op:<8} {self.type}  {self.name}"
        if self.diffs:
            text += f"  [diff: {', '.join(self.diffs)}]"
        return text


_OP_SYMBOLS = {
    "create": "+",
    "update": "~",
    "delete": "-",
    "replace": "+-",
    "create-replacement": "++",
    "delete-replaced": "--",
    "read": ">",
    "import": "=",
}


@dataclass(frozen=True)
class ChangeSummary:
    """What a preview plans (or an update/destroy did): counts per operation and the steps."""

    stack: str
    counts: Mapping[str, int]
    """Operation -> number of resources, as the engine's summary reports it (``same`` included)."""
    changes: tuple[ResourceChange, ...] = ()

    @property
    def has_changes(self) -> bool:
        return any(n for op, n in self.counts.items() if op != "same")

    def describe(self) -> str:
        """E.g. ``"create 2, update 1, unchanged 40"`` or ``"no changes"``."""
        parts = [f"{op} {n}" for op, n in sorted(self.counts.items()) if op != "same" and n]
        if not parts:
            return "no changes"
        unchanged = self.counts.get("same", 0)
        if unchanged:
            parts.append(f"unchanged {unchanged}")
        return ", ".join(parts)


@dataclass(frozen=True)
class StackOutputs:
    """A stack's outputs. Named properties for the documented ones (``components/outputs.py``)."""

    stack: str
    values: Mapping[str, Any]
    secret_keys: frozenset[str] = frozenset()

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def masked(self) -> dict[str, Any]:
        """The values with secret ones replaced by ``"[secret]"`` (for printing)."""
        return {k: ("[secret]" if k in self.secret_keys else v) for k, v in self.values.items()}

    @property
    def tracking_uri(self) -> Optional[str]:
        return self.values.get(stack_outputs.TRACKING_URI)

    @property
    def load_balancer_dns(self) -> Optional[str]:
        return self.values.get(stack_outputs.LOAD_BALANCER_DNS)

    @property
    def artifact_bucket(self) -> Optional[str]:
        return self.values.get(stack_outputs.ARTIFACT_BUCKET)

    @property
    def database_endpoint(self) -> Optional[str]:
        return self.values.get(stack_outputs.DATABASE_ENDPOINT)

    @property
    def image_ref(self) -> Optional[str]:
        return self.values.get(stack_outputs.IMAGE_REF)

    @property
    def admin_secret_arn(self) -> Optional[str]:
        return self.values.get(stack_outputs.ADMIN_SECRET_ARN)


@dataclass(frozen=True)
class UpdateResult:
    """The result of ``up`` or ``destroy``."""

    stack: str
    kind: str
    """``update`` or ``destroy``."""
    result: str
    """As the stack history records it: ``succeeded``, ``failed``..."""
    changes: ChangeSummary
    outputs: StackOutputs
    version: Optional[int] = None
    """The stack's update number in its history."""


@dataclass(frozen=True)
class PromotionResult:
    """The result of ``promote``: which digest now runs in the target, and how it got there."""

    source: str
    target: str
    image_ref: str
    """The digest reference written to the target's ``mlflow-tracking:imageRef``."""
    previous_image_ref: Optional[str]
    preview: ChangeSummary
    update: UpdateResult


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
    with the diff streamed to ``on_output``, then updates. A production target needs ``yes`` or a
    ``confirm`` that agrees after the preview; when it declines, the previous config is restored.

    ``repository`` (e.g. the prod account's replica ``<acct>.dkr.ecr.<region>.amazonaws.com/<repo>``)
    replaces the repository part of the reference and keeps the digest: ECR replication copies an
    image with the same digest into another registry.
    """
    d = _Deployer(on_output, confirm, work_dir, pulumi_command, workspace_options)
    with d.errors():
        if source == target:
            raise DeployError(f"cannot promote stack '{source}' to itself")
        source, target = d.resolve(source), d.resolve(target)
        if source == target:
            raise DeployError(f"cannot promote stack '{source}' to itself")
        src = d.select(source)
        ref = d.outputs(src).image_ref
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
        deployed = result.outputs.image_ref
        if deployed is not None and deployed != ref:
            raise DeployError(
                f"stack '{target}' reports {stack_outputs.IMAGE_REF} {deployed!r} after the "
                f"update, expected {ref!r}"
            )
        d.say(f"{target}: now runs {ref}")
        return PromotionResult(source, target, ref, previous, plan, result)


# --------------------------------------------------------------------------- internals


def _parse_bool(key: str, value: str) -> bool:
    v = str(value).strip().lower()  # what config.py accepts
    if v in ("true", "false"):
        return v == "true"
    raise DeployError(f"{key} must be true or false, got {value!r}")


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def command_error_line(err: BaseException) -> str:
    """The one line worth showing from a Pulumi ``CommandError``: the CLI's last ``error:`` line
    (without the prefix), else the last line of stderr."""
    text = str(err)
    stderr = text.split("\n stderr: ", 1)[1] if "\n stderr: " in text else ""
    stdout = ""
    if "\n stdout: " in text:
        stdout = text.split("\n stdout: ", 1)[1].split("\n stderr: ", 1)[0]
    code = re.search(r"code: (-?\d+)", text)
    for stream in (stderr, stdout):
        lines = [ln.strip() for ln in stream.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.lower().startswith("error:")]
        if errors:
            return errors[-1][len("error:"):].strip()
        if stream is stderr and lines:
            return lines[-1]
    return f"the Pulumi CLI failed (exit code {code.group(1) if code else '?'})"


class _Deployer:
    def __init__(
        self,
        on_output: Optional[OnOutput],
        confirm: Optional[Confirm],
        work_dir: Optional[str | Path],
        pulumi_command: Optional[auto.PulumiCommand],
        workspace_options: Optional[auto.LocalWorkspaceOptions],
    ):
        self.on_output: OnOutput = on_output if on_output is not None else _log.info
        self.confirm = confirm
        self.work_dir = str(Path(work_dir) if work_dir else PROJECT_DIR)
        self._pulumi_command = pulumi_command
        self._options = workspace_options
        self._ws: Optional[auto.LocalWorkspace] = None
        self._names: Optional[list[str]] = None

    # -- plumbing

    def say(self, line: str) -> None:
        self.on_output(line)

    def errors(self):
        return _ErrorBoundary()

    @property
    def ws(self) -> auto.LocalWorkspace:
        if self._ws is None:
            opts = copy.copy(self._options) if self._options else auto.LocalWorkspaceOptions()
            opts.work_dir = self.work_dir
            if self._pulumi_command is not None:
                opts.pulumi_command = self._pulumi_command
            try:
                self._ws = auto.LocalWorkspace(**vars(opts))
            except FileNotFoundError as e:
                raise DeployError(
                    "the Pulumi CLI was not found on PATH: install it "
                    "(https://www.pulumi.com/docs/install/) and log in to a backend"
                ) from e
        return self._ws

    # -- stacks and config

    def stack_names(self) -> list[str]:
        if self._names is None:
            self._names = [s.name for s in self.ws.list_stacks()]
        return self._names

    def resolve(self, stack: str) -> str:
        """The stack's name as ``stack ls`` lists it (``dev`` may be listed as ``acme/dev``)."""
        names = self.stack_names()
        if stack in names:
            return stack
        matches = [n for n in names if _short(n) == _short(stack) and n.endswith("/" + stack)]
        if len(matches) == 1:
            return matches[0]
        existing = ", ".join(sorted(names)) if names else "none"
        if matches:
            raise DeployError(f"stack name '{stack}' is ambiguous ({', '.join(sorted(matches))}): qualify it")
        raise DeployError(
            f"unknown stack '{stack}' (existing stacks: {existing}); create it with "
            f"`pulumi stack init {stack}`"
        )

    def config(self, stack: str, key: str) -> Optional[str]:
        """A stack's config value, or None when it is not set (``config get --json``)."""
        try:
            return self.ws.get_config(stack, key).value
        except auto.CommandError as e:
            if "not found" in command_error_line(e):
                return None
            raise

    def is_production(self, stack: str) -> bool:
        env = self.config(stack, CONFIG_ENVIRONMENT)
        return _short(stack) == PROD or (env is not None and env.strip().lower() == PROD)

    def restore_config(self, s: auto.Stack, key: str, previous: Optional[str]) -> None:
        if previous is None:
            s.remove_config(key)
            self.say(f"{s.name}: removed {key} again (nothing deployed)")
        else:
            s.set_config(key, auto.ConfigValue(value=previous, secret=False))
            self.say(f"{s.name}: restored {key} = {previous} (nothing deployed)")

    # -- confirmation

    def require_can_confirm(self, stack: str, yes: bool, action: str) -> None:
        if not yes and self.confirm is None:
            raise DeployError(
                f"refusing to {action} production stack '{stack}' without confirmation: "
                f"pass yes=True (--yes on the command line)"
            )

    def ask(self, question: str, stack: str, action: str) -> None:
        assert self.confirm is not None
        if not self.confirm(question):
            raise DeployError(f"{action} production stack '{stack}' not confirmed; nothing deployed")

    # -- operations

    def select(self, stack: str) -> auto.Stack:
        self.say(f"{stack}: selecting stack")
        return auto.Stack.select(stack, self.ws)

    def preview(self, s: auto.Stack) -> ChangeSummary:
        self.say(f"{s.name}: previewing changes")
        rec = _EventRecorder()
        res = s.preview(diff=True, on_output=self.on_output, on_error=self.on_output, on_event=rec)
        summary = ChangeSummary(s.name, _counts(res.change_summary), rec.changes())
        self._report(summary, "planned")
        return summary

    def up(self, s: auto.Stack) -> UpdateResult:
        self.say(f"{s.name}: updating")
        rec = _EventRecorder()
        res = s.up(on_output=self.on_output, on_error=self.on_output, on_event=rec)
        return self._result(s, rec, res.summary, _to_outputs(s.name, res.outputs), "updated")

    def destroy(self, s: auto.Stack) -> UpdateResult:
        self.say(f"{s.name}: destroying")
        rec = _EventRecorder()
        res = s.destroy(on_output=self.on_output, on_error=self.on_output, on_event=rec)
        return self._result(s, rec, res.summary, StackOutputs(s.name, MappingProxyType({})), "destroyed")

    def outputs(self, s: auto.Stack) -> StackOutputs:
        return _to_outputs(s.name, s.outputs())

    def _result(self, s, rec, summary, outs, verb) -> UpdateResult:
        counts = rec.counts if rec.counts is not None else _counts(summary.resource_changes or {})
        changes = ChangeSummary(s.name, counts, rec.changes())
        if summary.result != "succeeded":
            raise DeployError(f"{s.name}: {summary.kind} {summary.result}")
        self._report(changes, verb)
        return UpdateResult(s.name, summary.kind, summary.result, changes, outs, summary.version)

    def _report(self, summary: ChangeSummary, verb: str) -> None:
        if verb == "planned":  # the diff, in one line per changed resource
            for change in summary.changes:
                self.say(change.describe())
        self.say(f"{summary.stack}: {verb}: {summary.describe()}")


class _ErrorBoundary:
    """Turn the SDK's exceptions into one-line DeployErrors."""

    def __enter__(self):
        return self

    def __exit__(self, typ, err, tb):
        if err is None or isinstance(err, DeployError):
            return False
        if isinstance(err, auto.CommandError):
            raise DeployError(command_error_line(err)) from err
        if isinstance(err, auto.InvalidVersionError):
            raise DeployError(f"unsupported Pulumi CLI: {err}") from err
        if isinstance(err, FileNotFoundError) and "pulumi" in str(err):
            raise DeployError("the Pulumi CLI was not found on PATH") from err
        return False


class _EventRecorder:
    """Collect engine events (called from the SDK's event thread)."""

    def __init__(self) -> None:
        self._steps: dict[str, ResourceChange] = {}
        self.counts: Optional[dict[str, int]] = None

    def __call__(self, event: auto.EngineEvent) -> None:
        pre = event.resource_pre_event
        if pre is not None and pre.metadata.op.value != "same":
            m = pre.metadata
            diffs = tuple(m.diffs or ()) or tuple(sorted(m.detailed_diff or {}))
            self._steps.setdefault(m.urn + "|" + m.op.value, ResourceChange(m.op.value, m.urn, m.type, diffs))
        if event.summary_event is not None:
            self.counts = _counts(event.summary_event.resource_changes)

    def changes(self) -> tuple[ResourceChange, ...]:
        return tuple(self._steps.values())


def _counts(changes: Mapping[Any, int]) -> Mapping[str, int]:
    return MappingProxyType({(k.value if hasattr(k, "value") else str(k)): int(v) for k, v in changes.items()})


def _to_outputs(stack: str, out: Mapping[str, auto.OutputValue]) -> StackOutputs:
    return StackOutputs(
        stack,
        MappingProxyType({k: v.value for k, v in out.items()}),
        frozenset(k for k, v in out.items() if v.secret),
    )
