"""The machinery under :mod:`deploy`: one workspace, guarded stack operations, one-line errors.

Nothing here is public API; :mod:`deploy` re-exports the constants and :class:`DeployError`.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Optional

import pulumi.automation as auto

from components import outputs as stack_outputs
from deploy.results import ChangeSummary, ResourceChange, StackOutputs, UpdateResult

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
