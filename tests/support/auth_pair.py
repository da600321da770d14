"""The auth fast path next to MLflow's own basic-auth app, on the same databases: what the tests that
compare the two (tests/server/test_auth_fastpath.py, test_search_fastpath.py) and the credential
cache tests (test_credential_cache.py) start.

A second server on a running server's databases takes that server's environment without what is
its own (home, state and spool directories, port, host): :func:`shared_env`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.support.server import Server

PER_SERVER = {"HOME", "MLFLOW_STATE_DIR", "MLFLOW_SPOOL_DIR", "MLFLOW_PORT", "MLFLOW_HOST"}


def shared_env(server: Server) -> dict[str, str]:
    """``server``'s environment without its per-server variables (:data:`PER_SERVER`)."""
    return {k: v for k, v in server.env.items() if k not in PER_SERVER}


@contextlib.contextmanager
def fastpath_and_basic_auth(server: Server) -> Iterator[tuple[Server, Server]]:
    """(fast path server, MLflow's basic-auth server: MLFLOW_AUTH_FASTPATH=false) on ``server``'s
    databases, one worker each; both stopped on exit."""
    env = shared_env(server) | {"MLFLOW_WORKERS": "1"}
    fast, stock = Server(env), Server({**env, "MLFLOW_AUTH_FASTPATH": "false"})
    try:
        fast.start()
        stock.start()
        yield fast, stock
    finally:
        fast.close()
        stock.close()
