"""Basic auth on every route, /health open, users shared by two server processes ("tasks")."""

from __future__ import annotations

import re
import uuid

import pytest
import requests

from tests.server.conftest import ADMIN, ADMIN_PASSWORD

# Routes MLflow deliberately leaves open with basic auth on (the client probes them before it
# has credentials); any other open route is a failure.
OPEN_BY_DESIGN = {"/api/3.0/mlflow/server-info", "/ajax-api/3.0/mlflow/server-info"}


def all_routes() -> list[tuple[str, str]]:
    """(method, path) of every REST route of the tracking server and of the auth app."""
    from mlflow.server.auth import routes as auth_routes
    from mlflow.server.handlers import get_endpoints

    found = {(m, p) for p, _, methods in get_endpoints() for m in methods}
    for name in dir(auth_routes):
        value = getattr(auth_routes, name)
        if name.isupper() and isinstance(value, str) and value.startswith(("/api/", "/ajax-api/")):
            found.add(("GET", value))
            found.add(("POST", value))
    found.add(("GET", "/version"))
    return sorted(found)


def concrete(path: str) -> str:
    return re.sub(r"<[^>]+>", "x", path)


def call(session, url, method, path, auth):
    return session.request(method, url + concrete(path), auth=auth, json=None if method == "GET" else {},
                           timeout=30).status_code


@pytest.fixture(scope="module")
def routes():
    r = all_routes()
    assert len(r) > 300, "route enumeration broke"
    return r


def test_every_route_needs_credentials(stack, routes):
    s = requests.Session()
    open_routes = []
    for method, path in routes:
        anonymous = call(s, stack.a.url, method, path, None)
        unknown_user = call(s, stack.a.url, method, path, ("nobody-" + uuid.uuid4().hex[:6], "whatever-password"))
        if anonymous != 401 or unknown_user != 401:
            open_routes.append((method, path, anonymous, unknown_user))
    assert {p for _, p, a, u in open_routes if a == 200 and u == 200} == OPEN_BY_DESIGN, open_routes
    assert [r for r in open_routes if r[1] not in OPEN_BY_DESIGN] == []


def test_wrong_password_is_refused_on_every_route_family(stack, routes):
    """A wrong password costs one scrypt hash (~75 ms here): one route per path family."""
    s = requests.Session()
    families = {}
    for method, path in routes:
        families.setdefault("/".join(concrete(path).split("/")[:5]), (method, path))
    assert len(families) > 30
    accepted = [(m, p, code) for m, p in families.values()
                if p not in OPEN_BY_DESIGN and (code := call(s, stack.a.url, m, p, (ADMIN, ADMIN_PASSWORD + "x"))) != 401]
    assert accepted == []


RIGHT = [
    ("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default", None),
    ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 5}),
    ("POST", "/api/2.0/mlflow/runs/search", {"experiment_ids": ["0"]}),
    ("GET", "/api/2.0/mlflow/registered-models/search", None),
    ("GET", "/api/2.0/mlflow/model-versions/search", None),
    ("POST", "/api/2.0/mlflow/logged-models/search", {"experiment_ids": ["0"]}),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts", None),
    ("GET", "/ajax-api/2.0/mlflow/experiments/search?max_results=5", None),
    ("GET", f"/api/2.0/mlflow/users/get?username={ADMIN}", None),
    ("GET", "/api/2.0/mlflow/users/current", None),
    ("GET", "/version", None),
    ("GET", "/", None),
]


@pytest.mark.parametrize("method,path,body", RIGHT, ids=[f"{m} {p.split('?')[0]}" for m, p, _ in RIGHT])
def test_right_credentials_succeed(stack, method, path, body):
    s = requests.Session()
    url = stack.a.url + path
    assert s.request(method, url, json=body, timeout=30).status_code == 401
    assert s.request(method, url, json=body, auth=(ADMIN, "wrong-" + ADMIN_PASSWORD), timeout=30).status_code == 401
    r = s.request(method, url, json=body, auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
    assert r.status_code == 200, r.text[:300]


def test_health_is_open_on_both_tasks(stack):
    for server in (stack.a, stack.b):
        r = requests.get(server.url + "/health", timeout=5)
        assert (r.status_code, r.text.strip()) == (200, "OK")


def test_user_created_on_one_task_logs_in_on_the_other(stack):
    user, password = f"alice-{uuid.uuid4().hex[:6]}", "alice-password-" + uuid.uuid4().hex[:8]
    r = requests.post(stack.a.url + "/api/2.0/mlflow/users/create", json={"username": user, "password": password},
                      auth=(ADMIN, ADMIN_PASSWORD), timeout=30)
    assert r.status_code == 200, r.text
    search = stack.b.url + "/api/2.0/mlflow/experiments/search"
    assert requests.post(search, json={"max_results": 1}, auth=(user, password), timeout=30).status_code == 200
    assert requests.post(search, json={"max_results": 1}, auth=(user, password + "x"), timeout=30).status_code == 401
    # she owns what she creates on task B; task A enforces that from the shared store: another
    # user (default permission READ) may read her experiment there but not change it
    r = requests.post(stack.b.url + "/api/2.0/mlflow/experiments/create", json={"name": f"exp-{user}"},
                      auth=(user, password), timeout=30)
    assert r.status_code == 200, r.text
    exp_id = r.json()["experiment_id"]
    bob, bob_pw = "bob-" + user, "bob-password-" + uuid.uuid4().hex[:8]
    assert requests.post(stack.b.url + "/api/2.0/mlflow/users/create", json={"username": bob, "password": bob_pw},
                         auth=(ADMIN, ADMIN_PASSWORD), timeout=30).status_code == 200
    get = stack.a.url + "/api/2.0/mlflow/experiments/get"
    rename = stack.a.url + "/api/2.0/mlflow/experiments/update"
    assert requests.get(get, params={"experiment_id": exp_id}, auth=(bob, bob_pw), timeout=30).status_code == 200
    assert requests.post(rename, json={"experiment_id": exp_id, "new_name": "by-bob"}, auth=(bob, bob_pw),
                         timeout=30).status_code == 403
    assert requests.post(rename, json={"experiment_id": exp_id, "new_name": f"exp-{user}-renamed"},
                         auth=(user, password), timeout=30).status_code == 200
    # a non-admin may not create users, on either task
    for server in (stack.a, stack.b):
        r = requests.post(server.url + "/api/2.0/mlflow/users/create", json={"username": "mallory-" + user,
                          "password": "mallory-password-1"}, auth=(user, password), timeout=30)
        assert r.status_code == 403, r.text
