"""ContainerImage on its own: build + push by digest, or copy a promoted digest into a repository of its own."""

from __future__ import annotations

import json

import pulumi
import pytest

from components.container_image import ContainerImage, ContainerImageArgs, context_digest, ecr_repository_arn
from tests.unit.harness import PROMOTED_REF, is_secret, run

IMAGE = "docker:index/image:Image"


def image(**kw):
    holder = {}

    def body():
        holder["c"] = c = ContainerImage("img", ContainerImageArgs(**kw))
        arn = c.repository_arn if c.repository_arn is not None else pulumi.Output.from_input(None)
        return pulumi.Output.all(c.image_ref, arn).apply(lambda v: holder.update(ref=v[0], arn=v[1]))

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


def test_the_default_build_tag_is_the_build_tag_of_the_context(tmp_path):
    from components.container_image import build_tag

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    r, _ = image(context=str(tmp_path), cpu_architecture="ARM64")
    assert r.one(IMAGE).inputs["imageName"].endswith(":" + build_tag(tmp_path, "ARM64"))


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


# --------------------------------------------------------------------------- promotion: prod owns its image

COPY = "pulumi-python:dynamic/mlflowtracking:EcrImageCopy"
REPO = "aws:ecr/repository:Repository"


def test_a_promoted_digest_is_copied_into_a_repository_of_its_own():
    """Prod's image must outlive dev: a promoted ECR digest is copied, digest unchanged, into a
    repository this component creates, and the image reference points there (not into dev's
    repository, whose lifecycle policy expires images and whose stack may be destroyed).
    AWS: ECR User Guide, "Private image replication" (cross-Region or cross-account only, so it
    cannot serve a same-account same-Region prod) and ECR API Reference, PutImage (imageDigest)."""
    r, got = image(image_ref=PROMOTED_REF, force_delete=False, protect=True)
    repo = r.one(REPO)
    copy = r.one(COPY)
    assert copy.parent == r.one("mlflowtracking:index:ContainerImage").urn
    assert copy.inputs["source_ref"] == PROMOTED_REF
    assert copy.inputs["repository_url"] == repo.outputs["repositoryUrl"]
    digest = PROMOTED_REF.rsplit("@", 1)[1]
    assert got["ref"] == f"{repo.outputs['repositoryUrl']}@{digest}"
    assert "mlflow-dev" not in got["ref"]
    assert got["arn"] == repo.outputs["arn"]  # the execution role's pull grant is on prod's repository
    assert repo.protect and repo.inputs["forceDelete"] is False
    assert not r.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")  # nothing in use ever expires
    assert not [x for x in r.resources if x.type.startswith("docker:")]  # still no build
    assert not r.recorder.calls  # no registry token: nothing is pushed with Docker


@pytest.mark.parametrize("kw", [{"tag": "t"}, {"image_ref": PROMOTED_REF}], ids=["built", "promoted"])
def test_repository_tags_are_immutable(kw):
    """ECR User Guide, "Preventing image tags from being overwritten": with IMMUTABLE a pushed tag
    can never point at other content."""
    r, _ = image(**kw)
    assert r.one(REPO).inputs["imageTagMutability"] == "IMMUTABLE"


def test_ecr_repository_arn_ignores_a_tag_in_a_digest_reference():
    """A ``repo:tag@sha256:`` reference (components.outputs.DIGEST_REF_RE accepts it) names the
    repository without the tag (IAM: ECR resource ARNs are ``...:repository/<name>``)."""
    tagged = PROMOTED_REF.replace("mlflow-dev@", "mlflow-dev:v1.2@")
    assert ecr_repository_arn(tagged) == "arn:aws:ecr:eu-west-1:123456789012:repository/mlflow-dev"
    nested = PROMOTED_REF.replace("mlflow-dev@", "team/mlflow:v1@")
    assert ecr_repository_arn(nested) == "arn:aws:ecr:eu-west-1:123456789012:repository/team/mlflow"


def test_a_tagged_promoted_reference_is_copied_by_its_digest():
    tagged = PROMOTED_REF.replace("mlflow-dev@", "mlflow-dev:v1@")
    r, got = image(image_ref=tagged)
    assert got["ref"] == f"{r.one(REPO).outputs['repositoryUrl']}@{tagged.rsplit('@', 1)[1]}"


def test_an_image_outside_ecr_runs_as_given():
    """Only ECR images can be copied with the ECR API; anything else is passed through."""
    ref = "ghcr.io/org/mlflow@sha256:" + "c" * 64
    r, got = image(image_ref=ref)
    assert [x.type for x in r.resources] == ["mlflowtracking:index:ContainerImage"]
    assert got["ref"] == ref and got["arn"] is None


def test_build_tag_changes_with_everything_that_makes_pulumi_docker_rebuild(tmp_path, monkeypatch):
    """With IMMUTABLE tags a push under an existing tag fails, even with identical content (ECR:
    ImageTagAlreadyExistsException; aws/containers-roadmap#2179). pulumi-docker rebuilds and pushes
    whenever its inputs change: the context hash it computes (file names, modes and bytes),
    the platform, or its own version. The tag must change with each of them."""
    from components import container_image as ci
    from components.container_image import build_tag

    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    base = build_tag(tmp_path, "X86_64")
    assert base == build_tag(tmp_path, "X86_64")
    assert build_tag(tmp_path, "ARM64") != base
    (tmp_path / "run.sh").chmod(0o755)
    moded = build_tag(tmp_path, "X86_64")
    assert moded != base
    monkeypatch.setattr(ci, "_pulumi_docker_version", lambda: "9.9.9")
    assert build_tag(tmp_path, "X86_64") != moded
