"""image/Dockerfile read as text (no Docker needed): its instructions, ARG defaults, VOLUMEs and LABELs.

Just enough of the Dockerfile grammar for what the tests check: comments, line continuations,
`ARG NAME[=default]`, `VOLUME ["/a", "/b"]` or `VOLUME /a /b`, `LABEL k="v" ...`.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "image" / "Dockerfile"
# name[:tag]@sha256:<64 hex>: a reference pinned to one immutable manifest (or index)
PINNED = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._/-]*(?::[\w][\w.-]*)?)@(?P<digest>sha256:[0-9a-f]{64})$")


def instructions(text: str | None = None) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) for each instruction, continuation lines joined, comments dropped."""
    text = DOCKERFILE.read_text() if text is None else text
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, rest = full.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def arg_defaults(text: str | None = None, before_from: bool = True) -> dict[str, str | None]:
    """ARG defaults declared before the first FROM (the ones FROM can use), or after it."""
    seen_from = False
    found: dict[str, str | None] = {}
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            seen_from = True
        elif keyword == "ARG" and seen_from != before_from:
            name, eq, default = rest.partition("=")
            found[name.strip()] = default.strip().strip('"') if eq else None
    return found


def volumes(text: str | None = None) -> list[str]:
    """Every path declared with VOLUME (JSON array or plain form)."""
    paths: list[str] = []
    for keyword, rest in instructions(text):
        if keyword == "VOLUME":
            paths += json.loads(rest) if rest.startswith("[") else rest.split()
    return paths


def labels(text: str | None = None) -> dict[str, str]:
    """LABEL key=value pairs (quotes removed; ${VAR} references left as written)."""
    found: dict[str, str] = {}
    for keyword, rest in instructions(text):
        if keyword == "LABEL":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                found[key] = value
    return found


def pinned_base() -> tuple[str, str]:
    """(default PYTHON_IMAGE, its digest); AssertionError naming the ARG when it is not pinned."""
    base = arg_defaults().get("PYTHON_IMAGE")
    match = PINNED.match(base or "")
    assert match, (f"image/Dockerfile: the default of ARG PYTHON_IMAGE ({base!r}) is not pinned by digest "
                   f"(allowed: name:tag@sha256:<64 lowercase hex>)")
    return base, match["digest"]
