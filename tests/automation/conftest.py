"""Fixtures for the automation tests: a throw-away project directory and the recording fake CLI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.automation.fake_pulumi import RecordingPulumiCommand

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "a" * 64
REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow-dev"
REF = f"{REPO}@sha256:{DIGEST}"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of Pulumi.yaml in a temp dir: the fake writes Pulumi.<stack>.yaml there, not here."""
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    return tmp_path


@pytest.fixture
def fake_cli():
    """``fake_cli(stacks, **kw)`` -> RecordingPulumiCommand; default stacks: a deployed dev, an empty prod."""

    def make(stacks=None, **kw) -> RecordingPulumiCommand:
        if stacks is None:
            stacks = {
                "dev": {"config": {"mlflow-tracking:environment": "dev", "aws:region": "eu-west-1"},
                        "deployed": True},
                "prod": {"config": {"mlflow-tracking:environment": "prod", "aws:region": "eu-west-1"}},
            }
        return RecordingPulumiCommand(stacks, **kw)

    return make


class Progress(list):
    """An on_output callback that keeps the lines."""

    def __call__(self, line: str) -> None:
        self.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self)


@pytest.fixture
def progress() -> Progress:
    return Progress()
