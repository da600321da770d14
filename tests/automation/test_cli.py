"""The command line (``python -m deploy``): exit codes, one-line errors, confirmation on a TTY."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from deploy import cli
from tests.automation.conftest import REF, ROOT

IMG = "mlflow-tracking:imageRef"


class Stdin(io.StringIO):
    def __init__(self, text: str = "", tty: bool = False):
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def run(argv, fake=None, project=None, stdin=None):
    out, err = io.StringIO(), io.StringIO()
    extra = {}
    if fake is not None:
        extra = {"pulumi_command": fake, "work_dir": project}
    code = cli.main(argv, stdin=stdin or Stdin(), stdout=out, stderr=err, **extra)
    return code, out.getvalue(), err.getvalue()


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_up_dev_succeeds_with_progress_on_stderr_and_the_result_on_stdout(fake_cli, project):
    fake = fake_cli()
    fake.stacks["dev"].config[IMG] = (REF, False)
    code, out, err = run(["up", "dev"], fake, project)
    assert code == 0
    assert out == "dev: update succeeded: create 1, delete 1, update 1, unchanged 6\n"  # the copy replaces the build
    assert "dev: selecting stack" in err and "Updating (dev)" in err
    assert error_lines(err) == []


def test_preview_and_stacks(fake_cli, project):
    fake = fake_cli()
    assert run(["preview", "dev"], fake, project)[:2] == (0, "dev: no changes\n")
    assert run(["stacks"], fake, project)[:2] == (0, "dev\nprod\n")


def test_outputs_prints_text_or_json_with_secrets_masked(fake_cli, project):
    fake = fake_cli()
    fake.stacks["dev"].outputs["token"] = ("hunter2", True)
    code, out, _ = run(["outputs", "dev", "--json"], fake, project)
    data = json.loads(out)
    assert code == 0 and data["token"] == "[secret]" and data["imageRef"].startswith("123456789012.dkr.ecr.")
    code, out, _ = run(["outputs", "dev"], fake, project)
    assert "token: [secret]" in out.splitlines() and "hunter2" not in out


def test_promote_into_prod_without_a_tty_and_without_yes_is_refused(fake_cli, project):
    fake = fake_cli()
    code, out, err = run(["promote", "dev", "prod"], fake, project, stdin=Stdin(tty=False))
    assert code == 1 and out == ""
    assert error_lines(err) == [
        "error: refusing to promote to production stack 'prod' without confirmation: pass yes=True (--yes on the command line)"
    ]
    assert err.splitlines()[-1].startswith("error:") and "Traceback" not in err
    assert "config set" not in " ".join(fake.lines)


def test_promote_with_yes(fake_cli, project):
    fake = fake_cli()
    ref = fake.stacks["dev"].outputs["imageRef"][0]
    own = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow-prod@" + ref.rsplit("@", 1)[1]
    code, out, err = run(["promote", "dev", "prod", "--yes"], fake, project)
    assert code == 0 and out == f"prod: now runs {own}\n"  # prod's own copy, dev's digest
    assert (project / "Pulumi.prod.yaml").read_text().count(f"{IMG}: {ref}") == 1


@pytest.mark.parametrize("answer,code", [("y\n", 0), ("yes\n", 0), ("n\n", 1), ("\n", 1), ("", 1)])
def test_promote_into_prod_asks_on_a_tty(fake_cli, project, answer, code):
    fake = fake_cli()
    rc, out, err = run(["promote", "dev", "prod"], fake, project, stdin=Stdin(answer, tty=True))
    assert rc == code
    assert "from 'dev' to production stack 'prod' (create 8)? [y/N] " in err
    assert bool(fake.stacks["prod"].resources) == (code == 0)
    if code:
        assert error_lines(err) == ["error: promote to production stack 'prod' not confirmed; nothing deployed"]
        assert not fake.stacks["prod"].resources


def test_destroy_of_protected_data_exits_1_with_the_instructions(fake_cli, project):
    fake = fake_cli()
    code, out, err = run(["destroy", "dev", "--yes"], fake, project)
    assert code == 1
    [line] = error_lines(err)
    assert line.startswith("error: refusing to destroy stack 'dev': its data is protected")
    assert "pulumi config set mlflow-tracking:protectData false -s dev" in line


def test_unknown_stack(fake_cli, project):
    code, _, err = run(["outputs", "qa"], fake_cli(), project)
    assert code == 1
    assert error_lines(err) == [
        "error: unknown stack 'qa' (existing stacks: dev, prod); create it with `pulumi stack init qa`"
    ]


def test_a_cli_failure_is_one_line(fake_cli, project):
    fake = fake_cli(fail={"preview": "error: failed to load language plugin python: no such file"})
    code, _, err = run(["preview", "dev"], fake, project)
    assert code == 1
    assert err.splitlines()[-1] == "error: failed to load language plugin python: no such file"


def test_an_unexpected_exception_is_one_line_too(fake_cli, project):
    fake = fake_cli()

    def boom(*a, **k):
        raise ValueError("bad\nthing")

    fake._dispatch = boom
    code, _, err = run(["outputs", "dev"], fake, project)
    assert code == 1 and err.splitlines()[-1] == "error: unexpected ValueError: bad thing"


@pytest.mark.parametrize("argv", [[], ["frob"], ["up"], ["promote", "dev"], ["up", "dev", "--force"]])
def test_usage_errors_exit_2_with_one_line(argv):
    code, out, err = run(argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


def _python_m_deploy(*args, path):
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "deploy", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_python_m_deploy_without_the_pulumi_cli(tmp_path):
    p = _python_m_deploy("up", "dev", path=str(tmp_path))
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.splitlines() == [
        "error: the Pulumi CLI was not found on PATH: install it (https://www.pulumi.com/docs/install/) "
        "and log in to a backend"
    ]


def test_python_m_deploy_help_and_usage(tmp_path):
    p = _python_m_deploy("--help", path=str(tmp_path))
    assert p.returncode == 0 and "promote" in p.stdout
    p = _python_m_deploy("promote", "dev", path=str(tmp_path))
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
