"""Pools that fit: one server task never opens more database connections than components/sizing.py
claims for it, and the configured overflow is the effective one (0 means 0).

MLflow 3.17.2, ``mlflow/store/db/utils.py`` ``create_sqlalchemy_engine``: pool size and overflow
are passed to SQLAlchemy only when truthy (``if pool_max_overflow:``), so
``MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=0`` means SQLAlchemy's default overflow of 10 (SQLAlchemy
docs, "Connection Pooling", QueuePool ``max_overflow=10``). Each uvicorn worker opens one engine per
store: tracking, model registry and basic-auth. The count is what the database sees: the server
user's rows in MariaDB's ``information_schema.PROCESSLIST`` / PostgreSQL's ``pg_stat_activity``,
sampled every 20 ms while 64 clients log metrics at once.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import threading
import time
import uuid

import pytest
import requests

from components.sizing import pool_sizing
from tests.server.conftest import ADMIN, ADMIN_PASSWORD, DB_PASSWORD
from tests.server.test_bad_environment import fails_with
from tests.support.db_connections import ConnectionSampler
from tests.support.peers import free_port
from tests.support.server import PYTHON, ROOT, Server

API = "/api/2.0/mlflow"
CLIENTS = 64
CALLS_PER_CLIENT = 12
LOAD_DEADLINE = 120  # seconds: the load stops here whatever is left
PLUGINS = ROOT / "image" / "plugins"


def _post(session: requests.Session, url: str, path: str, **body) -> requests.Response:
    return session.post(url + API + path, json=body, timeout=60)


def load(url: str, clients: int = CLIENTS, calls: int = CALLS_PER_CLIENT) -> dict:
    """`clients` threads, each with its own keep-alive session as a regular user (so every call
    runs the permission check against the auth database), logging `calls` metrics to a run of
    its own: {"ok": n, "errors": [first few], "seconds": wall}."""
    admin = requests.Session()
    admin.auth = (ADMIN, ADMIN_PASSWORD)
    user = (f"load-{uuid.uuid4().hex[:6]}", f"load-password-{uuid.uuid4().hex}")
    r = _post(admin, url, "/users/create", username=user[0], password=user[1])
    assert r.status_code == 200, r.text
    owner = requests.Session()
    owner.auth = user
    r = _post(owner, url, "/experiments/create", name=f"load-{uuid.uuid4().hex[:8]}")
    assert r.status_code == 200, r.text
    exp = r.json()["experiment_id"]
    runs = []
    for _ in range(clients):
        r = _post(owner, url, "/runs/create", experiment_id=exp, start_time=int(time.time() * 1000))
        assert r.status_code == 200, r.text
        runs.append(r.json()["run"]["info"]["run_id"])

    deadline = time.monotonic() + LOAD_DEADLINE
    errors: list[str] = []
    ok = 0
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(run_id: str) -> None:
        nonlocal ok
        s = requests.Session()
        s.auth = user
        start.wait(timeout=30)
        for step in range(calls):
            if time.monotonic() > deadline:
                return
            try:
                resp = _post(s, url, "/runs/log-metric", run_id=run_id, key="m", value=float(step),
                             timestamp=int(time.time() * 1000), step=step)
                good, what = resp.status_code == 200, f"HTTP {resp.status_code}: {resp.text[:200]}"
            except requests.RequestException as e:
                good, what = False, f"{type(e).__name__}: {e}"
            with lock:
                ok += good
                if not good and len(errors) < 5:
                    errors.append(what)

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client, run_id) for run_id in runs]:
            f.result(timeout=LOAD_DEADLINE + 60)
    return {"ok": ok, "errors": errors, "seconds": time.monotonic() - t0}


# (max ACU, max tasks) of the stack the pool is sized for, per engine: roomy gives the image's
# default pool (10 + 0); tight a pool of 2 (MySQL) or 3 (PostgreSQL), where an overflow that MLflow
# ignores (10 per engine) cannot hide in the budget
SIZED_FOR = {"roomy": {"mysql": (16, 1), "postgresql": (16, 1)}, "tight": {"mysql": (1, 2), "postgresql": (1, 6)}}


@pytest.mark.parametrize("sized_for", list(SIZED_FOR))
@pytest.mark.parametrize("app", ["fastpath", "basic-auth"])
def test_one_task_under_64_clients_stays_within_the_sizing(database, fresh, tmp_path, app, sized_for):
    """The peak of the server user's connections during 64 concurrent clients is at most what
    components/sizing.py budgets for one task (2 workers, the pool it computes for that stack)."""
    max_acu, max_tasks = SIZED_FOR[sized_for][database.engine]
    sizing = pool_sizing(engine=database.engine, min_acu=0.5, max_acu=max_acu, max_tasks=max_tasks, workers=2)
    f = fresh()  # databases, schemas and application user made by the admin step
    env = f.env(MLFLOW_WORKERS="2", MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=str(sizing.pool_size),
                MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=str(sizing.max_overflow),
                MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"),
                MLFLOW_AUTH_FASTPATH="true" if app == "fastpath" else "false")
    with Server(env) as srv, ConnectionSampler(database, f.user) as sampler:
        result = load(srv.url)
    assert not sampler.errors, sampler.errors
    assert result["ok"] == CLIENTS * CALLS_PER_CLIENT, result
    print(f"{database.name} {app} {sized_for}: {result['ok']} calls in {result['seconds']:.1f} s; peak "
          f"{sampler.peak} connections (sizing claims {sizing.task_connections} for one task: pool "
          f"{sizing.pool_size} + overflow {sizing.max_overflow})")
    assert sampler.peak <= sizing.task_connections, (
        f"one task opened {sampler.peak} connections under {CLIENTS} clients; components/sizing.py budgets "
        f"{sizing.task_connections} (pool {sizing.pool_size} + overflow {sizing.max_overflow})")


@pytest.mark.parametrize("size,overflow", [(10, 0), (5, 5), (3, 0)])
def test_mlflow_engines_get_the_configured_pool_in_a_server_process(size, overflow):
    """What MLflow's create_sqlalchemy_engine builds in a process with the server's PYTHONPATH
    (the entrypoint puts image/plugins on it): the configured size and overflow, 0 included.
    SQLAlchemy's QueuePool defaults (size 5, overflow 10) apply when MLflow drops a value."""
    code = ("import mlflow.store.db.utils as u\n"
            "e = u.create_sqlalchemy_engine('mysql+pymysql://u:p@127.0.0.1:9/db')\n"
            "print(e.pool.size(), e.pool._max_overflow)\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PLUGINS), "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(size),
           "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(overflow)}
    p = subprocess.run([PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = tuple(int(x) for x in p.stdout.split()[-2:])
    assert got == (size, overflow), f"MLflow's engine has pool {got[0]} + overflow {got[1]}, configured {size} + {overflow}"


@pytest.mark.parametrize("name,value", [
    ("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "-1"), ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "0"),
    ("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "ten"), ("MLFLOW_DB_IDLE_RELEASE_SECONDS", "5m"),
    ("MLFLOW_DB_RECONNECT_SECONDS", "601"),
])
def test_a_bad_pool_setting_is_one_line_before_any_wait(name, value):
    """Checked before the database wait: a database that is not there (MLFLOW_DB_WAIT_SECONDS=60)
    must not delay the answer, and a pool size of 0 (SQLAlchemy: no limit) is refused."""
    env = {"MLFLOW_DB_ENGINE": "mysql", "MLFLOW_DB_HOST": "127.0.0.1", "MLFLOW_DB_PORT": str(free_port()),
           "MLFLOW_DB_USER": "mlflow_app", "MLFLOW_DB_PASSWORD": DB_PASSWORD, "MLFLOW_DB_WAIT_SECONDS": "60",
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32, "MLFLOW_ARTIFACTS_DESTINATION": "/nonexistent", name: value}
    fails_with(env, name, timeout=30)
