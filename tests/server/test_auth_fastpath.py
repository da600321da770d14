"""The auth fast path (image/plugins/mlflow_auth_fastpath) decides exactly what MLflow's own
basic-auth app decides: the same calls against the same databases, once through the project's
default (`basic-auth-fastpath`) and once with MLFLOW_AUTH_FASTPATH=false (MLflow's `basic-auth`),
with the expected answers written out, including grant and admin changes that must apply to the
very next request (nothing is cached between requests)."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.support.auth_pair import fastpath_and_basic_auth

API = "/api/2.0/mlflow"


@pytest.fixture(scope="module")
def both(stack):
    """(fast path server, MLflow's basic-auth server) on the stack's databases, one worker each:
    every request then meets whatever a previous request left behind in that process."""
    with fastpath_and_basic_auth(stack.a) as pair:
        yield pair


def post(server, path, auth, **body):
    return requests.post(server.url + API + path, json=body, auth=auth, timeout=30)


def user(server, name) -> tuple[str, str]:
    creds = (f"{name}-{uuid.uuid4().hex[:6]}", f"{name}-password-{uuid.uuid4().hex[:8]}")
    r = post(server, "/users/create", (ADMIN, ADMIN_PASSWORD), username=creds[0], password=creds[1])
    assert r.status_code == 200, r.text
    return creds


def test_each_server_runs_the_app_it_says(both):
    fast, stock = both
    assert "auth on (basic-auth-fastpath;" in fast.output()
    assert "run permission checks read only the run's experiment" in fast.output()
    assert "auth on (basic-auth;" in stock.output()
    assert "mlflow.server.auth.fastpath" not in stock.output()
    workers = {tuple(c) for c in stock.cmdlines().values()} | {tuple(c) for c in fast.cmdlines().values()}
    assert any("mlflow_auth_fastpath:create_app" in c for c in workers)
    assert any("mlflow.server.auth:create_app" in c for c in workers)


def test_run_permission_decisions_match_mlflows_basic_auth(both):
    fast, stock = both
    alice, bob, carol = user(fast, "alice"), user(fast, "bob"), user(fast, "carol")
    exp = post(fast, "/experiments/create", alice, name=f"fastpath-{uuid.uuid4().hex[:8]}").json()["experiment_id"]
    run = post(stock, "/runs/create", alice, experiment_id=exp).json()["run"]["info"]["run_id"]
    missing = uuid.uuid4().hex
    metric = {"key": "m", "value": 1.0, "timestamp": 1, "step": 0}

    def decisions() -> dict[str, list[int]]:
        calls = {
            "alice log-metric": lambda s: post(s, "/runs/log-metric", alice, run_id=run, **metric),
            "alice set-tag": lambda s: post(s, "/runs/set-tag", alice, run_id=run, key="k", value="v"),
            "bob get run": lambda s: requests.get(s.url + API + "/runs/get", params={"run_id": run}, auth=bob,
                                                  timeout=30),
            "bob log-metric": lambda s: post(s, "/runs/log-metric", bob, run_id=run, **metric),
            "bob log-batch": lambda s: post(s, "/runs/log-batch", bob, run_id=run, metrics=[metric]),
            "bob update run": lambda s: post(s, "/runs/update", bob, run_id=run, status="RUNNING"),
            "bob log-metric, no such run": lambda s: post(s, "/runs/log-metric", bob, run_id=missing, **metric),
            "carol log-metric": lambda s: post(s, "/runs/log-metric", carol, run_id=run, **metric),
        }
        return {what: [call(s).status_code for s in (fast, stock)] for what, call in calls.items()}

    def expect(changed: dict[str, int] | None = None) -> None:
        want = {"alice log-metric": 200, "alice set-tag": 200, "bob get run": 200, "bob log-metric": 403,
                "bob log-batch": 403, "bob update run": 403, "bob log-metric, no such run": 403,
                "carol log-metric": 403, **(changed or {})}
        got = decisions()
        assert got == {k: [v, v] for k, v in want.items()}, got  # [fast path, MLflow's basic-auth]

    admin = (ADMIN, ADMIN_PASSWORD)
    expect()
    # a grant applies to the next request on both servers
    grant = "/api/3.0/mlflow/users/permissions"
    r = requests.post(fast.url + grant + "/grant", auth=admin, timeout=30, json={
        "username": bob[0], "resource_type": "experiment", "resource_id": exp, "permission": "EDIT"})
    assert r.status_code == 200, r.text
    expect({"bob log-metric": 200, "bob log-batch": 200, "bob update run": 200})
    # and so does its removal: nothing about bob was kept from the previous requests
    r = requests.post(stock.url + grant + "/revoke", auth=admin, timeout=30, json={
        "username": bob[0], "resource_type": "experiment", "resource_id": exp})
    assert r.status_code == 200, r.text
    expect()
    # an admin is not checked; taking the flag away applies to the next request
    r = requests.patch(fast.url + API + "/users/update-admin", json={"username": carol[0], "is_admin": True},
                       auth=admin, timeout=30)
    assert r.status_code == 200, r.text
    expect({"carol log-metric": 200})
    r = requests.patch(stock.url + API + "/users/update-admin", json={"username": carol[0], "is_admin": False},
                       auth=admin, timeout=30)
    assert r.status_code == 200, r.text
    expect()
    # a deleted run still belongs to its experiment: the owner may restore it, bob may not
    assert post(fast, "/runs/delete", alice, run_id=run).status_code == 200
    assert [post(s, "/runs/restore", bob, run_id=run).status_code for s in (fast, stock)] == [403, 403]
    assert post(stock, "/runs/restore", alice, run_id=run).status_code == 200


def test_unverified_mlflow_version_runs_mlflows_app_unchanged(monkeypatch):
    """In-process: on an MLflow version the fast path was not checked against, install() changes
    nothing and says so (the image pins the verified version; this guards an upgrade)."""
    import importlib
    import logging

    from tests.support.server import ENTRYPOINT

    monkeypatch.syspath_prepend(str(ENTRYPOINT.parent / "plugins"))
    fastpath = importlib.import_module("mlflow_auth_fastpath")
    import mlflow

    class FakeAuth:  # stands in for mlflow.server.auth: install() must not change it
        _mlflow_auth_fastpath = False

    before = dict(vars(FakeAuth))

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("mlflow.server.auth.fastpath")
    log.addHandler(handler)
    try:
        monkeypatch.setattr(mlflow, "__version__", "99.0.0")
        assert fastpath.install(FakeAuth) is False
    finally:
        log.removeHandler(handler)
    assert dict(vars(FakeAuth)) == before
    assert [r.getMessage() for r in records if "not one of the verified versions" in r.getMessage()], records


def test_the_pinned_mlflow_is_the_verified_one():
    """image/constraints.txt pins the MLflow the fast path was checked against (an upgrade must
    re-read mlflow/server/auth and update VERIFIED_MLFLOW_VERSIONS, or the image silently loses it)."""
    import re

    from tests.support.server import ENTRYPOINT

    pins = (ENTRYPOINT.parent / "constraints.txt").read_text()
    mlflow_pin = re.search(r"^mlflow==(\S+)", pins, re.M).group(1)
    source = (ENTRYPOINT.parent / "plugins" / "mlflow_auth_fastpath" / "__init__.py").read_text()
    verified = re.search(r"VERIFIED_MLFLOW_VERSIONS = frozenset\(\{(.*?)\}\)", source).group(1)
    assert f'"{mlflow_pin}"' in verified
