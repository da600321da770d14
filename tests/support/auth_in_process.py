"""A script run against MLflow's basic-auth app in a Python process of its own (MLflow's auth
module reads its configuration at import), shared by tests/server/test_credential_cache.py and
tests/server/test_auth_once.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.server.conftest import ADMIN, ADMIN_PASSWORD, SECRET_KEY
from tests.support.server import ENTRYPOINT, PYTHON


def run_in_process(script: str, work: Path, cache_ttl: int, *args: str, extra_env: dict | None = None) -> dict:
    """``script`` in a Python process of its own in the directory ``work``: MLflow's basic-auth
    configuration there (SQLite stores, ``auth_cache_ttl_seconds`` = ``cache_ttl``), the fast path
    importable, ``extra_env`` added to its environment; what it printed after ``RESULT ``, as JSON."""
    ini = work / "basic_auth.ini"
    ini.write_text(textwrap.dedent(f"""
        [mlflow]
        default_permission = READ
        database_uri = sqlite:///{work}/auth.db
        admin_username = {ADMIN}
        admin_password = {ADMIN_PASSWORD}
        authorization_function = mlflow.server.auth:authenticate_request_basic_auth
        auth_cache_ttl_seconds = {cache_ttl}
    """))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work),
           "PYTHONPATH": str(ENTRYPOINT.parent / "plugins"), "MLFLOW_AUTH_CONFIG_PATH": str(ini),
           "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY, "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{work}/mlflow.db",
           "_MLFLOW_SERVER_ARTIFACT_ROOT": str(work / "artifacts"), **(extra_env or {})}
    p = subprocess.run([PYTHON or sys.executable, "-c", script, *args], env=env, cwd=work, capture_output=True,
                       text=True, timeout=300)
    line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert p.returncode == 0 and line, p.stdout[-3000:] + p.stderr[-3000:]
    return json.loads(line[len("RESULT "):])
