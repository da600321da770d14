"""``deploy.promote`` driven against a recording fake of the Pulumi CLI: the digest copied into the
target's own repository, previewed, confirmed for production, and the config restored on any
refusal (docs/automation.md, "Promotion")."""

from __future__ import annotations

import pytest

import deploy
from tests.automation.conftest import REF, REPO
from tests.automation.fake_pulumi import COPY, SketchProgram, sketch_program
from tests.automation.cli_calls import (
    ENV, IMG, LS, OUT, PREVIEW, PROD_REPO, UP, Answers, after_update, calls, get, kw, select, stack_file)


# --------------------------------------------------------------------------- promote


@pytest.mark.parametrize("version", ["3.272.0", "3.200.0"], ids=["grpc-event-stream", "event-log-file"])
def test_promote_dev_to_prod_writes_the_digest_previews_then_updates(fake_cli, project, progress, version):
    fake = fake_cli(version=version)
    ref = fake.stacks["dev"].outputs["imageRef"][0]

    res = deploy.promote("dev", "prod", yes=True, **kw(fake, project, progress))

    assert calls(fake) == [
        LS,
        select("dev"), *[o.format(s="dev") for o in OUT],          # read the source's digest
        get(ENV, "prod"), get(IMG, "prod"),                        # is the target production, what ran before
        select("prod"),
        f"config set {IMG} --plaintext --stack prod -- {ref}",     # prod gets the digest, never builds
        PREVIEW.format(s="prod"),
        UP.format(s="prod"), *after_update("prod"),
    ]
    assert res.source == "dev" and res.target == "prod"
    assert res.image_ref == ref and res.previous_image_ref is None
    own = f"{PROD_REPO}@{ref.rsplit('@', 1)[1]}"
    assert res.update.outputs.image_ref == own == res.running_image_ref
    assert "docker:index/image:Image" not in {c.type for c in res.preview.changes}
    assert "docker:index/image:Image" not in str(fake.stacks["prod"].resources)
    assert stack_file(project, "prod")["config"][IMG] == ref
    assert f"prod: setting {IMG} = {ref}" in progress
    assert progress[-1] == f"prod: now runs {own} (copied from {ref})"


def test_promote_leaves_prod_running_its_own_copy_of_the_digest(fake_cli, project, progress):
    """Prod's image must outlive dev (dev's ECR lifecycle policy expires images; destroying dev
    force-deletes its repository): after ``promote dev prod`` prod runs dev's digest from prod's
    own repository, and still previews clean once dev's repository is gone."""
    registry: set[str] = set()
    fake = fake_cli(program=SketchProgram(registry))
    dev_ref = fake.stacks["dev"].outputs["imageRef"][0]
    digest = dev_ref.rsplit("@", 1)[1]

    res = deploy.promote("dev", "prod", yes=True, **kw(fake, project, progress))

    own = f"{PROD_REPO}@{digest}"
    assert res.update.outputs.image_ref == own == res.running_image_ref
    assert res.image_ref == dev_ref == stack_file(project, "prod")["config"][IMG]  # the config names the source
    (copy,) = [r for r in fake.stacks["prod"].resources.values() if r["type"] == COPY]
    assert copy["inputs"]["source_ref"] == dev_ref
    assert progress[-1] == f"prod: now runs {own} (copied from {dev_ref})"

    registry.discard(dev_ref)  # pulumi destroy -s dev: dev's repository and its images are gone
    assert not deploy.preview("prod", **kw(fake, project, progress)).has_changes


