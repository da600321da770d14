"""The program itself under mocks, through the entry the automation code runs.

``deploy`` runs ``pulumi up`` in the project directory, which runs ``__main__.py`` ->
``program.define_stack()``. Here that function runs under ``pulumi.runtime.set_mocks``
(``preview=False``) with the config of ``Pulumi.dev.yaml`` plus the ``mlflow-tracking:imageRef``
that ``deploy.promote`` writes, in a child process so the global runtime state stays there. The
promoted digest is copied into the stack's own repository (``EcrImageCopy``) and run from there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.automation.conftest import REF, ROOT

PROJECT = "mlflow-tracking"
IMAGE = "docker:index/image:Image"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
COPY = "pulumi-python:dynamic/mlflowtracking:EcrImageCopy"
REPO = "aws:ecr/repository:Repository"

pytestmark = pytest.mark.skipif(
    not (ROOT / "program.py").exists() or not (ROOT / "Pulumi.dev.yaml").exists(),
    reason="program.py / Pulumi.dev.yaml not in the project yet",
)


def stack_config(stack: str) -> tuple[dict[str, str], list[str]]:
    """A stack file's config as the engine hands it to the program: namespaced keys, string values
    (objects as JSON), secure values replaced by a placeholder and listed as secret."""
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text()) or {}
    config: dict[str, str] = {}
    secret: list[str] = []
    for key, value in (doc.get("config") or {}).items():
        key = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[key] = "mock-secret-value"
            secret.append(key)
        elif isinstance(value, bool):
            config[key] = "true" if value else "false"
        elif isinstance(value, (dict, list)):
            config[key] = json.dumps(value)
        else:
            config[key] = str(value)
    return config, secret


def run_program(stack: str, config: dict[str, str], secret_keys: list[str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.automation.program_under_mocks"],
        input=json.dumps({"stack": stack, "config": config, "secret_keys": secret_keys}),
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    marker = "\n@@RESULT@@"
    assert marker in proc.stdout, f"program run crashed (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.rsplit(marker, 1)[1])


def container_images(task_inputs: dict[str, Any]) -> list[str]:
    defs = task_inputs.get("containerDefinitions")
    if isinstance(defs, str):
        defs = json.loads(defs)
    return [c.get("image") for c in defs or []]


@pytest.fixture(scope="module")
def promoted() -> dict[str, Any]:
    config, secret = stack_config("dev")
    config[f"{PROJECT}:imageRef"] = REF  # exactly what deploy.promote writes
    return run_program("dev", config, secret)


def test_the_program_runs_with_a_promoted_image_ref(promoted):
    assert promoted["error"] is None, promoted["error"]
    assert promoted["resources"], "define_stack() registered no resources"


def test_with_image_ref_set_no_image_is_built(promoted):
    types = [r["type"] for r in promoted["resources"]]
    assert IMAGE not in types
    assert not any(t.startswith("docker:") for t in types), "nothing may build or push an image"


def test_with_image_ref_set_the_task_definition_runs_the_stacks_own_copy_of_that_digest(promoted):
    """The stack copies the promoted digest into its own repository (prod's image outlives dev's
    repository) and runs it from there: same digest, other repository."""
    (copy,) = [r for r in promoted["resources"] if r["type"] == COPY]
    assert copy["inputs"]["source_ref"] == REF
    (repo,) = [r for r in promoted["resources"] if r["type"] == REPO]
    assert repo["inputs"]["imageTagMutability"] == "IMMUTABLE"
    tasks = [r for r in promoted["resources"] if r["type"] == TASK]
    assert sorted(t["name"] for t in tasks) == ["mlflow-service-dbadmin-task", "mlflow-service-task"]
    own = f"{copy['inputs']['repository_url']}@{REF.rsplit('@', 1)[1]}"
    for task in tasks:  # the server and the database admin step run the same image
        images = container_images(task["inputs"])
        assert own in images and REF not in images
        assert all(img == own or "@sha256:" not in img for img in images), images


def test_without_image_ref_dev_builds_its_image():
    """The contrast that shows the assertions above can fail: dev as committed builds."""
    config, secret = stack_config("dev")
    if f"{PROJECT}:imageRef" in config:
        pytest.skip("Pulumi.dev.yaml pins an imageRef")
    result = run_program("dev", config, secret)
    assert result["error"] is None, result["error"]
    assert IMAGE in [r["type"] for r in result["resources"]]
