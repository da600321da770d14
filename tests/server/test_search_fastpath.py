"""search_runs through the auth fast path (image/plugins/mlflow_auth_fastpath/search.py) answers
byte for byte what MLflow's own basic-auth app answers: the same runs, the same page tokens, the
same model links withheld, for users whose grants differ per experiment.

MLflow 3.17.2's basic-auth app (mlflow/server/auth/__init__.py) narrows a search to the
experiments the caller may read before the query (``filter_experiment_ids``, called from
``search_runs_impl`` in mlflow/server/handlers.py) and, after it, withholds run -> logged-model
links from a caller denied logged models (``redact_search_runs_model_links``). Both servers run
on the same databases; every page of every search is compared as the bytes the server sent."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from tests.server.conftest import ADMIN, ADMIN_PASSWORD
from tests.support.auth_pair import fastpath_and_basic_auth

API = "/api/2.0/mlflow"
GRANT = "/api/3.0/mlflow/users/permissions/grant"


@pytest.fixture(scope="module")
def both(stack):
    """(fast path server, MLflow's basic-auth server) on the stack's databases, one worker each."""
    with fastpath_and_basic_auth(stack.a) as pair:
        yield pair


def post(server, path, auth, **body):
    r = requests.post(server.url + path, json=body, auth=auth, timeout=60)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return r.json()


def user(server, name) -> tuple[str, str]:
    creds = (f"{name}-{uuid.uuid4().hex[:6]}", f"{name}-password-{uuid.uuid4().hex[:8]}")
    post(server, API + "/users/create", (ADMIN, ADMIN_PASSWORD), username=creds[0], password=creds[1])
    return creds


def grant(server, who, resource_type, resource_id, permission) -> None:
    post(server, GRANT, (ADMIN, ADMIN_PASSWORD), username=who[0], resource_type=resource_type,
         resource_id=resource_id, permission=permission)


def pages(server, prefix, auth, body) -> list[tuple[int, bytes]]:
    """Every page of one search, following this server's own next_page_token: (status, body bytes)."""
    out, token = [], None
    for _ in range(50):
        r = requests.post(server.url + prefix + "/runs/search", auth=auth, timeout=60,
                          json={**body, **({"page_token": token} if token else {})})
        out.append((r.status_code, r.content))
        token = r.json().get("next_page_token") if r.status_code == 200 else None
        if not token:
            return out
    raise AssertionError(f"more than 50 pages: {body}")


def runs_of(result: list[tuple[int, bytes]]) -> list[dict]:
    return [run for status, body in result if status == 200 for run in json.loads(body).get("runs", [])]


@pytest.fixture(scope="module")
def world(both):
    """Three experiments owned by alice. bob: READ by the default permission on the first, an
    explicit READ grant on the second, DENY (no permissions) on the third. carol: the default
    permission everywhere, but DENY on logged models. Runs with metrics, params, tags, a deleted
    run, and runs whose outputs link a logged model."""
    fast, stock = both
    alice, bob, carol = user(fast, "alice"), user(stock, "bob"), user(fast, "carol")
    tag = uuid.uuid4().hex[:8]
    exps = [post(fast, API + "/experiments/create", alice, name=f"search-{tag}-{i}")["experiment_id"]
            for i in range(3)]
    grant(stock, bob, "experiment", exps[1], "READ")
    grant(fast, bob, "experiment", exps[2], "DENY")
    grant(stock, carol, "logged_model", "*", "DENY")
    for e, exp in enumerate(exps):
        for i in range(6):
            run = post(fast if i % 2 else stock, API + "/runs/create", alice, experiment_id=exp,
                       run_name=f"r{e}-{i}", start_time=1_700_000_000_000 + 1000 * (6 * e + i),
                       tags=[{"key": "team", "value": "ab"[i % 2]}])["run"]["info"]["run_id"]
            post(fast, API + "/runs/log-batch", alice, run_id=run,
                 metrics=[{"key": "loss", "value": ((7 * i + 3 * e) % 10) / 10, "timestamp": 1, "step": 0}],
                 params=[{"key": "p", "value": str(i % 3)}])
            if i in (1, 4):
                model = post(stock, API + "/logged-models", alice, experiment_id=exp, name=f"m{e}{i}",
                             source_run_id=run)["model"]["info"]["model_id"]
                post(fast, API + "/runs/outputs", alice, run_id=run, models=[{"model_id": model, "step": 1}])
            if i == 5:
                post(stock, API + "/runs/delete", alice, run_id=run)
    return {"alice": alice, "bob": bob, "carol": carol, "admin": (ADMIN, ADMIN_PASSWORD), "exps": exps}


SEARCHES = {
    "all, 2 per page": {"max_results": 2},
    "order by a metric": {"max_results": 4, "order_by": ["metrics.loss ASC"]},
    "order by param, start time": {"max_results": 3, "order_by": ["params.p DESC", "attributes.start_time ASC"]},
    "metric filter": {"max_results": 5, "filter": "metrics.loss < 0.5"},
    "tag and param filter": {"max_results": 2, "filter": "tags.team = 'b' and params.p != '0'",
                             "order_by": ["attributes.run_name DESC"]},
    "deleted too": {"max_results": 4, "run_view_type": "ALL"},
    "deleted only": {"run_view_type": "DELETED_ONLY"},
    "no match": {"filter": "metrics.loss > 5"},
}


@pytest.mark.parametrize("prefix", ["/api/2.0/mlflow", "/ajax-api/2.0/mlflow"])
@pytest.mark.parametrize("who", ["alice", "bob", "carol", "admin"])
def test_every_page_is_mlflows(both, world, who, prefix):
    fast, stock = both
    auth = world[who]
    for what, search in SEARCHES.items():
        for exps in (world["exps"], world["exps"][2:]):
            body = {"experiment_ids": exps, **search}
            got, want = pages(fast, prefix, auth, body), pages(stock, prefix, auth, body)
            assert got == want, (who, what, exps)


def test_the_searches_see_what_the_grants_say(both, world):
    """The comparison above is not vacuous: the grants change the answers, on both servers."""
    fast, stock = both
    exps = world["exps"]
    body = {"experiment_ids": exps, "max_results": 2, "run_view_type": "ALL"}
    for server in (fast, stock):
        alice = runs_of(pages(server, API, world["alice"], body))
        bob = runs_of(pages(server, API, world["bob"], body))
        carol = runs_of(pages(server, API, world["carol"], body))
        assert len(alice) == 18 and len(pages(server, API, world["alice"], body)) == 9
        assert {r["info"]["experiment_id"] for r in bob} == set(exps[:2]) and len(bob) == 12
        assert pages(server, API, world["bob"], {**body, "experiment_ids": exps[2:]}) == [(200, b"{}")]
        # logged-model links: kept for alice, withheld from carol (denied logged models)
        assert sum(bool(r.get("outputs", {}).get("model_outputs")) for r in alice) == 6
        assert [r["info"]["run_id"] for r in carol] == [r["info"]["run_id"] for r in alice]
        assert not any(r.get("outputs", {}).get("model_outputs") for r in carol)


def test_pages_without_links_are_recognised_in_every_spelling():
    """In-process: the pre-check sends a page to MLflow's filter whenever a link could be in it,
    including a key spelled with JSON escapes (ParseDict accepts either field-name spelling)."""
    import importlib
    import sys

    from tests.support.server import ENTRYPOINT

    sys.path.insert(0, str(ENTRYPOINT.parent / "plugins"))
    try:
        search = importlib.import_module("mlflow_auth_fastpath.search")
    finally:
        sys.path.remove(str(ENTRYPOINT.parent / "plugins"))
    links = [b'{"runs": [{"outputs": {"model_outputs": [{"model_id": "m-1"}]}}]}',
             b'{"runs": [{"outputs": {"modelOutputs": [{"modelId": "m-1"}]}}]}',
             b'{"runs": [{"inputs": {"model_inputs": [{"model_id": "m-1"}]}}]}',
             b'{"runs": [{"inputs": {"modelInputs": [{"model_id": "m-1"}]}}]}',
             b'{"runs": [{"data": {"metrics": [{"key": "k", "model_id": "m-1"}]}}]}',
             b'{"runs": [{"data": {"metrics": [{"key": "k", "modelId": "m-1"}]}}]}',
             b'{"runs": [{"outputs": {"model\\u005foutputs": [{"model\\u005Fid": "m-1"}]}}]}',
             b'{"runs": [{"outputs": {"\\u006dodelOutputs": [{"modelId": "m-1"}]}}]}']
    for body in links:
        assert json.loads(body) and search.may_hold_model_links(body), body
    plain = [b'{}', b'{"runs": [{"info": {"run_id": "r"}, "data": {"params": [{"key": "model", "value": "id"}]}}]}',
             '{"runs": [{"data": {"tags": [{"key": "note", "value": "caf\\u00e9 \\u4e2d"}]}}]}'.encode()]
    for body in plain:
        assert json.loads(body) is not None and not search.may_hold_model_links(body), body
