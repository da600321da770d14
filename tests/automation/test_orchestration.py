"""The deploy API driven against a recording fake of the Pulumi CLI.

Each test asserts the exact CLI invocations (stack selections, config reads and writes,
operations) in order, and the guard rails: what is refused is refused before anything is touched.
"""

from __future__ import annotations

import logging

import pytest
from pulumi import automation as auto

import deploy
from tests.automation.conftest import REF, REPO
from tests.automation.fake_pulumi import COPY
from tests.automation.cli_calls import (
    DESTROY, ENV, IMG, LS, OUT, PREVIEW, PROD_REPO, PROTECT, DELETION, HIST, UP, Answers, after_update, calls, get, kw, select, stack_file)


# --------------------------------------------------------------------------- preview / outputs


def test_preview_selects_the_stack_and_previews_only(fake_cli, project, progress):
    fake = fake_cli()
    fake.stacks["dev"].config["mlflow-tracking:imageRef"] = (REF, False)  # changes the task definition

    summary = deploy.preview("dev", **kw(fake, project, progress))

    assert calls(fake) == [LS, select("dev"), PREVIEW.format(s="dev")]
    assert summary.stack == "dev"
    assert summary.has_changes
    assert dict(summary.counts) == {"same": 6, "update": 1, "delete": 1, "create": 1}
    ops = {(c.op, c.type) for c in summary.changes}
    assert ops == {("update", "aws:ecs/taskDefinition:TaskDefinition"), ("delete", "docker:index/image:Image"),
                   ("create", COPY)}
    task = next(c for c in summary.changes if c.op == "update")
    assert task.diffs == ("containerDefinitions",)
    # the diff is shown through the progress callback: the CLI's own text and one line per change
    assert "Previewing update (dev)" in progress.text
    assert "~ update   aws:ecs/taskDefinition:TaskDefinition  mlflow-task  [diff: containerDefinitions]" in progress.text
    assert progress[-1] == "dev: planned: create 1, delete 1, update 1, unchanged 6"
    # a preview changes nothing
    assert IMG in dict(fake.stacks["dev"].config) and "docker:index/image:Image" in str(fake.stacks["dev"].resources)


def test_preview_without_changes(fake_cli, project, progress):
    fake = fake_cli()
    summary = deploy.preview("dev", **kw(fake, project, progress))
    assert not summary.has_changes
    assert summary.describe() == "no changes"
    assert summary.changes == ()


def test_outputs_reads_both_views_and_keeps_secrets_marked(fake_cli, project, progress):
    fake = fake_cli()
    fake.stacks["dev"].outputs["extra"] = ("s3cr3t", True)

    outs = deploy.outputs("dev", **kw(fake, project, progress))

    assert calls(fake) == [LS, select("dev"), *[o.format(s="dev") for o in OUT]]
    assert outs.image_ref.startswith(f"{REPO}@sha256:")
    assert deploy.DIGEST_REF_RE.fullmatch(outs.image_ref)
    assert outs.tracking_uri == "https://mlflow-dev-123.eu-west-1.elb.amazonaws.com"
    assert outs.admin_secret_arn.startswith("arn:aws:secretsmanager:")
    assert outs["extra"] == "s3cr3t" and outs.secret_keys == {"extra"}
    assert outs.masked()["extra"] == "[secret]"
    assert outs.masked()["imageRef"] == outs.image_ref


# --------------------------------------------------------------------------- up


def test_up_dev_updates_without_asking(fake_cli, project, progress):
    fake = fake_cli({"dev": {"config": {ENV: "dev"}}})
    confirm = Answers()

    result = deploy.up("dev", confirm=confirm, **kw(fake, project, progress))

    assert calls(fake) == [LS, get(ENV, "dev"), select("dev"), UP.format(s="dev"), *after_update("dev")]
    assert confirm.questions == []
    assert result.kind == "update" and result.result == "succeeded" and result.version == 1
    assert dict(result.changes.counts) == {"create": 8}
    assert "docker:index/image:Image" in {c.type for c in result.changes.changes}  # dev builds
    assert deploy.DIGEST_REF_RE.fullmatch(result.outputs.image_ref)
    assert "Updating (dev)" in progress.text and progress[-1] == "dev: updated: create 8"


@pytest.mark.parametrize("version", ["3.272.0", "3.200.0"], ids=["grpc-event-stream", "event-log-file"])
def test_up_reads_engine_events_over_both_transports(fake_cli, project, progress, version):
    fake = fake_cli({"dev": {"config": {ENV: "dev"}}}, version=version)
    result = deploy.up("dev", **kw(fake, project, progress))
    log = next(a for c in fake.calls if c.args[0] == "up" for i, a in enumerate(c.args) if c.args[i - 1] == "--event-log")
    assert log.startswith("tcp://127.0.0.1:") == (version == "3.272.0")
    assert len(result.changes.changes) == 8  # every create arrived as an engine event


