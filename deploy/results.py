"""What the :mod:`deploy` operations return: plain, frozen values (no SDK objects)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from components import outputs as stack_outputs


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
    """The digest reference written to the target's ``mlflow-tracking:imageRef`` (the source's)."""
    previous_image_ref: Optional[str]
    preview: ChangeSummary
    update: UpdateResult
    running_image_ref: Optional[str] = None
    """The target's ``imageRef`` output after the update: the same digest, from the target's own
    repository (the program copies it there), or ``None`` when the stack reports none."""
