"""A recording stand-in for the Pulumi CLI, for testing orchestration code without it.

``RecordingPulumiCommand`` is a ``pulumi.automation.PulumiCommand`` (pass it through
``LocalWorkspaceOptions(pulumi_command=...)`` or ``deploy``'s ``pulumi_command=``). It records
every invocation (arguments, working directory, names of the extra environment variables) and
answers the way the real CLI does, in the shapes the SDK parses (see the SDK's
``_local_workspace.py`` / ``_stack.py`` / ``events.py``):

- ``stack ls --json``: ``[{"name", "current", "lastUpdate", "updateInProgress", "resourceCount", "url"}]``
- ``stack select --stack X`` / ``stack init X`` / ``stack rm --yes X`` with the CLI's error texts
  (``no stack named 'X' found``, ``stack 'X' already exists``), exit code 255 on errors
- ``config get K --json``: ``{"value": "...", "secret": false}`` or
  ``error: configuration key 'K' not found for stack 'X'``; ``config set`` (``--plaintext`` /
  ``--secret``, ``--path``, value after ``--``), ``config rm``, ``config --show-secrets --json``,
  written to ``<cwd>/Pulumi.<stack>.yaml`` like the CLI does
- ``stack output --json [--show-secrets]`` (secrets masked as ``"[secret]"`` without the flag)
- ``stack history --json ...``: ``[{"version", "kind", "startTime", "message", "environment",
  "config", "result", "endTime", "resourceChanges"}]``
- ``preview`` / ``up`` / ``destroy`` with engine events (``preludeEvent``, ``resourcePreEvent``,
  ``resOutputsEvent``, ``summaryEvent``, ``cancelEvent``) sent to ``--event-log``: over gRPC
  (``tcp://127.0.0.1:<port>``, the SDK's transport for CLI > 3.205) or appended to the file
  (older CLIs), plus human-readable stdout; ``preview --json`` prints the CLI's JSON document
  (``{"config", "steps", "changeSummary", "duration"}``)
- ``whoami --json``, ``version``

The "program" the fake deploys is a function of the stack's config (default: a
:class:`SketchProgram` of this project's resources: with ``mlflow-tracking:imageRef`` set no
``docker:index/image:Image`` but the stack's own repository and an ``EcrImageCopy`` of that digest).
A program that raises :class:`ProgramError` fails ``preview``/``up`` the way a resource's failed
check does: the engine's diagnostic (``<type> resource '<name>'s property '<p>' value {<v>} has a
problem: <reason>``, ``pkg/diag/errors.go``) in the Diagnostics section of stdout, exit code 255.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import yaml
from pulumi.automation import CommandResult, PulumiCommand
from pulumi.automation._cmd import _parse_and_validate_pulumi_version
from pulumi.automation._minimum_version import _MINIMUM_VERSION
from pulumi.automation.errors import create_command_error

PROJECT = "mlflow-tracking"
ERR = 255  # what the CLI exits with on "error: ..."

Resources = dict[str, dict[str, Any]]  # urn -> {"type": ..., "inputs": {...}}
COPY = "pulumi-python:dynamic/mlflowtracking:EcrImageCopy"
Program = Callable[[str, Mapping[str, str]], tuple[Resources, dict[str, tuple[Any, bool]]]]


@dataclass(frozen=True)
class Call:
    args: tuple[str, ...]
    """Arguments without the ``--non-interactive`` flags."""
    cwd: str
    env_keys: frozenset[str]

    @property
    def line(self) -> str:
        return shlex.join(self.args)


@dataclass
class FakeStack:
    name: str
    config: dict[str, tuple[str, bool]] = field(default_factory=dict)  # key -> (value, secret)
    outputs: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # key -> (value, secret)
    resources: Resources = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class ProgramError(Exception):
    """A resource's check failed: ``(type, name, property, value, reason)``."""

    def __init__(self, typ: str, name: str, prop: str, value: str, reason: str):
        super().__init__(f"{typ} resource '{name}'s property '{prop}' value {{{value}}} has a problem: {reason}")
        self.name, self.typ = name, typ


