"""Benchmarks: the project's server against stock `mlflow server`, side by side in one run.

    .venv/bin/python -m bench            # full run (about 35 minutes on 2 vCPUs; --no-variants about 20)
    .venv/bin/python -m bench --quick    # smoke run (short windows, 64 MiB artifact, no variants; about 8 min)
    .venv/bin/python -m bench --suite    # also time `pytest tests -q` (long)

Starts one MariaDB and one S3 server (moto) on 127.0.0.1 (tests/support/peers.py), shared by all
contenders; every contender gets fresh databases of its own on that MariaDB and a prefix of its own
in the bucket, runs under `taskset -c <cpus>` and is stopped before the next one starts. Prints
one table and writes bench/RESULTS.md (README-ready) and bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench import report
from bench.load import run_load
from bench.proc import cpu_calibration, cpu_delta, cpu_sample, pss_kib, session_pids
from bench.servers import STOCK_UVICORN, ProjectServer, StockServer
from bench.workload import (MiB, create_experiment, create_runs, create_trainer, direct_s3, first_calls,
                            insert_runs, keepalive_probe, make_file, mlflow_client, proxy_raw, search_p50)
from tests.support.db_connections import ConnectionSampler
from tests.support.peers import MariaDB, S3Server

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BUCKET = "mlflow-bench"
DB_PASSWORD = "bench-db-pa55word"

PROFILES = {
    "full": dict(warmup=2.0, duration=8.0, clients=(1, 8, 32), search_runs=10_000, search_reps=10,
                 artifact_mib=1024, settle=6.5, first_calls=300, variants=True, variant_duration=5.0,
                 variant_warmup=1.5),
    "quick": dict(warmup=0.5, duration=2.0, clients=(1, 8, 32), search_runs=10_000, search_reps=3,
                  artifact_mib=64, settle=6.5, first_calls=300, variants=False, variant_duration=2.0,
                  variant_warmup=0.5),
}
KINDS = ("log-metric", "log-batch")
MODES = ("client", "raw")  # the MLflow client (what users run; targets are judged on it), raw REST


@dataclass
class Spec:
    key: str
    label: str
    kind: str  # "stock" | "project"
    auth: bool = True
    extra: dict[str, str] = field(default_factory=dict)
    artifacts: bool = False
    uvicorn: str | None = STOCK_UVICORN  # stock only: --uvicorn-opts (None: uvicorn picks uvloop/httptools)
    admin_client: bool = False  # auth on: the clients log in as the admin (no permission checks) instead of a user


MAIN = [
    Spec("stock", "stock `mlflow server`", "stock", auth=False, artifacts=True),
    Spec("stock-auth", "stock + `--app-name basic-auth`", "stock", auth=True),
    Spec("project", "project entrypoint (auth on, defaults)", "project", artifacts=True),
]
# Variants of the project's entrypoint: one setting changed from its defaults each.
# The first two are stock, for reference: with uvloop + httptools installed (`pip install mlflow
# uvicorn[standard]`: uvicorn picks them up itself), and with one worker (asyncio + h11).
VARIANTS = [
    Spec("stock+uvloop", "stock, uvicorn[standard] installed (uvloop + httptools picked by uvicorn)", "stock",
         auth=False, uvicorn=None),
    Spec("stock-workers=1", "stock, MLFLOW_WORKERS=1 (asyncio + h11)", "stock", auth=False,
         extra={"MLFLOW_WORKERS": "1"}),
    Spec("defaults", "defaults (2 workers, pool 10+0, auth fast path, auth cache 60 s, httptools+uvloop)", "project"),
    Spec("fastpath-off", "MLFLOW_AUTH_FASTPATH=false (MLflow's own basic-auth app)", "project",
         extra={"MLFLOW_AUTH_FASTPATH": "false"}),
    Spec("workers=1", "MLFLOW_WORKERS=1", "project", extra={"MLFLOW_WORKERS": "1"}),
    Spec("workers=3", "MLFLOW_WORKERS=3", "project", extra={"MLFLOW_WORKERS": "3"}),
    Spec("workers=4", "MLFLOW_WORKERS=4", "project", extra={"MLFLOW_WORKERS": "4"}),
    Spec("pool=2+3", "pool 2 + overflow 3", "project",
         extra={"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "2", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "3"}),
    Spec("pool=10+10", "pool 10 + overflow 10", "project",
         extra={"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "10", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "10"}),
    Spec("pool=5+5", "pool 5 + overflow 5 (the previous default: the same connection ceiling, with overflow churn)",
         "project", extra={"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": "5"}),
    Spec("auth-ttl=0", "MLFLOW_AUTH_CACHE_TTL_SECONDS=0", "project", extra={"MLFLOW_AUTH_CACHE_TTL_SECONDS": "0"}),
    Spec("h11", "uvicorn --http h11 --loop asyncio", "project",
         extra={"MLFLOW_UVICORN_OPTS": "--http h11 --loop asyncio"}),
    Spec("asyncio", "uvicorn --loop asyncio (httptools kept)", "project", extra={"MLFLOW_UVICORN_OPTS": "--loop asyncio"}),
    Spec("admin-client", "clients log in as the admin (MLflow skips the permission check)", "project",
         admin_client=True),
    Spec("no-access-log", "uvicorn --no-access-log", "project", extra={"MLFLOW_UVICORN_OPTS": "--no-access-log"}),
]
VARIANT_CELLS = [("client", "log-metric", 1), ("client", "log-metric", 8), ("client", "log-metric", 32),
                 ("client", "log-batch", 8)]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
    import mlflow
    import uvicorn

    versions = {"mlflow": mlflow.__version__, "uvicorn": uvicorn.__version__, "python": platform.python_version()}
    for mod in ("uvloop", "httptools", "sqlalchemy", "pymysql", "moto", "pulumi", "pulumi_aws"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = "?"
    maria = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    try:
        versions["mariadb"] = subprocess.run([maria, "--version"], capture_output=True, text=True,
                                             timeout=10).stdout.split("Ver")[1].split()[0]
    except Exception:  # noqa: BLE001
        versions["mariadb"] = "?"
    import os

    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_kib / 1024 / 1024, 1),
            "kernel": platform.release(), "versions": versions,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


class Bench:
    def __init__(self, args, prof: dict) -> None:
        self.args, self.prof = args, prof
        self.results: dict = {"profile": args.profile, "settings": prof, "cpus": args.cpus, "contenders": {},
                              "variants": {}, "direct_s3": []}
        self.tmp = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
        self.big: Path | None = None

    def save(self) -> None:
        (BENCH / self.args.json_name).write_text(json.dumps(self.results, indent=1, default=str))

    # -----------------------------------------------------------------------------------------
    def server(self, spec: Spec, db, s3, name: str, auth_name: str):
        if spec.kind == "stock":
            return StockServer(db.url("bench", DB_PASSWORD, name), f"s3://{BUCKET}/{name}", s3, spec.auth,
                               self.args.cpus, spec.uvicorn, spec.extra)
        return ProjectServer(db, "bench", DB_PASSWORD, name, auth_name, s3, BUCKET, name, self.args.cpus, spec.extra)

    def contender(self, spec: Spec, db, s3, full: bool) -> dict:
        p = self.prof
        safe = "".join(c if c.isalnum() else "_" for c in spec.key)
        name, auth_name = f"bench_{safe}", f"bench_{safe}_auth"
        for d in (name, auth_name):
            db.drop_database(d)
            db.create_database(d)
        db.create_user("bench", DB_PASSWORD, [name, auth_name])
        srv = self.server(spec, db, s3, name, auth_name)
        res: dict = {"label": spec.label, "auth": spec.auth, "extra": spec.extra, "cells": {},
                     "loadavg_at_start": os.getloadavg()[0]}
        try:
            log(f"{spec.key}: starting (fresh database: schema created at start)")
            srv.start()
            res["cold_start_s"] = srv.started_in
            if srv.auth and not spec.admin_client:
                srv.auth = create_trainer(srv)  # clients are a regular user, not the admin
            load_exp = create_experiment(srv, "load")
            run_ids = create_runs(srv, load_exp, max(p["clients"]))
            res["load_experiment"] = load_exp
            if full:
                search_exp = create_experiment(srv, "search-10k")
                res["insert_s"] = insert_runs(db, "bench", DB_PASSWORD, name, search_exp, p["search_runs"])
                log(f"{spec.key}: inserted {p['search_runs']} runs in {res['insert_s']:.1f} s; restarting "
                    f"(start-up is measured on an existing schema)")
                srv.stop()
                srv.start()
            res["start_s"] = srv.started_in
            alive: dict = {}
            probe = threading.Thread(target=lambda: alive.update(ok=keepalive_probe(srv.url, p["settle"])))
            probe.start()
            probe.join()
            pids = session_pids(srv.sid)
            res["idle_pss_mib"] = pss_kib(pids) / 1024
            res["processes"] = len(pids)
            res["keepalive_open_after_s"] = {str(p["settle"]): alive.get("ok")}
            log(f"{spec.key}: /health after {res['start_s']:.1f} s, idle PSS {res['idle_pss_mib']:.0f} MiB in "
                f"{len(pids)} processes, idle connection open after {p['settle']} s: {alive.get('ok')}")
            if self.args.search_startup:  # start-up again (median of 3 starts), then only search_runs below
                starts = [res["start_s"]]
                for _ in range(2):
                    srv.stop()
                    srv.start()
                    starts.append(srv.started_in)
                res["start_s_all"], res["start_s"] = starts, sorted(starts)[1]
                log(f"{spec.key}: start-up to /health {starts} s (median {res['start_s']:.1f})")
            if full and not self.args.search_startup:
                res["first_calls"] = r = first_calls(srv, run_ids[0], p["first_calls"])
                log(f"{spec.key}: first {r['n']} log_metric calls after start-up: {r['rps']:.1f} req/s, p50 "
                    f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, {r['stalled_pct']:.0f} % > 35 ms")
            cells = [(m, k, n) for m in MODES for k in KINDS for n in p["clients"]] if full else VARIANT_CELLS
            if self.args.search_startup:
                cells = []
            if self.args.cells:  # e.g. --cells client:log-metric/1,client:log-metric/8
                cells = [c for c in cells if f"{c[0]}:{c[1]}/{c[2]}" in self.args.cells.split(",")]
            duration = p["duration"] if full else p["variant_duration"]
            warmup = p["warmup"] if full else p["variant_warmup"]
            # the server's database connections, as the database counts them (sampled every 50 ms)
            db_user = srv.server.env["MLFLOW_DB_USER"] if spec.kind == "project" else "bench"
            for mode, kind, n in cells:
                with ConnectionSampler(db, db_user, interval=0.05) as conns:
                    r = run_load(srv.url, srv.auth, kind, run_ids[:n], warmup, duration, mode,
                                 sample=lambda: cpu_sample(srv.sid))
                r["db_connections_peak"] = conns.peak
                w = r.pop("window")
                if len(w) == 2:  # server CPU per call (all calls in the window, errors included)
                    r.update(cpu_delta(w[0], w[1], r["n"] + r["errors"]))
                res["cells"][f"{mode}:{kind}/{n}"] = r
                log(f"{spec.key}: {mode:6s} {kind:10s} {n:2d} clients: {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                    f"p99 {r['p99_ms']:7.1f} ms  errors {r['errors']}  server CPU {r.get('server_cpu_ms_per_call') or 0:.1f} ms/call  "
                    f"machine busy {r.get('machine_busy_pct') or 0:.0f} %  db connections peak {conns.peak}"
                    + (f"  {r['first_errors'][:1]}" if r["errors"] else ""))
            if full:
                res["search"] = search_p50(srv, search_exp, p["search_reps"])
                log(f"{spec.key}: search_runs " + ", ".join(f"{k} p50 {v['p50_ms']:.0f} ms ({v['rows']} rows)"
                                                            for k, v in res["search"].items()))
            if spec.artifacts and not self.args.no_artifacts:
                self.artifacts(spec, srv, s3, name, run_ids[0], res)
        except Exception as e:  # noqa: BLE001 - record and go on with the next contender
            res["error"] = f"{type(e).__name__}: {e}"
            log(f"{spec.key}: FAILED {res['error']}\n{traceback.format_exc()}\n{srv.log_tail()}")
        finally:
            srv.close()
            for d in (name, auth_name):
                db.drop_database(d)
        return res

    def artifacts(self, spec: Spec, srv, s3, name: str, run_id: str, res: dict) -> None:
        size = self.prof["artifact_mib"] * MiB
        if self.big is None:
            self.big = make_file(self.tmp / "big.bin", size)
        dst = self.tmp / "down.bin"
        d = direct_s3(s3, BUCKET, f"direct/{spec.key}/big.bin", self.big, dst)
        self.results["direct_s3"].append(d)
        log(f"direct S3: upload {d['upload_mbps']:.0f} MiB/s, download {d['download_mbps']:.0f} MiB/s")
        # the run's own artifact path: what the client uses, and what a non-admin user may write
        res["proxy_raw"] = proxy_raw(srv, f"{res['load_experiment']}/{run_id}/artifacts/big.bin", self.big, dst)
        for k, v in res["proxy_raw"].items():
            log(f"{spec.key}: proxy {k}: {v['mbps']:.0f} MiB/s, server RSS +{v['rss_growth_mib']:.0f} MiB, "
                f"spool peak {v['spool_peak_mib']:.0f} MiB, ok={v['ok']}")
        self._empty_prefix(s3, name)
        if spec.kind == "project":
            for forced in (True, False):
                key = "client_forced_proxy" if forced else "client_default"
                res[key] = r = mlflow_client(srv, s3, run_id, self.big, self.tmp / "dl", forced)
                log(f"{spec.key}: MLflow client {'forced proxy' if forced else 'default (presigned)'}: {r}")
                self._empty_prefix(s3, name)

    @staticmethod
    def _empty_prefix(s3, prefix: str) -> None:
        c = s3.client()
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            for obj in page.get("Contents", []):
                c.delete_object(Bucket=BUCKET, Key=obj["Key"])

    # -----------------------------------------------------------------------------------------
    def run_servers(self) -> None:
        with MariaDB(max_connections=1000) as db, S3Server() as s3:
            s3.create_bucket(BUCKET)
            only = set(self.args.only.split(",")) if self.args.only else None
            for spec in MAIN:
                if only and spec.key not in only:
                    continue
                self.results["contenders"][spec.key] = self.contender(spec, db, s3, full=True)
                self.save()
            if self.prof["variants"] or self.args.variants:
                for spec in VARIANTS:
                    if only and spec.key not in only:
                        continue
                    self.results["variants"][spec.key] = self.contender(spec, db, s3, full=False)
                    self.save()

    def run_program(self) -> None:
        from bench.program_time import time_program

        self.results["program"] = time_program()
        log(f"program under mocks: {self.results['program']}")

    def run_suite(self) -> None:
        log("test suite: pytest tests -q (this takes a while)")
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"], cwd=ROOT,
                           capture_output=True, text=True, timeout=7200)
        wall = time.monotonic() - t0
        summary = next((line for line in reversed(p.stdout.splitlines()) if line.strip()), "")
        self.results["suite"] = {"wall_s": wall, "returncode": p.returncode, "summary": summary.strip("= ")}
        log(f"test suite: {wall:.0f} s, {summary}")

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 s windows, 64 MiB artifact, no variants")
    ap.add_argument("--suite", action="store_true", help="also time the whole test suite (pytest tests -q)")
    ap.add_argument("--variants", action="store_true", help="run the tuning variants in --quick mode too")
    ap.add_argument("--no-variants", action="store_true", help="skip the tuning variants")
    ap.add_argument("--no-artifacts", action="store_true", help="skip the artifact transfers")
    ap.add_argument("--only", default="", help="comma-separated contender/variant keys (e.g. stock,project)")
    ap.add_argument("--cells", default="", help="comma-separated load cells to run, mode:kind/clients (e.g. "
                                                "client:log-metric/1,client:log-metric/8); skips the program timing")
    ap.add_argument("--cpus", default=f"0-{(os.cpu_count() or 1) - 1}",
                    help="CPU list given to every server through taskset (the same budget for all)")
    ap.add_argument("--search-startup", action="store_true",
                    help="only start-up (3 starts on an existing schema) and search_runs over 10,000 runs, "
                         "no load cells, variants or artifacts (with --only stock,project: issue 14 item 3)")
    ap.add_argument("--report-only", action="store_true", help="re-render RESULTS.md from results.json")
    ap.add_argument("--out", default="", help="write bench/<OUT>.json and bench/<OUT>.md instead (a partial run "
                                              "that must not replace the full run's files, e.g. --only pool=5+5)")
    args = ap.parse_args(argv)
    args.profile = "quick" if args.quick else "full"
    args.json_name = f"{args.out}.json" if args.out else "results-quick.json" if args.quick else "results.json"
    md_name = f"{args.out}.md" if args.out else "RESULTS-quick.md" if args.quick else "RESULTS.md"
    prof = dict(PROFILES[args.profile])
    if args.no_variants or args.search_startup:
        prof["variants"] = False
    if args.search_startup:
        args.no_artifacts = True

    if args.report_only:
        results = json.loads((BENCH / args.json_name).read_text())
    else:
        b = Bench(args, prof)
        b.results["machine"] = machine()
        b.results["calibration_ms"] = {"start": cpu_calibration()}
        t0 = time.monotonic()
        try:
            b.run_servers()
            if not args.cells:  # --cells is a partial run: no program timing
                b.run_program()
            if args.suite:
                b.run_suite()
        finally:
            b.results["wall_s"] = time.monotonic() - t0
            b.results["calibration_ms"]["end"] = cpu_calibration()
            b.save()
            b.close()
        results = b.results
    text = report.render(results)
    (BENCH / md_name).write_text(text)
    print(text)
    log(f"wrote bench/{md_name} and bench/{args.json_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
