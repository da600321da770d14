"""What the deploy tests expect the Pulumi CLI to be called with, and small helpers they share
(tests/automation/test_orchestration.py, test_promotion.py)."""

from __future__ import annotations

import re

import yaml

from tests.automation.fake_pulumi import RecordingPulumiCommand

ENV = "mlflow-tracking:environment"
IMG = "mlflow-tracking:imageRef"
PROTECT = "mlflow-tracking:protectData"
DELETION = "mlflow-tracking:deletionProtection"
PROD_REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow-prod"

LS = "stack ls --json"
OUT = ["stack output --json --stack {s}", "stack output --json --show-secrets --stack {s}"]
HIST = "stack history --json --show-secrets --page-size 1 --page 1 --stack {s}"
PREVIEW = "preview --diff --exec-kind auto.local --event-log <log> --stack {s}"
UP = "up --yes --skip-preview --exec-kind auto.local --event-log <log> --stack {s}"
DESTROY = "destroy --skip-preview --yes --exec-kind auto.local --event-log <log> --stack {s}"


def get(key, s):
    return f"config get {key} --json --stack {s}"


def select(s):
    return f"stack select --stack {s}"


def after_update(s):
    return [o.format(s=s) for o in OUT] + [HIST.format(s=s)]


def calls(fake: RecordingPulumiCommand) -> list[str]:
    return [re.sub(r"--event-log \S+", "--event-log <log>", line) for line in fake.lines]


def kw(fake, project, progress, **extra):
    return {"pulumi_command": fake, "work_dir": project, "on_output": progress, **extra}


def stack_file(project, stack):
    path = project / f"Pulumi.{stack}.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


class Answers:
    """A confirm callback with scripted answers that records the questions."""

    def __init__(self, *answers: bool):
        self.answers = list(answers)
        self.questions: list[str] = []

    def __call__(self, question: str) -> bool:
        self.questions.append(question)
        return self.answers.pop(0)