class SketchProgram:
    """A sketch of this project's stack: what changes with ``imageRef`` is modelled faithfully.

    ``registry`` (a set of ``<repository url>@sha256:...`` references), when given, models ECR:
    a build adds its image, a promotion copies the digest into the stack's own repository, and
    a digest that neither the source nor the stack's repository holds fails the preview like
    ``components.ecr_copy.EcrImageCopyProvider.check`` does. ``None``: every image exists.
    """

    def __init__(self, registry: Optional[set[str]] = None):
        self.registry = registry

    def __call__(self, stack: str, config: Mapping[str, str]) -> tuple[Resources, dict[str, tuple[Any, bool]]]:
        region = config.get("aws:region", "eu-west-1")
        repo = f"123456789012.dkr.ecr.{region}.amazonaws.com/mlflow-{stack}"
        ref = config.get(f"{PROJECT}:imageRef")

        def urn(typ: str, name: str) -> str:
            return f"urn:pulumi:{stack}::{PROJECT}::{typ}::{name}"

        res: Resources = {
            urn("pulumi:pulumi:Stack", f"{PROJECT}-{stack}"): {"type": "pulumi:pulumi:Stack", "inputs": {}},
            urn("awsx:ec2:Vpc", "mlflow-vpc"): {"type": "awsx:ec2:Vpc", "inputs": {}},
            urn("aws:rds/cluster:Cluster", "mlflow-db"): {"type": "aws:rds/cluster:Cluster", "inputs": {}},
            urn("aws:s3/bucket:Bucket", "mlflow-artifacts"): {"type": "aws:s3/bucket:Bucket", "inputs": {}},
            urn("aws:ecr/repository:Repository", "mlflow-repo"): {
                "type": "aws:ecr/repository:Repository", "inputs": {"imageTagMutability": "IMMUTABLE"}},
        }
        if ref is None:
            digest = hashlib.sha256(f"build:{stack}".encode()).hexdigest()
            ref = f"{repo}@sha256:{digest}"
            res[urn("docker:index/image:Image", "mlflow-image")] = {
                "type": "docker:index/image:Image",
                "inputs": {"build": {"context": "image"}, "imageName": f"{repo}:latest"},
            }
            self._add(ref)
        elif ".dkr.ecr." in ref:  # prod owns its image: a copy of the digest in its own repository
            digest = ref.rsplit("@sha256:", 1)[1]
            own = f"{repo}@sha256:{digest}"
            source = re.sub(r":[^/]+$", "", ref.split("@", 1)[0])  # a :tag is not part of the repository
            if self.registry is not None and own not in self.registry and f"{source}@sha256:{digest}" not in self.registry:
                raise ProgramError(COPY, "mlflow-image-copy", "source_ref", ref,
                                   f"sha256:{digest} is not in repository '{source.split('/', 1)[1]}' (expired by "
                                   f"its lifecycle policy, or the repository was deleted) and not yet copied here: "
                                   f"build the image again and promote the new digest")
            res[urn(COPY, "mlflow-image-copy")] = {
                "type": COPY, "inputs": {"source_ref": ref, "repository_url": repo, "digest": f"sha256:{digest}"}}
            ref = own
            self._add(ref)
        res[urn("aws:ecs/taskDefinition:TaskDefinition", "mlflow-task")] = {
            "type": "aws:ecs/taskDefinition:TaskDefinition",
            "inputs": {"containerDefinitions": json.dumps([{"name": "mlflow", "image": ref}])},
        }
        res[urn("aws:ecs/service:Service", "mlflow-service")] = {"type": "aws:ecs/service:Service", "inputs": {}}
        dns = f"mlflow-{stack}-123.{region}.elb.amazonaws.com"
        outs = {
            "trackingUri": (f"https://{dns}", False),
            "loadBalancerDnsName": (dns, False),
            "artifactBucketName": (f"mlflow-{stack}-artifacts", False),
            "databaseEndpoint": (f"mlflow-{stack}.cluster-abc.{region}.rds.amazonaws.com", False),
            "imageRef": (ref, False),
            "adminSecretArn": (f"arn:aws:secretsmanager:{region}:123456789012:secret:mlflow-{stack}-admin", False),
        }
        return res, outs

    def _add(self, ref: str) -> None:
        if self.registry is not None:
            self.registry.add(ref)


sketch_program = SketchProgram()
"""The sketch with no registry model (every image exists)."""


