"""Where the server CPU of one log_metric call goes: stock (no auth) against the project's auth fast
path with a regular user (issue 14 item 4; docs/performance.md, "Where the authenticated call's CPU goes").

    .venv/bin/python -m bench.profile_auth [--calls 300] [--rounds 5] [--only stock,project]

Starts one MariaDB on 127.0.0.1 (tests/support/peers.py) and, per contender, fresh tracking and
auth databases made by the image's admin step (tests/support/dbadmin.py; the image keeps the user
store on the database server), then one child process per contender that builds the ASGI app uvicorn would serve and
calls it in-process, one call at a time, on a uvloop event loop:

* stock: ``mlflow.server.fastapi_app:app`` (what ``mlflow server`` runs, no auth), anonymous calls;
* project: ``mlflow_auth_fastpath.create_app()`` (``--app-name basic-auth-fastpath``, the image's
  default, ``auth_cache_ttl_seconds = 60``), as a regular user on a run of an experiment the user
  created (MANAGE, as in the bench);
* project-admin (optional): the same app, as the admin (MLflow skips the permission check).

Every call is the JSON ``POST /api/2.0/mlflow/runs/log-metric`` the MLflow client sends, through
MLflow's FastAPI middleware, the ASGI -> WSGI bridge (Flask in an anyio worker thread) and Flask.
Not included: uvicorn's HTTP parsing and socket I/O (httptools), and the database server's own CPU.

Two measurements per contender, after a warm-up:

1. unprofiled: process CPU time per call (``time.process_time``, all threads), split into the
   event-loop thread (FastAPI middleware and the bridge; ``time.thread_time``) and the rest
   (Flask in the worker thread), median of ``--rounds`` rounds of ``--calls`` calls; SQL
   statements per call, per database (SQLAlchemy ``before_cursor_execute``);
2. profiled: cProfile (process CPU clock) switched on while the worker thread runs Flask, call by
   call (Python 3.12's cProfile is one sys.monitoring tool per process); cumulative CPU ms per call
   of the functions listed in ``ROWS`` (profiled times run about 2x the unprofiled ones: compare
   shares, not absolute ms).

Prints a Markdown table and writes ``--out`` (default /tmp/profile_auth.json) with every number and
the 40 functions of highest cumulative time per contender. Stops MariaDB and every child it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "image" / "plugins"
ADMIN, ADMIN_PASSWORD = "admin", "profile-Adm1n-pa55word"
USER, USER_PASSWORD = "profile-user", "profile-user-pa55word"
SECRET_KEY = "profile-flask-secret-key-0123456789abcdef"

# (label, path suffix, function name): cumulative CPU of each, per call (rows nest; they do not add up)
ROWS = [
    ("whole Flask request, worker thread (`Flask.wsgi_app`)", "flask/app.py", "wsgi_app"),
    ("auth: `_before_request` (all of the check below)", "mlflow/server/auth/__init__.py", "_before_request"),
    ("- credential check (`VerifiedCredentials.check`: HMAC + LRU)", "mlflow_auth_fastpath/credentials.py", "check"),
    ("- user read (`store.get_user`, one query)", "mlflow/server/auth/sqlalchemy_store.py", "get_user"),
    ("- `sender_is_admin`", "mlflow/server/auth/__init__.py", "sender_is_admin"),
    ("- validator `validate_can_log_metric`", "mlflow/server/auth/__init__.py", "validate_can_log_metric"),
    ("-- run -> experiment (`_experiment_of_run`, one query)", "mlflow_auth_fastpath/__init__.py", "_experiment_of_run"),
    ("-- grants (`store.list_grants`, one query)", "mlflow/server/auth/sqlalchemy_store.py", "list_grants"),
    ("auth: `_after_request`", "mlflow/server/auth/__init__.py", "_after_request"),
    ("MLflow's handler `_log_metric`", "mlflow/server/handlers.py", "_log_metric"),
    ("- request JSON -> protobuf (`_get_request_message`, handler and validator)", "mlflow/server/handlers.py",
     "_get_request_message"),
    ("- tracking store `log_metric`", "mlflow/store/tracking/sqlalchemy_store.py", "log_metric"),
    ("database round trips, client side (pymysql `Cursor.execute`)", "pymysql/cursors.py", "execute"),
    ("SQLAlchemy `Session.commit`", "sqlalchemy/orm/session.py", "commit"),
    ("SQLAlchemy connection checkout (`QueuePool.connect`)", "sqlalchemy/pool/base.py", "_checkout"),
]

_CHILD = textwrap.dedent('''
    import asyncio, base64, cProfile, collections, json, pstats, statistics, sys, threading, time
    mode, calls, rounds, out_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    import uvloop
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    statements = collections.Counter()

    @event.listens_for(Engine, "before_cursor_execute")
    def _count(conn, cursor, statement, parameters, context, executemany):
        statements[conn.engine.url.database] += 1

    import starlette.middleware.wsgi as starlette_wsgi

    PROFILING = [False]
    # Python 3.12's cProfile is a sys.monitoring tool: one active profiler per process, seeing every
    # thread. It is switched on only while the worker thread runs Flask, call by call (calls are
    # sequential); its clock is the process's CPU time.
    PROF = cProfile.Profile(time.process_time)
    wsgi = starlette_wsgi.WSGIResponder.wsgi

    def profiled_wsgi(self, environ, start_response):  # the Flask side runs in anyio worker threads
        if not PROFILING[0]:
            return wsgi(self, environ, start_response)
        PROF.enable()
        try:
            return wsgi(self, environ, start_response)
        finally:
            PROF.disable()

    starlette_wsgi.WSGIResponder.wsgi = profiled_wsgi

    if mode == "stock":
        from mlflow.server.fastapi_app import app
        who = None
    else:
        import mlflow_auth_fastpath
        from mlflow.server import auth
        app = mlflow_auth_fastpath.create_app()
        if mode == "project":
            auth.store.create_user(sys.argv[5], sys.argv[6])
            who = (sys.argv[5], sys.argv[6])
        else:
            who = (sys.argv[7], sys.argv[8])
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"mlflow-python-client/3.17.2"),
               (b"content-type", b"application/json")]
    if who:
        token = base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()
        headers.append((b"authorization", f"Basic {token}".encode()))

    async def call(method, path, body):
        data = json.dumps(body).encode()
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                 "headers": headers + [(b"content-length", str(len(data)).encode())],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 5000)}
        sent, out = [], {"status": None, "body": b""}
        async def receive():
            if not sent:
                sent.append(1)
                return {"type": "http.request", "body": data, "more_body": False}
            await asyncio.Event().wait()
        async def send(message):
            if message["type"] == "http.response.start":
                out["status"] = message["status"]
            elif message["type"] == "http.response.body":
                out["body"] += message.get("body", b"")
        await app(scope, receive, send)
        if out["status"] != 200:
            raise RuntimeError(f"{method} {path}: {out['status']} {out['body'][:300]!r}")
        return json.loads(out["body"] or b"{}")

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    exp = loop.run_until_complete(call("POST", "/api/2.0/mlflow/experiments/create", {"name": "profile-" + mode}))
    run = loop.run_until_complete(call("POST", "/api/2.0/mlflow/runs/create",
                                       {"experiment_id": exp["experiment_id"], "start_time": 0}))
    run_id = run["run"]["info"]["run_id"]
    step = [0]

    async def batch(n):
        for _ in range(n):
            step[0] += 1
            await call("POST", "/api/2.0/mlflow/runs/log-metric",
                       {"run_id": run_id, "key": "loss", "value": 0.5, "timestamp": 1700000000000 + step[0],
                        "step": step[0]})

    loop.run_until_complete(batch(200))  # warm-up: imports, caches, pool connections
    per_call, loop_thread = [], []
    for _ in range(rounds):
        statements.clear()
        p0, t0 = time.process_time(), time.thread_time()
        loop.run_until_complete(batch(calls))
        per_call.append((time.process_time() - p0) * 1000 / calls)
        loop_thread.append((time.thread_time() - t0) * 1000 / calls)
    sql = {db: n / calls for db, n in statements.items()}

    PROFILING[0] = True
    p0 = time.process_time()
    loop.run_until_complete(batch(calls))
    profiled_total = (time.process_time() - p0) * 1000 / calls
    PROFILING[0] = False
    stats = pstats.Stats(PROF)
    entries = [[f, line, fn, nc, tt * 1000 / calls, ct * 1000 / calls]
               for (f, line, fn), (cc, nc, tt, ct, callers) in stats.stats.items()]
    json.dump({"mode": mode, "calls": calls, "rounds": rounds, "cpu_ms_per_call": per_call,
               "loop_thread_ms_per_call": loop_thread, "sql_per_call": sql,
               "profiled_total_ms_per_call": profiled_total, "entries": entries}, open(out_path, "w"))
''')


def run_child(mode: str, env: dict, calls: int, rounds: int, work: Path) -> dict:
    out = work / f"{mode}.json"
    argv = [sys.executable, "-c", _CHILD, mode, str(calls), str(rounds), str(out), USER, USER_PASSWORD,
            ADMIN, ADMIN_PASSWORD]
    p = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(f"{mode}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return json.loads(out.read_text())


def cumulative(result: dict, suffix: str, fn: str) -> float | None:
    hits = [e for e in result["entries"] if e[0].endswith(suffix) and e[2] == fn]
    return sum(e[5] for e in hits) if hits else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="stock,project")
    ap.add_argument("--out", default="/tmp/profile_auth.json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.support.dbadmin import prepare_databases
    from tests.support.peers import MariaDB

    modes = args.only.split(",")
    results = {}
    with tempfile.TemporaryDirectory(prefix="profile-auth-") as tmp, MariaDB() as db:
        base = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ}
        for mode in modes:
            work = Path(tmp) / mode
            work.mkdir()
            name, auth_name, user, password = f"t_{mode}".replace("-", "_"), f"a_{mode}".replace("-", "_"), \
                f"u_{mode}".replace("-", "_")[:30], "profile-db-pa55word"
            prepare_databases(db, user, password, name, auth_name)  # the image's admin step: both schemas
            env = {**base, "HOME": str(work), "MLFLOW_DISABLE_TELEMETRY": "true",
                   "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
                   "_MLFLOW_SERVER_FILE_STORE": db.url(user, password, name),
                   "_MLFLOW_SERVER_ARTIFACT_ROOT": str(work / "artifacts"), "_MLFLOW_SGI_NAME": "uvicorn"}
            if mode != "stock":
                ini = work / "basic_auth.ini"
                ini.write_text("\n".join([
                    "[mlflow]", "default_permission = READ",
                    f"database_uri = {db.url(user, password, auth_name).replace('%', '%%')}",
                    f"admin_username = {ADMIN}", f"admin_password = {ADMIN_PASSWORD}",
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth",
                    "grant_default_workspace_access = false", "auth_cache_ttl_seconds = 60", ""]))
                env.update(PYTHONPATH=str(PLUGINS), MLFLOW_AUTH_CONFIG_PATH=str(ini))
            results[mode] = run_child(mode, env, args.calls, args.rounds, work)
            print(f"{mode}: done", file=sys.stderr)

    import statistics

    report = {"date": __import__("time").strftime("%Y-%m-%d %H:%M UTC", __import__("time").gmtime()),
              "cpus": os.cpu_count(), "loadavg": os.getloadavg(), "modes": {}}
    print(f"\n{report['date']}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
          f"{args.rounds} x {args.calls} calls per contender\n")
    print("| | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    cpu = {m: statistics.median(r["cpu_ms_per_call"]) for m, r in results.items()}
    lt = {m: statistics.median(r["loop_thread_ms_per_call"]) for m, r in results.items()}
    print("| **unprofiled CPU ms per call** (median of rounds; range) | " + " | ".join(
        f"**{cpu[m]:.2f}** ({min(results[m]['cpu_ms_per_call']):.2f}-{max(results[m]['cpu_ms_per_call']):.2f})"
        for m in modes) + " |")
    print("| - event-loop thread: FastAPI middleware, ASGI -> WSGI bridge | " + " | ".join(
        f"{lt[m]:.2f}" for m in modes) + " |")
    print("| - worker thread: Flask, auth, handler, database client | " + " | ".join(
        f"{cpu[m] - lt[m]:.2f}" for m in modes) + " |")
    print("| SQL statements per call (tracking / auth database) | " + " | ".join(
        " / ".join(f"{results[m]['sql_per_call'].get(d, 0):.1f}" for d in (f"t_{m}".replace("-", "_"),
                                                                            f"a_{m}".replace("-", "_")))
        for m in modes) + " |")
    print("| *profiled* (cProfile, process CPU clock, Flask side only), ms per call: | " + " | ".join("" for _ in modes) + " |")
    print("| whole call while profiled (process CPU) | " + " | ".join(
        f"{results[m]['profiled_total_ms_per_call']:.2f}" for m in modes) + " |")
    for label, suffix, fn in ROWS:
        vals = [cumulative(results[m], suffix, fn) for m in modes]
        if all(v is None for v in vals):
            continue
        print(f"| {label} | " + " | ".join("–" if v is None else f"{v:.2f}" for v in vals) + " |")
    for m, r in results.items():
        top = sorted(r["entries"], key=lambda e: -e[5])[:40]
        report["modes"][m] = {k: r[k] for k in ("calls", "rounds", "cpu_ms_per_call", "loop_thread_ms_per_call",
                                                "sql_per_call", "profiled_total_ms_per_call")}
        report["modes"][m]["rows"] = {label: cumulative(r, suffix, fn) for label, suffix, fn in ROWS}
        report["modes"][m]["top_cumulative"] = top
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
