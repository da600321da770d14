"""The engine half of :class:`tests.automation.fake_pulumi.RecordingPulumiCommand`: a stack's state
(config, outputs, resources, history) and what ``preview`` / ``up`` / ``destroy`` do to it.

An operation runs the stack's program (:mod:`tests.automation.fake_pulumi_program`), diffs its
resources against the stack's, and sends the engine events (``preludeEvent``, ``resourcePreEvent``,
``resOutputsEvent``, ``summaryEvent``, ``cancelEvent``; the SDK's ``events.py``) to ``--event-log``:
over gRPC (``tcp://127.0.0.1:<port>``, the SDK's transport for CLI > 3.205) or appended to the file
(older CLIs), plus human-readable stdout; ``preview --json`` prints the CLI's JSON document
(``{"config", "steps", "changeSummary", "duration"}``). A :class:`ProgramError` changes nothing and
puts the engine's diagnostic in the Diagnostics section of stdout, exit code 255. ``stack history
--json`` entries have the CLI's shape (``version``, ``kind``, ``startTime``, ..., ``resourceChanges``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.automation.fake_pulumi_program import PROJECT, Program, ProgramError, Resources

ERR = 255  # what the CLI exits with on "error: ..."


@dataclass
class FakeStack:
    name: str
    config: dict[str, tuple[str, bool]] = field(default_factory=dict)  # key -> (value, secret)
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # key -> (value, secret)
    resources: Resources = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class FakeEngine:
    """Mixed into RecordingPulumiCommand, which provides ``program``, ``_clock`` and ``_get``."""

    program: Program
    _clock: float

    def _plain_config(self, st: FakeStack) -> dict[str, str]:
        return {k: v for k, (v, _) in st.config.items()}

    def _history_entry(self, st: FakeStack, kind: str, changes: Mapping[str, int]) -> dict[str, Any]:
        self._clock += 60
        return {
            "version": len(st.history) + 1,
            "kind": kind,
            "startTime": _ts(self._clock - 42),
            "message": "",
            "environment": {"exec.kind": "auto.local"},
            "config": {k: {"value": v, "secret": s} for k, (v, s) in st.config.items()},
            "result": "succeeded",
            "endTime": _ts(self._clock),
            "resourceChanges": dict(changes),
        }

    def _plan(self, cmd: str, st: FakeStack):
        if cmd == "destroy":
            new: Resources = {}
            new_outputs: dict[str, tuple[Any, bool]] = {}
        else:
            new, new_outputs = self.program(st.name, self._plain_config(st))
        steps = []
        for urn, r in new.items():
            old = st.resources.get(urn)
            if old is None:
                steps.append(("create", urn, r, None, []))
            else:
                diffs = sorted(k for k in set(old["inputs"]) | set(r["inputs"])
                               if old["inputs"].get(k) != r["inputs"].get(k))
                steps.append(("update" if diffs else "same", urn, r, old, diffs))
        for urn, old in reversed(list(st.resources.items())):
            if urn not in new:
                steps.append(("delete", urn, None, old, []))
        counts: dict[str, int] = {}
        for op, *_ in steps:
            counts[op] = counts.get(op, 0) + 1
        return steps, counts, new, new_outputs

    def _operation(self, cmd: str, opts: Mapping[str, Any]) -> tuple[int, str, str]:
        st = self._get(opts)
        dry = cmd == "preview" or "--preview-only" in opts
        try:
            steps, counts, new, new_outputs = self._plan(cmd, st)
        except ProgramError as e:  # nothing changed; the diagnostic goes to stdout, like the CLI's
            verb = {"preview": "Previewing update", "up": "Updating", "destroy": "Destroying"}[cmd]
            return ERR, (f"{verb} ({st.name})\n\nDiagnostics:\n  {e.typ} ({e.name}):\n    error: {e}\n\n"), ""

        events: list[dict[str, Any]] = []

        def emit(**payload):
            events.append({"sequence": len(events), "timestamp": int(self._clock), **payload})

        emit(preludeEvent={"config": {k: (v if not s else "[secret]") for k, (v, s) in st.config.items()}})
        for op, urn, r, old, diffs in steps:
            meta = {
                "op": op,
                "urn": urn,
                "type": (r or old)["type"],
                "provider": "",
                "old": {"type": old["type"], "urn": urn, "inputs": old["inputs"]} if old else None,
                "new": {"type": r["type"], "urn": urn, "inputs": r["inputs"]} if r else None,
                "diffs": diffs,
                "detailedDiff": {d: {"diffKind": "update", "inputDiff": True} for d in diffs} or None,
            }
            emit(resourcePreEvent={"metadata": meta, "planning": dry})
            if not dry:
                emit(resOutputsEvent={"metadata": meta, "planning": False})
        emit(summaryEvent={"maybeCorrupt": False, "durationSeconds": 3, "resourceChanges": counts,
                           "PolicyPacks": {}})
        emit(cancelEvent={})

        log = opts.get("--event-log")
        if log:
            _deliver(log, events)

        verb = {"preview": "Previewing update", "up": "Updating", "destroy": "Destroying"}[cmd]
        if dry and cmd == "destroy":
            verb = "Previewing destroy"
        sym = {"create": "+", "update": "~", "delete": "-", "same": " "}
        text = [f"{verb} ({st.name})", "",
                f"View in Browser (Ctrl+O): https://app.pulumi.com/acme/{PROJECT}/{st.name}/previews/1", "",
                "     Type                 Name                Plan"]
        for op, urn, r, old, diffs in steps:
            if op != "same" or cmd == "up":
                text.append(f" {sym[op]}   {(r or old)['type']:<40} {urn.rsplit('::', 1)[-1]:<20} {op}"
                            + (f"    [diff: ~{','.join(diffs)}]" if diffs else ""))
        text += ["", "Resources:"]
        for op in ("create", "update", "delete"):
            if counts.get(op):
                text.append(f"    {sym[op]} {counts[op]} to {op}" if dry else f"    {sym[op]} {counts[op]} {op}d")
        if counts.get("same"):
            text.append(f"    {counts['same']} unchanged")
        text += ["", "Duration: 3s"]

        if not dry:
            st.resources = new
            st.outputs = new_outputs
            st.history.append(self._history_entry(st, "update" if cmd == "up" else "destroy", counts))
        if cmd == "preview" and "--json" in opts:
            doc = {
                "config": {k: (v if not s else "[secret]") for k, (v, s) in st.config.items()},
                "steps": [{"op": op, "urn": urn,
                           **({"oldState": {"urn": urn, "type": old["type"], "inputs": old["inputs"]}} if old else {}),
                           **({"newState": {"urn": urn, "type": r["type"], "inputs": r["inputs"]}} if r else {}),
                           **({"diffReasons": diffs} if diffs else {})}
                          for op, urn, r, old, diffs in steps],
                "duration": 3_000_000_000,
                "changeSummary": counts,
            }
            return 0, json.dumps(doc, indent=4) + "\n", ""
        return 0, "\n".join(text) + "\n", ""


def _deliver(log: str, events: list[dict[str, Any]]) -> None:
    """Send engine events where ``--event-log`` says: a gRPC Events server or a file."""
    if log.startswith("tcp://"):
        import grpc
        from pulumi.runtime.proto import events_pb2, events_pb2_grpc

        with grpc.insecure_channel(log[len("tcp://"):]) as channel:
            stub = events_pb2_grpc.EventsStub(channel)
            stub.StreamEvents(iter([events_pb2.EventRequest(event=json.dumps(e)) for e in events]),
                              timeout=10)
    else:
        with open(log, "a", encoding="utf-8") as f:
            for e in events:
                f.write(json.dumps(e) + "\n")