class RecordingPulumiCommand(PulumiCommand):
    def __init__(
        self,
        stacks: Optional[Mapping[str, Mapping[str, Any]]] = None,
        *,
        version: str = "3.272.0",
        current: Optional[str] = None,
        program: Optional[Program] = None,
        fail: Optional[Mapping[str, str]] = None,
        persist: bool = True,
    ):
        """
        :param stacks: name -> {"config": {key: value | ("value", secret)}, "outputs": {...},
            "deployed": bool (run the program once so the stack has resources and outputs)}
        :param version: what ``pulumi version`` reports (decides the event-log transport)
        :param fail: command word ("up", "preview", "destroy", ...) -> stderr error line; that
            command then fails with exit code 255 like the real CLI
        :param persist: write ``Pulumi.<stack>.yaml`` into the working directory on config changes
        """
        # The real __init__ runs `pulumi version`; this one answers it without a process.
        self.command = "pulumi"
        self.version = _parse_and_validate_pulumi_version(_MINIMUM_VERSION, version, False)
        self._version_text = version
        self.calls: list[Call] = []
        self.program: Program = program if program is not None else SketchProgram()
        self.fail = dict(fail or {})
        self.persist = persist
        self.stacks: dict[str, FakeStack] = {}
        self.current = current
        self._clock = 1_700_000_000.0
        for name, spec in (stacks or {}).items():
            st = FakeStack(name)
            for k, v in (spec.get("config") or {}).items():
                st.config[k] = tuple(v) if isinstance(v, tuple) else (str(v), False)  # type: ignore[assignment]
            self.stacks[name] = st
            if spec.get("deployed"):
                st.resources, st.outputs = self.program(name, self._plain_config(st))
                st.history.append(self._history_entry(st, "update", {"create": len(st.resources)}))
            for k, v in (spec.get("outputs") or {}).items():
                if v is None:
                    st.outputs.pop(k, None)
                else:
                    st.outputs[k] = tuple(v) if isinstance(v, tuple) else (v, False)  # type: ignore[assignment]

    # ------------------------------------------------------------------ recording helpers

    @property
    def lines(self) -> list[str]:
        return [c.line for c in self.calls]

    def commands(self) -> list[str]:
        """Each call reduced to its command words and stack, e.g. ``"config set @prod"``."""
        out = []
        for c in self.calls:
            words, opts, _ = _parse(list(c.args))
            stack = opts.get("--stack")
            out.append(" ".join(words[:2] if words and words[0] in ("stack", "config") else words[:1])
                       + (f" @{stack}" if stack else ""))
        return out

    # ------------------------------------------------------------------ PulumiCommand

    def run(self, args, cwd, additional_env, on_output=None, on_error=None) -> CommandResult:
        # Same argument handling as PulumiCommand.run.
        sep = args.index("--") if "--" in args else len(args)
        if "--non-interactive" not in args[:sep]:
            args.insert(0, "--non-interactive")
        sep = args.index("--") if "--" in args else len(args)
        clean = tuple(a for i, a in enumerate(args) if not (a == "--non-interactive" and i < sep))
        self.calls.append(Call(clean, cwd, frozenset(additional_env)))
        try:
            code, stdout, stderr = self._dispatch(list(clean), cwd)
        except _CliError as e:
            code, stdout, stderr = ERR, "", f"error: {e}"
        for line in stdout.splitlines():
            if on_output:
                on_output(line.rstrip())
        for line in stderr.splitlines():
            if on_error:
                on_error(line.rstrip())
        result = CommandResult(stdout=stdout.rstrip("\n"), stderr=stderr.rstrip("\n"), code=code)
        if code != 0:
            raise create_command_error(result)
        return result

    # ------------------------------------------------------------------ the CLI

    def _dispatch(self, args: list[str], cwd: str) -> tuple[int, str, str]:
        words, opts, rest = _parse(args)
        if not words:
            raise _CliError("no command")
        cmd = words[0]
        if cmd in self.fail:
            return ERR, "", self.fail[cmd] if self.fail[cmd].startswith("error:") else f"error: {self.fail[cmd]}"
        if cmd == "version":
            return 0, f"v{self._version_text}\n", ""
        if cmd == "whoami":
            if "--json" in opts:
                return 0, json.dumps({"user": "ci-bot", "url": "https://app.pulumi.com/ci-bot",
                                      "organizations": ["acme"]}, indent=4) + "\n", ""
            return 0, "ci-bot\n", ""
        if cmd == "stack":
            return self._stack(words[1:], opts, cwd)
        if cmd == "config":
            return self._config(words[1:], opts, rest, cwd)
        if cmd in ("preview", "up", "destroy"):
            return self._operation(cmd, opts)
        raise _CliError(f'unknown command "{cmd}" for "pulumi"')

    def _get(self, opts: Mapping[str, Any]) -> FakeStack:
        name = opts.get("--stack") or self.current
        if name is None:
            raise _CliError("no stack selected; please use `pulumi stack select` to choose one")
        if name not in self.stacks:
            raise _CliError(f"no stack named '{name}' found")
        return self.stacks[name]

    def _stack(self, words, opts, cwd) -> tuple[int, str, str]:
        sub = words[0] if words else ""
        if sub == "ls":
            rows = []
            for st in self.stacks.values():
                row: dict[str, Any] = {"name": st.name, "current": st.name == self.current}
                if st.history:
                    row["lastUpdate"] = st.history[-1]["endTime"]
                    row["updateInProgress"] = False
                    row["resourceCount"] = len(st.resources)
                row["url"] = f"https://app.pulumi.com/acme/{PROJECT}/{st.name}"
                rows.append(row)
            return 0, json.dumps(rows, indent=4) + "\n", ""
        if sub == "select":
            self.current = self._get(opts).name
            return 0, "", ""
        if sub == "init":
            name = words[1]
            if name in self.stacks:
                raise _CliError(f"stack '{name}' already exists")
            self.stacks[name] = FakeStack(name)
            self.current = name
            return 0, f"Created stack '{name}'\n", ""
        if sub == "rm":
            name = words[1]
            st = self._get({"--stack": name})
            if st.resources and "--force" not in opts:
                raise _CliError(f"'{name}' still has resources; removal rejected. Possible actions:")
            del self.stacks[name]
            if "--preserve-config" not in opts:
                path = os.path.join(cwd, f"Pulumi.{name}.yaml")
                if os.path.exists(path):
                    os.remove(path)
            return 0, f"Stack '{name}' has been removed!\n", ""
        if sub == "output":
            st = self._get(opts)
            show = "--show-secrets" in opts
            out = {k: (v if show or not s else "[secret]") for k, (v, s) in st.outputs.items()}
            return 0, json.dumps(out, indent=2) + "\n", ""
        if sub == "history":
            st = self._get(opts)
            entries = list(reversed(st.history))
            if "--page-size" in opts:
                size, page = int(opts["--page-size"]), int(opts.get("--page", 1))
                entries = entries[(page - 1) * size: page * size]
            return 0, json.dumps(entries, indent=4) + "\n", ""
        raise _CliError(f'unknown command "{sub}" for "pulumi stack"')

    def _config(self, words, opts, rest, cwd) -> tuple[int, str, str]:
        st = self._get(opts)
        self.current = st.name  # the CLI's RequireStack(..., SetCurrent)
        sub = words[0] if words else ""
        if sub == "":  # pulumi config --json [--show-secrets]
            show = "--show-secrets" in opts
            out = {k: ({"value": v, "secret": s} if show or not s else {"secret": True})
                   for k, (v, s) in sorted(st.config.items())}
            return 0, json.dumps(out, indent=4) + "\n", ""
        key = words[1]
        if ":" not in key:
            key = f"{PROJECT}:{key}"
        if sub == "get":
            if key not in st.config:
                raise _CliError(f"configuration key '{key}' not found for stack '{st.name}'")
            value, secret = st.config[key]
            return 0, json.dumps({"value": value, "secret": secret}, indent=2) + "\n", ""
        if sub == "set":
            value = rest[0] if rest else (words[2] if len(words) > 2 else None)
            if value is None:
                raise _CliError("config value must be specified in non-interactive mode")
            st.config[key] = (value, "--secret" in opts)
            self._save(st, cwd)
            return 0, "", ""
        if sub == "rm":
            st.config.pop(key, None)
            self._save(st, cwd)
            return 0, "", ""
        raise _CliError(f'unknown command "{sub}" for "pulumi config"')

    def _save(self, st: FakeStack, cwd: str) -> None:
        if not self.persist:
            return
        path = os.path.join(cwd, f"Pulumi.{st.name}.yaml")
        doc: dict[str, Any] = {}
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f) or {}
        doc["config"] = {
            k: ({"secure": "v1:" + base64.b64encode(v.encode()).decode()} if s else v)
            for k, (v, s) in sorted(st.config.items())
        }
        with open(path, "w", encoding="utf-8") as f:
            yaml.safe_dump(doc, f, sort_keys=False)

    # ------------------------------------------------------------------ engine

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


class _CliError(Exception):
    pass


_FLAGS_WITH_VALUE = {"--stack", "-s", "--event-log", "--exec-kind", "--page-size", "--page",
                     "--color", "--message", "--parallel", "--secrets-provider", "--client",
                     "--config-file", "--target", "--replace", "--exclude"}


def _parse(args: list[str]) -> tuple[list[str], dict[str, Any], list[str]]:
    """Split CLI arguments into command words, flags (``--flag`` -> value or True) and what follows ``--``."""
    words: list[str] = []
    opts: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest = args[i + 1:]
            break
        if a.startswith("-"):
            if "=" in a:
                k, v = a.split("=", 1)
                opts[k] = v
            elif a in _FLAGS_WITH_VALUE:
                opts["--stack" if a == "-s" else a] = args[i + 1]
                i += 1
            else:
                opts[a] = True
        else:
            words.append(a)
        i += 1
    return words, opts, rest


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
