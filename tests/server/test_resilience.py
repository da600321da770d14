"""The database restarts under a running server: nothing lost, no server restart needed."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, DB_PASSWORD, SECRET_KEY
from tests.support.dbadmin import prepare_databases
from tests.support.server import client_env
from tests.support.server import Server, database_env


@pytest.fixture
def own_database(database):
    """A database server of the same engine for this test alone (it gets restarted)."""
    peer = type(database)()
    peer.start()
    try:
        prepare_databases(peer, "mlflow_app", DB_PASSWORD)  # the admin step, as a deployment runs it
        yield peer
    finally:
        peer.close()


def test_database_restart_loses_nothing(own_database, tmp_path):
    env = {**database_env(own_database, "mlflow_app", DB_PASSWORD), "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts")}
    with Server(env) as srv, client_env(srv.client_env(ADMIN, ADMIN_PASSWORD)):
        client = MlflowClient(srv.url)
        run_id = client.create_run(client.create_experiment("restart")).info.run_id
        # several requests so that every worker holds pooled connections that the restart kills
        for step in range(20):
            client.log_metric(run_id, "m", float(step), step=step)

        own_database.restart()
        t0 = time.monotonic()
        for step in range(20, 40):
            client.log_metric(run_id, "m", float(step), step=step)
        first_after = time.monotonic() - t0

        steps = sorted(m.step for m in client.get_metric_history(run_id, "m"))
        assert steps == list(range(40)), steps
        assert client.get_run(run_id).data.metrics["m"] == 39.0
        assert srv.proc.poll() is None  # the same process, not a restart
        print(f"20 metrics after the database restart took {first_after:.2f} s")