def test_up_into_prod_without_confirmation_is_refused_before_anything(fake_cli, project, progress):
    fake = fake_cli()
    fake.stacks["prod"].config[IMG] = (REF, False)

    with pytest.raises(deploy.DeployError, match=r"refusing to update production stack 'prod' without confirmation"):
        deploy.up("prod", **kw(fake, project, progress))

    assert calls(fake) == [LS, get(ENV, "prod"), get(IMG, "prod")]


def test_up_into_prod_declined_previews_but_does_not_update(fake_cli, project, progress):
    fake = fake_cli()
    fake.stacks["prod"].config[IMG] = (REF, False)
    confirm = Answers(False)

    with pytest.raises(deploy.DeployError, match=r"update production stack 'prod' not confirmed"):
        deploy.up("prod", confirm=confirm, **kw(fake, project, progress))

    assert calls(fake) == [LS, get(ENV, "prod"), get(IMG, "prod"), select("prod"), PREVIEW.format(s="prod")]
    assert confirm.questions == ["Update production stack 'prod' (create 8)?"]
    assert fake.stacks["prod"].resources == {}


def test_up_into_prod_confirmed(fake_cli, project, progress):
    fake = fake_cli()
    fake.stacks["prod"].config[IMG] = (REF, False)
    confirm = Answers(True)

    result = deploy.up("prod", confirm=confirm, **kw(fake, project, progress))

    assert calls(fake) == [LS, get(ENV, "prod"), get(IMG, "prod"), select("prod"), PREVIEW.format(s="prod"),
                           UP.format(s="prod"), *after_update("prod")]
    assert len(confirm.questions) == 1
    assert result.outputs.image_ref == f"{PROD_REPO}@{REF.rsplit('@', 1)[1]}"
    assert "docker:index/image:Image" not in {c.type for c in result.changes.changes}


def test_up_into_prod_with_yes_does_not_ask(fake_cli, project, progress):
    fake = fake_cli()
    fake.stacks["prod"].config[IMG] = (REF, False)
    confirm = Answers()

    deploy.up("prod", yes=True, confirm=confirm, **kw(fake, project, progress))

    assert calls(fake) == [LS, get(ENV, "prod"), get(IMG, "prod"), select("prod"), UP.format(s="prod"),
                           *after_update("prod")]
    assert confirm.questions == []


def test_up_into_prod_without_a_promoted_image_is_refused(fake_cli, project, progress):
    fake = fake_cli()
    with pytest.raises(deploy.DeployError, match=r"production never builds an image; promote .* first"):
        deploy.up("prod", yes=True, **kw(fake, project, progress))
    assert calls(fake) == [LS, get(ENV, "prod"), get(IMG, "prod")]


def test_environment_prod_makes_any_stack_name_production(fake_cli, project, progress):
    fake = fake_cli({"live": {"config": {ENV: "prod", IMG: REF}}})
    with pytest.raises(deploy.DeployError, match="production stack 'live' without confirmation"):
        deploy.up("live", **kw(fake, project, progress))


def test_a_stack_named_prod_is_production_without_the_environment_setting(fake_cli, project, progress):
    fake = fake_cli({"prod": {"config": {IMG: REF}}})
    with pytest.raises(deploy.DeployError, match="production stack 'prod' without confirmation"):
        deploy.up("prod", **kw(fake, project, progress))


# --------------------------------------------------------------------------- destroy


@pytest.mark.parametrize("setting", [None, "true", "True"])
def test_destroy_of_protected_data_is_refused_before_anything_is_touched(fake_cli, project, progress, setting):
    config = {ENV: "dev"} if setting is None else {ENV: "dev", PROTECT: setting}
    fake = fake_cli({"dev": {"config": config, "deployed": True}})
    before = dict(fake.stacks["dev"].resources)

    with pytest.raises(deploy.DeployError) as err:
        deploy.destroy("dev", yes=True, **kw(fake, project, progress))

    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("refusing to destroy stack 'dev': its data is protected")
    assert "`pulumi config set mlflow-tracking:protectData false -s dev`" in msg
    assert "`python -m deploy up dev`" in msg and msg.endswith("then destroy")
    assert calls(fake) == [LS, get(PROTECT, "dev")]  # no select, no config write, no operation
    assert fake.stacks["dev"].resources == before
    assert not (project / "Pulumi.dev.yaml").exists()


