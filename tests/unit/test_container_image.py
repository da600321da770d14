"""ContainerImage on its own: build + push by digest, or pass a promoted digest through untouched."""

from __future__ import annotations

import json

import pytest

from components.container_image import ContainerImage, ContainerImageArgs, context_digest, ecr_repository_arn
from tests.unit.harness import PROMOTED_REF, is_secret, run

IMAGE = "docker:index/image:Image"


def image(**kw):
    holder = {}

    def body():
        holder["c"] = ContainerImage("img", ContainerImageArgs(**kw))
        return holder["c"].image_ref.apply(lambda ref: holder.__setitem__("ref", ref))

    return run(body), holder


def test_builds_for_the_stack_architecture_and_pushes_to_its_own_repository():
    r, got = image(cpu_architecture="ARM64", context="image", tag="t1", images_kept=7, force_delete=True)
    repo = r.one("aws:ecr/repository:Repository")
    assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo.inputs["forceDelete"] is True
    img = r.one(IMAGE)
    assert img.inputs["build"]["platform"] == "linux/arm64"
    assert img.inputs["build"]["context"] == "image"
    assert img.inputs["imageName"] == f"{repo.outputs['repositoryUrl']}:t1"
    assert img.inputs["registry"]["server"] == repo.outputs["repositoryUrl"]
    assert got["ref"].startswith(repo.outputs["repositoryUrl"] + "@sha256:")
    rule = json.loads(r.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])["rules"][0]
    assert rule["selection"]["countNumber"] == 7 and rule["action"]["type"] == "expire"
    assert ("aws:ecr/getAuthorizationToken:getAuthorizationToken" in [c[0] for c in r.recorder.calls])


def test_registry_password_stays_secret():
    r, _ = image(tag="t")
    img = r.one(IMAGE)
    assert img.inputs["registry"]["password"] == "ecr-token-password"
    raw = img.raw_inputs["registry"]
    assert is_secret(raw) or is_secret(raw["password"])


def test_a_promoted_digest_builds_and_creates_nothing():
    r, got = image(image_ref=PROMOTED_REF)
    assert [x.type for x in r.resources] == ["mlflowtracking:index:ContainerImage"]
    assert got["ref"] == PROMOTED_REF
    assert not r.recorder.calls  # not even the ECR token


def test_ecr_repository_arn_of_a_reference():
    assert ecr_repository_arn(PROMOTED_REF) == "arn:aws:ecr:eu-west-1:123456789012:repository/mlflow-dev"
    assert ecr_repository_arn("ghcr.io/org/mlflow@sha256:" + "a" * 64) is None


def test_context_digest_changes_with_the_content(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    first = context_digest(tmp_path)
    assert first == context_digest(tmp_path)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nUSER 1000\n")
    assert context_digest(tmp_path) != first


@pytest.mark.parametrize("kw", [
    {"image_ref": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow:latest"},
    {"image_ref": "mlflow@sha256:" + "a" * 63},
    {"cpu_architecture": "arm"},
    {"images_kept": 0},
])
def test_args_validation(kw):
    with pytest.raises(ValueError):
        ContainerImageArgs(**kw)
