"""search_runs, project against stock, interleaved: one call each in turn, many rounds.

    .venv/bin/python -m bench.search_ab                      # stock, project; 40 rounds (~6 min here)
    .venv/bin/python -m bench.search_ab --with fastjson-off,stock-auth --rounds 60

Why a bench of its own: the full run (bench/run.py) measures each contender's search_runs p50 from
10 calls made minutes apart from the other contender's, on a shared 2-vCPU machine. Four such
runs put the project at 0.81x to 1.21x of stock: the machine's drift between the two windows is
as large as the difference being judged. Here every contender runs at the same time (idle except
for the call being timed), on databases with the same 10,000 runs (bench/workload.insert_runs,
same seed, so the same run ids), and each round times one call of each search on every
contender, in a shuffled order. Drift then hits all contenders alike, and the paired ratio of a
round (contender / stock, same round) cancels it. Besides wall time, each call's CPU is read from
/proc: the server's whole process tree, and MariaDB's (the same SQL for everyone, so a difference
there means different queries).

Reported per search: p50 wall, p50 server CPU and p50 MariaDB CPU per call; the median of the
paired per-round wall ratios with a 95 % bootstrap interval (2,000 resamples of the rounds, fixed
seed). "No slower" is judged on that interval: its upper end at or below 1.0 is "no slower"
beyond this machine's noise; an interval across 1.0 is "not distinguishable". Every response is
checked to return the same run ids in the same order as stock's (same work).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import requests

from bench.proc import cpu_seconds, session_pids
from bench.run import MAIN, VARIANTS, Spec, machine
from bench.servers import ProjectServer, StockServer
from bench.workload import SEARCHES, create_experiment, create_trainer, insert_runs
from tests.support.peers import MariaDB, S3Server

BENCH = Path(__file__).resolve().parent
BUCKET = "mlflow-bench-search"
DB_PASSWORD = "bench-db-pa55word"
N_RUNS = 10_000
# the project with MLflow's own message_to_json: what image/plugins/mlflow_fast_json saves
FAST_JSON_OFF = Spec("fastjson-off", "project, MLFLOW_FAST_JSON=false (MLflow's message_to_json)", "project",
                     extra={"MLFLOW_FAST_JSON": "false"})
SPECS = {s.key: s for s in (*MAIN, *VARIANTS, FAST_JSON_OFF)}


def log(msg: str) -> None:
    print(f"[search-ab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Contender:
    """One server with its own databases and a 10,000-run experiment owned by a regular user."""

    def __init__(self, index: int, key: str, db, s3, cpus: str) -> None:
        self.key, self.spec = key, SPECS[key]
        safe = "".join(c if c.isalnum() else "_" for c in key)
        self.names = (f"sab_{safe}", f"sab_{safe}_auth")
        for d in self.names:
            db.drop_database(d)
            db.create_database(d)
        db.create_user("bench", DB_PASSWORD, list(self.names))
        name, auth_name = self.names
        if self.spec.kind == "stock":
            self.srv = StockServer(db.url("bench", DB_PASSWORD, name), f"s3://{BUCKET}/{name}", s3, self.spec.auth,
                                   cpus, self.spec.uvicorn, self.spec.extra)
        else:
            # an application user of its own (<user>_app, made by the admin step): the admin step of a
            # second project contender re-grants a shared one to its own databases only
            self.srv = ProjectServer(db, f"sab_{index}", DB_PASSWORD, name, auth_name, s3, BUCKET, name, cpus,
                                     self.spec.extra)
        self.db = db
        self.session = requests.Session()
        self.experiment = ""
        self.calls: dict[str, list[dict]] = {k: [] for k in SEARCHES}

    def start(self) -> None:
        self.srv.start()
        if self.srv.auth and not self.spec.admin_client:
            self.srv.auth = create_trainer(self.srv)  # a regular user: MLflow checks its permissions
        self.session.auth = self.srv.auth
        self.experiment = create_experiment(self.srv, "search-10k")  # owned by that user
        took = insert_runs(self.db, "bench", DB_PASSWORD, self.names[0], self.experiment, N_RUNS)
        log(f"{self.key}: /health after {self.srv.started_in:.1f} s; {N_RUNS} runs inserted in {took:.1f} s")

    def call(self, search: str, db_pid: int) -> dict:
        pids = session_pids(self.srv.sid)
        cpu0, db0, t0 = cpu_seconds(pids), cpu_seconds([db_pid]), time.perf_counter()
        r = self.session.post(f"{self.srv.url}/api/2.0/mlflow/runs/search", timeout=120,
                              json={"experiment_ids": [self.experiment], **SEARCHES[search]})
        wall = time.perf_counter() - t0
        cpu1, db1 = cpu_seconds(session_pids(self.srv.sid)), cpu_seconds([db_pid])
        if r.status_code != 200:
            raise RuntimeError(f"{self.key}: {search}: HTTP {r.status_code}: {r.text[:500]}\n"
                               f"server log:\n{self.srv.log_tail(60)}")
        runs = r.json().get("runs", [])
        return {"wall_ms": wall * 1000, "server_cpu_ms": (cpu1 - cpu0) * 1000, "db_cpu_ms": (db1 - db0) * 1000,
                "bytes": len(r.content), "rows": len(runs), "ids": [x["info"]["run_id"] for x in runs]}

    def close(self) -> None:
        self.srv.close()
        for d in self.names:
            self.db.drop_database(d)


def bootstrap_median(values: list[float], n: int = 2000, seed: int = 14) -> tuple[float, float]:
    rnd = random.Random(seed)
    meds = sorted(statistics.median(rnd.choices(values, k=len(values))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def run(keys: list[str], rounds: int, cpus: str, warmup: int = 2) -> dict:
    out: dict = {"machine": machine(), "rounds": rounds, "cpus": cpus, "contenders": keys, "searches": SEARCHES,
                 "labels": {k: SPECS[k].label for k in keys}}
    t_start = time.monotonic()
    with MariaDB(max_connections=1000) as db, S3Server() as s3:
        s3.create_bucket(BUCKET)
        cs = [Contender(i, k, db, s3, cpus) for i, k in enumerate(keys)]
        try:
            for c in cs:
                c.start()
            for c in cs:  # warm-up calls, not counted
                for s in SEARCHES:
                    for _ in range(warmup):
                        c.call(s, db.proc.pid)
            idle0 = {c.key: cpu_seconds(session_pids(c.srv.sid)) for c in cs}
            time.sleep(10)
            out["idle_cpu_ms_per_s"] = {c.key: (cpu_seconds(session_pids(c.srv.sid)) - idle0[c.key]) * 100
                                        for c in cs}
            order_rnd = random.Random(2026)
            for i in range(rounds):
                order = cs[:]
                order_rnd.shuffle(order)
                for s in SEARCHES:
                    got = {c.key: c.call(s, db.proc.pid) for c in order}
                    ref = got[keys[0]]["ids"]
                    for k, g in got.items():
                        if g["ids"] != ref:
                            raise RuntimeError(f"round {i}, {s}: {k} returned other runs than {keys[0]}")
                        g.pop("ids")
                        next(c for c in cs if c.key == k).calls[s].append(g)
                if (i + 1) % 10 == 0:
                    log(f"round {i + 1}/{rounds}: " + "; ".join(
                        f"{c.key} {s} p50 {statistics.median(x['wall_ms'] for x in c.calls[s]):.0f} ms"
                        for c in cs for s in SEARCHES))
        finally:
            for c in cs:
                c.close()
    out["wall_s"] = time.monotonic() - t_start
    out["calls"] = {c.key: c.calls for c in cs}
    out["results"], out["pairs"] = summarize(out["calls"], keys)
    return out


def paired(calls: list[dict], ref: list[dict]) -> dict:
    """Per-round wall ratios of ``calls`` to ``ref`` (the same rounds): median, 95 % bootstrap interval,
    rounds faster; and the ratio of the two p50 server CPU times (a ratio of medians, no interval)."""
    ratios = [a["wall_ms"] / b["wall_ms"] for a, b in zip(calls, ref, strict=True)]
    lo, hi = bootstrap_median(ratios)
    return {"ratio_median": statistics.median(ratios), "ratio_ci95": [lo, hi],
            "faster_rounds": sum(r < 1 for r in ratios), "n": len(ratios),
            "cpu_ratio": statistics.median(x["server_cpu_ms"] for x in calls)
            / statistics.median(x["server_cpu_ms"] for x in ref)}


def summarize(calls: dict, keys: list[str]) -> tuple[dict, dict]:
    """Per contender and search: p50s, and the paired comparison with the reference (keys[0]);
    besides, every other pair of contenders compared the same way ("a/b": a ÷ b)."""
    ref = keys[0]
    res: dict = {}
    for k in keys:
        res[k] = {}
        for s, cs in calls[k].items():
            row = {m: statistics.median(x[m] for x in cs) for m in ("wall_ms", "server_cpu_ms", "db_cpu_ms")}
            row.update(bytes=cs[0]["bytes"], rows=cs[0]["rows"], n=len(cs))
            if k != ref:
                row.update(paired(cs, calls[ref][s]))
            res[k][s] = row
    pairs = {f"{b}/{a}": {s: paired(calls[b][s], calls[a][s]) for s in calls[a]}
             for i, a in enumerate(keys[1:], 1) for b in keys[i + 1:]}
    return res, pairs


def verdict(row: dict) -> str:
    lo, hi = row["ratio_ci95"]
    if hi <= 1.0:
        return "no slower (interval ≤ 1)"
    if lo > 1.0:
        return "slower (interval > 1)"
    return "not distinguishable (interval spans 1)"


def render(out: dict) -> str:
    m = out["machine"]
    v = m["versions"]
    ref = out["contenders"][0]
    lines = [
        "## search_runs, interleaved (`python -m bench.search_ab`)", "",
        f"Measured {m['date']} ({out['wall_s'] / 60:.1f} min) on {m['nproc']} vCPU ({m['cpu']}), {m['mem_gib']} GiB "
        f"RAM, Linux {m['kernel']}. MLflow {v['mlflow']}, uvicorn {v['uvicorn']}, Python {v['python']}, MariaDB "
        f"{v['mariadb']}. Every server under `taskset -c {out['cpus']}`, all running at once, each on its own "
        f"database of the same MariaDB holding the same {N_RUNS:,} runs; {out['rounds']} rounds, each timing one "
        "call of each search on every contender in a shuffled order (2 warm-up calls each first). A regular user "
        "(owner of the experiment) where auth is on. Every response returned the same run ids in the same order "
        "as the reference's.", "",
        "Searches: " + "; ".join(f"**{k}** `{json.dumps(b)}`" for k, b in out["searches"].items()) + ".", "",
        "| Contender | search | p50 wall ms | p50 server CPU ms | p50 MariaDB CPU ms | response KiB | paired wall "
        f"ratio ÷ {ref}, median [95 % CI] | rounds faster | p50 server CPU ÷ {ref} | |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in out["contenders"]:
        for s, r in out["results"][k].items():
            if k == ref:
                extra = "– | – | – | reference"
            else:
                lo, hi = r["ratio_ci95"]
                extra = (f"{r['ratio_median']:.2f}× [{lo:.2f}, {hi:.2f}] | {r['faster_rounds']}/{r['n']} | "
                         f"{r['cpu_ratio']:.2f}× | {verdict(r)}")
            lines.append(f"| {out['labels'][k]} | {s} | {r['wall_ms']:.0f} | {r['server_cpu_ms']:.0f} | "
                         f"{r['db_cpu_ms']:.0f} | {r['bytes'] / 1024:,.0f} | {extra} |")
    if out.get("pairs"):
        lines += ["", "Between the other contenders (the same rounds, paired the same way):", "",
                  "| Comparison | search | paired wall ratio, median [95 % CI] | rounds faster | p50 server CPU ratio |",
                  "|---|---|---|---|---|"]
        for name, per in out["pairs"].items():
            b, a = name.split("/")
            for s, r in per.items():
                lo, hi = r["ratio_ci95"]
                lines.append(f"| {out['labels'][b]} ÷ {out['labels'][a]} | {s} | {r['ratio_median']:.2f}× "
                             f"[{lo:.2f}, {hi:.2f}] | {r['faster_rounds']}/{r['n']} | {r['cpu_ratio']:.2f}× |")
    lines += ["", "Idle CPU between calls (ms per second, 10 s sampled before the rounds): "
              + ", ".join(f"{k} {x:.1f}" for k, x in out["idle_cpu_ms_per_s"].items()) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import os

    ap = argparse.ArgumentParser(prog="python -m bench.search_ab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--with", dest="extra", default="",
                    help="more contenders, comma-separated: fastjson-off, or keys of bench/run.py's contenders "
                         "and variants (e.g. stock-auth,fastpath-off)")
    ap.add_argument("--report-only", action="store_true", help="re-render bench/<OUT>.md from bench/<OUT>.json")
    ap.add_argument("--cpus", default=f"0-{(os.cpu_count() or 1) - 1}")
    ap.add_argument("--out", default="search-ab", help="writes bench/<OUT>.json and bench/<OUT>.md")
    args = ap.parse_args(argv)
    if args.report_only:
        out = json.loads((BENCH / f"{args.out}.json").read_text())
        out["results"], out["pairs"] = summarize(out["calls"], out["contenders"])
    else:
        keys = ["stock", "project"] + [k for k in args.extra.split(",") if k]
        unknown = [k for k in keys if k not in SPECS]
        if unknown:
            ap.error(f"unknown contender {unknown[0]!r}; known: {', '.join(SPECS)}")
        out = run(keys, args.rounds, args.cpus)
    (BENCH / f"{args.out}.json").write_text(json.dumps(out, indent=1, default=str))
    text = render(out)
    (BENCH / f"{args.out}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