def test_destroy_is_refused_while_the_stack_file_keeps_deletion_protection(fake_cli, project, progress):
    fake = fake_cli({"prod": {"config": {ENV: "prod", PROTECT: "false", DELETION: "true", IMG: REF},
                              "deployed": True}})
    before = dict(fake.stacks["prod"].resources)

    with pytest.raises(deploy.DeployError) as err:
        deploy.destroy("prod", yes=True, **kw(fake, project, progress))

    msg = str(err.value)
    assert msg.startswith("refusing to destroy stack 'prod': its database has deletion protection")
    assert "`pulumi config set mlflow-tracking:deletionProtection false -s prod`" in msg
    assert calls(fake) == [LS, get(PROTECT, "prod"), get(DELETION, "prod")]
    assert fake.stacks["prod"].resources == before


def test_destroy_with_protection_lifted(fake_cli, project, progress):
    fake = fake_cli({"dev": {"config": {ENV: "dev", PROTECT: "false"}, "deployed": True}})

    result = deploy.destroy("dev", **kw(fake, project, progress))

    assert calls(fake) == [LS, get(PROTECT, "dev"), get(DELETION, "dev"), get(ENV, "dev"), select("dev"),
                           DESTROY.format(s="dev"),
                           HIST.format(s="dev")]
    assert result.kind == "destroy" and dict(result.changes.counts) == {"delete": 8}
    assert dict(result.outputs.values) == {}
    assert fake.stacks["dev"].resources == {}


def test_destroy_of_prod_needs_confirmation_even_when_unprotected(fake_cli, project, progress):
    fake = fake_cli({"prod": {"config": {ENV: "prod", PROTECT: "false", IMG: REF}, "deployed": True}})
    with pytest.raises(deploy.DeployError, match="refusing to destroy production stack 'prod' without confirmation"):
        deploy.destroy("prod", **kw(fake, project, progress))
    assert calls(fake) == [LS, get(PROTECT, "prod"), get(DELETION, "prod"), get(ENV, "prod")]

    confirm = Answers(False)
    with pytest.raises(deploy.DeployError, match="not confirmed"):
        deploy.destroy("prod", confirm=confirm, **kw(fake, project, progress))
    assert "destroy" not in fake.commands()
    assert fake.stacks["prod"].resources

    deploy.destroy("prod", confirm=Answers(True), **kw(fake, project, progress))
    assert fake.stacks["prod"].resources == {}


@pytest.mark.parametrize("value", ["maybe", "0", "no"])
def test_destroy_rejects_a_protect_data_value_that_is_not_a_boolean(fake_cli, project, progress, value):
    fake = fake_cli({"dev": {"config": {PROTECT: value}}})
    with pytest.raises(deploy.DeployError, match=rf"mlflow-tracking:protectData must be true or false, got '{value}'"):
        deploy.destroy("dev", **kw(fake, project, progress))
    assert calls(fake) == [LS, get(PROTECT, "dev")]


# --------------------------------------------------------------------------- unknown stacks, errors


@pytest.mark.parametrize(
    "call",
    [
        lambda k: deploy.preview("staging", **k),
        lambda k: deploy.up("staging", yes=True, **k),
        lambda k: deploy.destroy("staging", yes=True, **k),
        lambda k: deploy.outputs("staging", **k),
        lambda k: deploy.promote("dev", "staging", yes=True, **k),
        lambda k: deploy.promote("staging", "prod", yes=True, **k),
    ],
    ids=["preview", "up", "destroy", "outputs", "promote-target", "promote-source"],
)
def test_an_unknown_stack_is_an_error_listing_the_existing_ones(fake_cli, project, progress, call):
    fake = fake_cli()
    with pytest.raises(deploy.DeployError) as err:
        call(kw(fake, project, progress))
    assert str(err.value) == (
        "unknown stack 'staging' (existing stacks: dev, prod); create it with `pulumi stack init staging`"
    )
    assert calls(fake) == [LS]


def test_unknown_stack_with_no_stacks_at_all(fake_cli, project, progress):
    fake = fake_cli({})
    with pytest.raises(deploy.DeployError, match=r"unknown stack 'dev' \(existing stacks: none\)"):
        deploy.outputs("dev", **kw(fake, project, progress))


def test_org_qualified_stack_names_match_their_short_name(fake_cli, project, progress):
    fake = fake_cli({"acme/dev": {"deployed": True}})
    assert deploy.list_stacks(**kw(fake, project, progress)) == ["acme/dev"]
    fake.calls.clear()
    deploy.outputs("dev", **kw(fake, project, progress))
    assert calls(fake)[:2] == [LS, select("acme/dev")]


