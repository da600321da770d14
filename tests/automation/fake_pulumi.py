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

Three files, one job each: this one is the CLI (argument parsing, the ``stack``/``config`` commands,
the recording); :mod:`tests.automation.fake_pulumi_engine` the stacks' state and the operations;
:mod:`tests.automation.fake_pulumi_program` the program. Their names are importable from here too.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

import yaml
from pulumi.automation import CommandResult, PulumiCommand
from pulumi.automation._cmd import _parse_and_validate_pulumi_version
from pulumi.automation._minimum_version import _MINIMUM_VERSION
from pulumi.automation.errors import create_command_error

from tests.automation.fake_pulumi_engine import ERR, FakeEngine, FakeStack
from tests.automation.fake_pulumi_program import (COPY, PROJECT, Program, ProgramError, Resources, SketchProgram,
                                                  sketch_program)

__all__ = ["COPY", "ERR", "PROJECT", "Call", "FakeStack", "Program", "ProgramError", "RecordingPulumiCommand",
           "Resources", "SketchProgram", "sketch_program"]


@dataclass(frozen=True)
class Call:
    args: tuple[str, ...]
    """Arguments without the ``--non-interactive`` flags."""
    cwd: str
    env_keys: frozenset[str]

    @property
    def line(self) -> str:
        return shlex.join(self.args)


class RecordingPulumiCommand(FakeEngine, PulumiCommand):
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