def test_promote_refuses_a_digest_the_source_repository_no_longer_holds(fake_cli, project, progress):
    """ECR lifecycle policy expired dev's image (or dev was destroyed) after its last ``up``: the
    copy's check fails the preview, the target's config is restored and nothing is deployed."""
    registry: set[str] = set()
    fake = fake_cli(program=SketchProgram(registry))
    dev_ref = fake.stacks["dev"].outputs["imageRef"][0]
    registry.clear()

    with pytest.raises(deploy.DeployError) as err:
        deploy.promote("dev", "prod", yes=True, **kw(fake, project, progress))

    msg = str(err.value)
    assert "\n" not in msg
    assert f"value {{{dev_ref}}} has a problem: {dev_ref.rsplit('@', 1)[1]} is not in repository 'mlflow-dev'" in msg
    assert msg.endswith("build the image again and promote the new digest")
    assert calls(fake)[-2:] == [PREVIEW.format(s="prod"), f"config rm {IMG} --stack prod"]
    assert "up" not in fake.commands() and fake.stacks["prod"].resources == {}
    assert IMG not in stack_file(project, "prod")["config"]


def test_promote_to_a_running_prod_shows_the_task_definition_diff(fake_cli, project, progress):
    old = f"{REPO}@sha256:{'b' * 64}"
    fake = fake_cli()
    fake.stacks["prod"].config[IMG] = (old, False)
    fake.stacks["prod"].resources, fake.stacks["prod"].outputs = fake.program("prod", {IMG: old})

    res = deploy.promote("dev", "prod", confirm=Answers(True), **kw(fake, project, progress))

    assert res.previous_image_ref == old
    assert dict(res.preview.counts) == {"same": 6, "update": 2}
    assert [c.describe() for c in res.preview.changes] == [
        f"  ~ update   {COPY}  mlflow-image-copy  [diff: digest, source_ref]",
        "  ~ update   aws:ecs/taskDefinition:TaskDefinition  mlflow-task  [diff: containerDefinitions]",
    ]
    assert any("mlflow-task" in line and "[diff: ~containerDefinitions]" in line for line in progress)


def test_promote_refuses_a_source_without_an_image_ref(fake_cli, project, progress):
    fake = fake_cli({"dev": {"config": {ENV: "dev"}}, "prod": {"config": {ENV: "prod"}}})
    with pytest.raises(deploy.DeployError, match=r"stack 'dev' has no 'imageRef' output: run `python -m deploy up dev` first"):
        deploy.promote("dev", "prod", yes=True, **kw(fake, project, progress))
    assert calls(fake) == [LS, select("dev"), *[o.format(s="dev") for o in OUT]]
    assert stack_file(project, "prod") is None


@pytest.mark.parametrize(
    "ref",
    [
        f"{REPO}:latest",
        f"{REPO}:1.2.3",
        f"{REPO}@sha256:{'A' * 64}",
        f"{REPO}@sha256:{'a' * 63}",
        f"{REPO}@sha512:{'a' * 64}",
        f"@sha256:{'a' * 64}",
        f"{REPO} @sha256:{'a' * 64}",
        f"{REPO}:latest@sha256:{'a' * 64}\n",
    ],
)
def test_promote_refuses_anything_but_a_digest_reference(fake_cli, project, progress, ref):
    fake = fake_cli({"dev": {"deployed": True, "outputs": {"imageRef": ref}}, "prod": {"config": {ENV: "prod"}}})
    with pytest.raises(deploy.DeployError, match=r"not a digest reference \(<repository>@sha256:<64 hex>\)") as err:
        deploy.promote("dev", "prod", yes=True, **kw(fake, project, progress))
    assert "\n" not in str(err.value)
    assert calls(fake) == [LS, select("dev"), *[o.format(s="dev") for o in OUT]]
    assert "config set" not in " ".join(fake.lines)


def test_promote_accepts_a_tag_plus_digest_reference(fake_cli, project, progress):
    ref = f"{REPO}:v1@sha256:{'c' * 64}"
    fake = fake_cli({"dev": {"deployed": True, "outputs": {"imageRef": ref}}, "staging": {"config": {ENV: "staging"}}})
    res = deploy.promote("dev", "staging", **kw(fake, project, progress))
    assert res.image_ref == ref and stack_file(project, "staging")["config"][IMG] == ref


