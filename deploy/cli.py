"""Command line over :mod:`deploy`: ``python -m deploy <command> ...``.

Progress goes to stderr, results to stdout. Exit codes: 0 success, 1 refused or failed (one
``error: ...`` line on stderr, no traceback), 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional, TextIO

import deploy

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise _UsageError(f"{message} (see `python -m deploy --help`)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m deploy",
        description="Preview, update, destroy and promote the mlflow-tracking stacks.",
        epilog="Production stacks (named prod, or mlflow-tracking:environment prod) ask for "
        "confirmation on a terminal; without one, --yes is required.",
    )
    p.add_argument("--cwd", metavar="DIR", help="Pulumi project directory (default: this project)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    s = sub.add_parser("stacks", help="list the stacks that exist")
    s = sub.add_parser("preview", help="show what an update would change")
    s.add_argument("stack")
    s = sub.add_parser("up", help="create or update a stack")
    s.add_argument("stack")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (prod)")
    s = sub.add_parser("destroy", help="destroy a stack's resources (refused while protectData)")
    s.add_argument("stack")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (prod)")
    s = sub.add_parser("outputs", help="print a stack's outputs")
    s.add_argument("stack")
    s.add_argument("--json", action="store_true", help="print JSON (secrets masked)")
    s = sub.add_parser("promote", help="deploy SOURCE's image digest to TARGET, copied into TARGET's repository")
    s.add_argument("source")
    s.add_argument("target")
    s.add_argument("--repository", metavar="URI",
                   help="copy from this repository instead (e.g. an ECR replica); the digest is kept")
    s.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation (prod)")
    s = sub.add_parser("cost", help="print a stack's idle monthly cost, line by line (no AWS, no Pulumi CLI)")
    s.add_argument("stack")
    return p


def _tty_confirm(stdin: TextIO, stderr: TextIO):
    if not stdin.isatty():
        return None  # no way to ask: the API refuses production changes without --yes

    def confirm(question: str) -> bool:
        stderr.write(f"{question} [y/N] ")
        stderr.flush()
        answer = stdin.readline()
        return answer.strip().lower() in ("y", "yes")

    return confirm


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    stdin: Optional[TextIO] = None,
    stdout: Optional[TextIO] = None,
    stderr: Optional[TextIO] = None,
    **api_options: Any,
) -> int:
    """Run the command line; returns the exit code. ``api_options`` (e.g. ``pulumi_command``)
    are passed to every :mod:`deploy` call (tests use it)."""
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr

    def progress(line: str) -> None:
        stderr.write(line + "\n")
        stderr.flush()

    try:
        args = _parser().parse_args(argv)
    except _UsageError as e:
        stderr.write(f"error: {e}\n")
        return EXIT_USAGE
    except SystemExit as e:  # --help
        return int(e.code or 0)

    opts: dict[str, Any] = {"on_output": progress, **api_options}
    if args.cwd:
        opts["work_dir"] = args.cwd
    if args.command == "cost":  # the program under mocks: no engine, no credentials (deploy/cost.py)
        from pathlib import Path

        from deploy import cost

        try:
            est = cost.estimate(args.stack, work_dir=Path(args.cwd).resolve() if args.cwd else cost.ROOT)
        except cost.CostError as e:
            stderr.write(f"error: {e}\n")
            return EXIT_FAILED
        stdout.write(est.render())
        stdout.flush()
        return EXIT_OK
    try:
        if args.command == "stacks":
            for name in deploy.list_stacks(**opts):
                stdout.write(name + "\n")
        elif args.command == "preview":
            summary = deploy.preview(args.stack, **opts)
            stdout.write(f"{summary.stack}: {summary.describe()}\n")
        elif args.command == "up":
            result = deploy.up(args.stack, yes=args.yes, confirm=_tty_confirm(stdin, stderr), **opts)
            stdout.write(f"{result.stack}: {result.kind} {result.result}: {result.changes.describe()}\n")
        elif args.command == "destroy":
            result = deploy.destroy(args.stack, yes=args.yes, confirm=_tty_confirm(stdin, stderr), **opts)
            stdout.write(f"{result.stack}: {result.kind} {result.result}: {result.changes.describe()}\n")
        elif args.command == "outputs":
            outs = deploy.outputs(args.stack, **opts)
            if args.json:
                stdout.write(json.dumps(outs.masked(), indent=2, sort_keys=True) + "\n")
            else:
                for key, value in sorted(outs.masked().items()):
                    stdout.write(f"{key}: {value}\n")
        elif args.command == "promote":
            res = deploy.promote(
                args.source, args.target, repository=args.repository, yes=args.yes, confirm=_tty_confirm(stdin, stderr), **opts
            )
            stdout.write(f"{res.target}: now runs {res.running_image_ref or res.image_ref}\n")
        stdout.flush()
        return EXIT_OK
    except deploy.DeployError as e:
        stderr.write(f"error: {e}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        stderr.write("error: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the contract is one line, never a traceback
        text = " ".join(str(e).split()) or type(e).__name__
        stderr.write(f"error: unexpected {type(e).__name__}: {text}\n")
        return EXIT_FAILED