def test_an_ambiguous_short_name_is_refused(fake_cli, project, progress):
    fake = fake_cli({"acme/dev": {}, "other/dev": {}})
    with pytest.raises(deploy.DeployError, match=r"stack name 'dev' is ambiguous \(acme/dev, other/dev\)"):
        deploy.preview("dev", **kw(fake, project, progress))
    assert calls(fake) == [LS]


def test_a_failing_cli_command_becomes_one_line(fake_cli, project, progress):
    fake = fake_cli(fail={"up": "error: creating ECS Service (mlflow): AccessDeniedException: not authorized"})
    with pytest.raises(deploy.DeployError) as err:
        deploy.up("dev", **kw(fake, project, progress))
    assert str(err.value) == "creating ECS Service (mlflow): AccessDeniedException: not authorized"
    assert isinstance(err.value.__cause__, auto.CommandError)


def test_no_pulumi_cli_is_a_clear_error(project, progress, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no `pulumi`
    with pytest.raises(deploy.DeployError, match=r"^the Pulumi CLI was not found on PATH"):
        deploy.preview("dev", work_dir=project, on_output=progress)


# --------------------------------------------------------------------------- injection, defaults


def test_workspace_options_are_used_and_not_mutated(fake_cli, project, progress):
    fake = fake_cli()
    opts = auto.LocalWorkspaceOptions(pulumi_command=fake, env_vars={"PULUMI_CONFIG_PASSPHRASE": "x"},
                                      pulumi_home=str(project / ".pulumi-home"))

    deploy.outputs("dev", workspace_options=opts, work_dir=project, on_output=progress)

    assert opts.work_dir is None
    assert fake.calls and all(c.cwd == str(project) for c in fake.calls)
    assert all({"PULUMI_CONFIG_PASSPHRASE", "PULUMI_HOME"} <= c.env_keys for c in fake.calls)


def test_the_default_work_dir_is_the_project_root(fake_cli):
    fake = fake_cli()
    fake.persist = False
    deploy.outputs("dev", pulumi_command=fake, on_output=lambda _: None)
    assert {c.cwd for c in fake.calls} == {str(deploy.PROJECT_DIR)}
    assert (deploy.PROJECT_DIR / "Pulumi.yaml").exists()


def test_progress_goes_to_the_deploy_logger_by_default(fake_cli, project, caplog):
    fake = fake_cli()
    with caplog.at_level(logging.INFO, logger="deploy"):
        deploy.preview("dev", pulumi_command=fake, work_dir=project)
    assert "dev: previewing changes" in caplog.messages
    assert "Previewing update (dev)" in caplog.messages


# --------------------------------------------------------------------------- the fake answers like the CLI


def test_the_fake_answers_the_sdk_like_the_cli(fake_cli, project):
    fake = fake_cli()
    ws = auto.LocalWorkspace(work_dir=str(project), pulumi_command=fake)

    assert ws.pulumi_version == "3.272.0"
    who = ws.who_am_i()
    assert who.user == "ci-bot" and who.organizations == ["acme"]
    stacks = {s.name: s for s in ws.list_stacks()}
    assert stacks["dev"].resource_count == 8 and stacks["dev"].last_update is not None
    assert stacks["prod"].resource_count is None
    with pytest.raises(auto.StackNotFoundError):
        auto.Stack.select("nope", ws)
    with pytest.raises(auto.StackAlreadyExistsError):
        auto.Stack.create("dev", ws)
    with pytest.raises(auto.CommandError, match="configuration key 'mlflow-tracking:nope' not found for stack 'dev'"):
        ws.get_config("dev", "mlflow-tracking:nope")
    ws.set_config("dev", "mlflow-tracking:token", auto.ConfigValue("t0k3n", secret=True))
    assert ws.get_all_config("dev")["mlflow-tracking:token"].secret
    assert stack_file(project, "dev")["config"]["mlflow-tracking:token"]["secure"].startswith("v1:")
    stack = auto.create_or_select_stack("e2e-x", work_dir=str(project),
                                        opts=auto.LocalWorkspaceOptions(pulumi_command=fake))
    assert stack.preview().change_summary == {"create": 8}
    up = stack.up(on_output=lambda _: None)
    assert up.summary.kind == "update" and up.summary.resource_changes == {"create": 8}
    assert up.outputs["imageRef"].value.startswith("123456789012.dkr.ecr.")
    with pytest.raises(auto.CommandError, match="still has resources"):
        ws.remove_stack("e2e-x")
    stack.destroy(remove=True)
    assert "e2e-x" not in fake.stacks
    doc = __import__("json").loads(fake.run(["preview", "--json", "--stack", "dev"], str(project), {}).stdout)
    assert doc["changeSummary"] == {"same": 8} and {s["op"] for s in doc["steps"]} == {"same"}