def test_promote_to_another_registry_keeps_the_digest(fake_cli, project, progress):
    fake = fake_cli({"dev": {"deployed": True, "outputs": {"imageRef": REF}}, "prod": {"config": {ENV: "prod"}}})
    replica = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/mlflow-dev"
    res = deploy.promote("dev", "prod", repository=replica + "/", yes=True, **kw(fake, project, progress))
    assert res.image_ref == f"{replica}@sha256:{'a' * 64}"
    assert stack_file(project, "prod")["config"][IMG] == res.image_ref
    with pytest.raises(deploy.DeployError, match="does not make a digest reference"):
        deploy.promote("dev", "prod", repository="bad repo", yes=True, **kw(fake, project, progress))


def test_promote_to_prod_without_confirmation_touches_nothing(fake_cli, project, progress):
    fake = fake_cli()
    with pytest.raises(deploy.DeployError, match=r"refusing to promote to production stack 'prod' without confirmation"):
        deploy.promote("dev", "prod", **kw(fake, project, progress))
    assert calls(fake) == [LS, select("dev"), *[o.format(s="dev") for o in OUT], get(ENV, "prod")]
    assert stack_file(project, "prod") is None


@pytest.mark.parametrize("previous", [None, f"{REPO}@sha256:{'b' * 64}"])
def test_promote_to_prod_declined_after_the_preview_restores_the_config(fake_cli, project, progress, previous):
    fake = fake_cli()
    if previous:
        fake.stacks["prod"].config[IMG] = (previous, False)
    ref = fake.stacks["dev"].outputs["imageRef"][0]
    confirm = Answers(False)

    with pytest.raises(deploy.DeployError, match="promote to production stack 'prod' not confirmed; nothing deployed"):
        deploy.promote("dev", "prod", confirm=confirm, **kw(fake, project, progress))

    restore = f"config rm {IMG} --stack prod" if previous is None else f"config set {IMG} --plaintext --stack prod -- {previous}"
    assert calls(fake)[-3:] == [f"config set {IMG} --plaintext --stack prod -- {ref}", PREVIEW.format(s="prod"), restore]
    assert confirm.questions == [f"Promote {ref} from 'dev' to production stack 'prod' (create 8)?"]
    assert fake.stacks["prod"].resources == {}
    assert stack_file(project, "prod")["config"].get(IMG) == previous


def test_a_failed_preview_during_promote_restores_the_config(fake_cli, project, progress):
    fake = fake_cli(fail={"preview": "error: Missing required configuration variable 'aws:region'"})
    with pytest.raises(deploy.DeployError, match="^Missing required configuration variable 'aws:region'$"):
        deploy.promote("dev", "prod", yes=True, **kw(fake, project, progress))
    assert calls(fake)[-2:] == [PREVIEW.format(s="prod"), f"config rm {IMG} --stack prod"]
    assert IMG not in stack_file(project, "prod")["config"]


def test_promote_to_itself_is_refused(fake_cli, project, progress):
    fake = fake_cli()
    with pytest.raises(deploy.DeployError, match="cannot promote stack 'dev' to itself"):
        deploy.promote("dev", "dev", **kw(fake, project, progress))
    assert fake.calls == []


def test_promote_fails_when_the_target_reports_another_image(fake_cli, project, progress):
    def wrong(stack, config):  # a program that ignores imageRef and builds
        return sketch_program(stack, {k: v for k, v in config.items() if k != IMG})

    fake = fake_cli({"dev": {"deployed": True, "outputs": {"imageRef": REF}}, "qa": {}}, program=wrong)
    with pytest.raises(deploy.DeployError,
                       match=r"stack 'qa' reports imageRef '.*mlflow-qa@sha256:.*' after the update, expected the promoted digest sha256:a{64}$"):
        deploy.promote("dev", "qa", **kw(fake, project, progress))
