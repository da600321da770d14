"""Run the Pulumi program (``program.define_stack()``) under ``pulumi.runtime.set_mocks``.

Used by ``test_program_entry.py`` in a child process (``python -m tests.automation.program_under_mocks``)
so that the global Pulumi runtime state (mocks, config, root stack) never leaks into other tests.
Reads ``{"stack": ..., "config": {key: value}, "secret_keys": [...]}`` as JSON on stdin; prints
``{"resources": [{"type", "name", "inputs"}], "error": null|str}`` as JSON on stdout.

The mocks are the unit tests' (``tests/unit/harness.py``: camelCase outputs, the data sources the
program calls answered, any other call refused), so that the program the automation code runs
is checked against the same stand-ins as the unit tests.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def run(stack: str, config: dict[str, str], secret_keys: list[str]) -> dict[str, Any]:
    from tests.unit import harness

    import program  # the module the project's __main__.py runs

    try:
        result = harness.run(program.define_stack, config, stack, secret_keys)
    except Exception as e:  # noqa: BLE001 - reported to the parent test
        return {"resources": [], "error": f"{type(e).__name__}: {e}"}
    resources = [{"type": r.type, "name": r.name, "inputs": _jsonable(r.inputs)} for r in result.resources]
    return {"resources": resources, "error": None}


if __name__ == "__main__":
    req = json.load(sys.stdin)
    outcome = run(req["stack"], req["config"], req.get("secret_keys", []))
    sys.stdout.write("\n@@RESULT@@" + json.dumps(outcome) + "\n")
