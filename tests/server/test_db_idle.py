"""Dev's database pauses: an idle server lets go of every database connection, and a request that
meets a database that is down (paused, resuming, restarting) waits for it instead of failing.

Amazon Aurora User Guide, "Scaling to Zero ACUs with automatic pause and resume for Aurora
Serverless v2": an instance pauses only after a period with no user connections, and resumes when
a connection request arrives; the resume takes about 15 seconds (longer after a long pause). A
pooled connection that stays open therefore keeps the database (and its bill) running for good,
and the first request after a pause meets a database that is not there yet. The local stand-in
is as strict: the server user's connections are counted by the database itself
(information_schema.PROCESSLIST / pg_stat_activity), and the database process is really stopped
and started again 20 s later on the same port and data directory.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, DB_PASSWORD, SECRET_KEY
from tests.server.test_db_pools import load
from tests.support.db_connections import open_connections, wait_for_count
from tests.support.dbadmin import prepare_databases
from tests.support.server import Server, database_env

API = "/api/2.0/mlflow"
IDLE = 5  # MLFLOW_DB_IDLE_RELEASE_SECONDS in these tests (the image's default is 300)
RELEASE_BOUND = IDLE + 25  # seconds the test waits for the count to reach 0 before it fails
DOWN_FOR = 20  # seconds the database stays stopped under a waiting request


def admin_session() -> requests.Session:
    s = requests.Session()
    s.auth = (ADMIN, ADMIN_PASSWORD)
    return s


def new_run(session: requests.Session, url: str) -> str:
    r = session.post(f"{url}{API}/experiments/create", json={"name": f"idle-{time.time_ns()}"}, timeout=60)
    assert r.status_code == 200, r.text
    r = session.post(f"{url}{API}/runs/create", json={"experiment_id": r.json()["experiment_id"]}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["run"]["info"]["run_id"]


def log_metric(session: requests.Session, url: str, run_id: str, step: int, timeout: float = 60) -> requests.Response:
    return session.post(f"{url}{API}/runs/log-metric", timeout=timeout, json={
        "run_id": run_id, "key": "m", "value": float(step), "timestamp": int(time.time() * 1000), "step": step})


@pytest.mark.parametrize("app", ["fastpath", "basic-auth"])
def test_an_idle_server_releases_every_connection_and_reconnects(database, fresh, tmp_path, app):
    f = fresh()
    env = f.env(MLFLOW_WORKERS="2", MLFLOW_DB_IDLE_RELEASE_SECONDS=str(IDLE),
                MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path / "artifacts"),
                MLFLOW_AUTH_FASTPATH="true" if app == "fastpath" else "false")
    with Server(env) as srv:
        busy = load(srv.url, clients=16, calls=5)  # every worker and every store opens connections
        assert busy["ok"] == 16 * 5, busy
        held = open_connections(database, f.user)
        count, waited = wait_for_count(database, f.user, lambda c: c == 0, timeout=RELEASE_BOUND)
        print(f"{database.name} {app}: {held} connections right after the load, {count} after {waited:.1f} s idle")
        assert count == 0, (f"the idle server still holds {count} connections to the database {waited:.0f} s after "
                            f"its last request (MLFLOW_DB_IDLE_RELEASE_SECONDS={IDLE})")

        s = admin_session()
        run_id = new_run(s, srv.url)  # the next requests reconnect on their own
        assert log_metric(s, srv.url, run_id, 0).status_code == 200
        assert open_connections(database, f.user) > 0
        assert srv.proc.poll() is None


@pytest.fixture
def own_database(database):
    """A database server of the test's engine for this test alone: it is stopped and started."""
    peer = type(database)()
    peer.start()
    try:
        prepare_databases(peer, "mlflow_app", DB_PASSWORD)  # the admin step, as a deployment runs it
        yield peer
    finally:
        peer.close()


def test_a_request_waits_for_a_database_that_comes_back(own_database, tmp_path):
    env = {**database_env(own_database, "mlflow_app", DB_PASSWORD), "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
           "MLFLOW_WORKERS": "1"}
    with Server(env) as srv:
        s = admin_session()
        run_id = new_run(s, srv.url)
        assert log_metric(s, srv.url, run_id, 0).status_code == 200  # the pool holds live connections

        own_database.stop()
        answer: dict = {}

        def request() -> None:
            t0 = time.monotonic()
            try:
                r = log_metric(admin_session(), srv.url, run_id, 1, timeout=120)
                answer.update(status=r.status_code, text=r.text[:300])
            except requests.RequestException as e:
                answer.update(status=None, text=f"{type(e).__name__}: {e}")
            answer["seconds"] = time.monotonic() - t0

        waiting = threading.Thread(target=request, daemon=True)
        waiting.start()
        waiting.join(timeout=DOWN_FOR)
        answered_while_down = dict(answer)
        own_database.start()
        waiting.join(timeout=120)
        assert not waiting.is_alive(), "the request got no answer within 120 s of the database's return"
        print(f"{own_database.name}: the request sent while the database was down answered "
              f"{answer['status']} after {answer['seconds']:.1f} s")
        assert not answered_while_down, (
            f"the request failed while the database was down instead of waiting for it: HTTP "
            f"{answered_while_down.get('status')} after {answered_while_down.get('seconds', 0):.1f} s: "
            f"{answered_while_down.get('text')}")
        assert answer["status"] == 200, answer
        r = s.get(f"{srv.url}{API}/metrics/get-history", params={"run_id": run_id, "metric_key": "m"}, timeout=60)
        assert sorted(m["step"] for m in r.json()["metrics"]) == [0, 1]
        assert srv.proc.poll() is None
