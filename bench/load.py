"""Load generator: N concurrent clients, in one of two modes.

- "client": the MLflow client users run: `MlflowClient().log_metric(...)` / `.log_batch(...)`
  (credentials from MLFLOW_TRACKING_USERNAME/PASSWORD, as a training job sets them). MLflow's
  HTTP retries are turned off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0) so that a server error counts as
  an error instead of hiding in a client back-off; everything else is the client's default. All
  clients of one process share MLflow's per-process `requests` session (keep-alive), as threads of
  a training job do.
- "raw": raw REST calls, one `requests.Session` each (the lower bound of client overhead).

Clients are threads spread over up to `MAX_PROCS` spawned processes (so that the clients'
own CPU use is not serialized by one GIL). Every client writes to a run of its own, as
parallel training jobs do, reuses its keep-alive connection (as an ALB does) and measures
only the server: requests that complete inside the measurement window (after a warm-up)
count; latency is the wall time of one call (`MlflowClient` method or `session.post`).

This module imports nothing heavy at top level: it is the spawned processes' main module.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import threading
import time

MAX_PROCS = 8
BATCH = 1000  # metrics per log-batch call
PATHS = {"log-metric": "/api/2.0/mlflow/runs/log-metric", "log-batch": "/api/2.0/mlflow/runs/log-batch"}


def _body(kind: str, run_id: str, i: int) -> str:
    ts = int(time.time() * 1000)
    if kind == "log-metric":
        return json.dumps({"run_id": run_id, "key": "loss", "value": 1.0 / (i + 1), "timestamp": ts, "step": i})
    # 20 keys x 50 steps per call; steps never repeat for a run (one client per run)
    metrics = [{"key": f"m{j % 20}", "value": (i * BATCH + j) * 1e-3, "timestamp": ts, "step": i * 50 + j // 20}
               for j in range(BATCH)]
    return json.dumps({"run_id": run_id, "metrics": metrics})


def _mlflow_call(url, kind):
    """A function (run_id, i) -> None that makes one call through the MLflow client."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    c = MlflowClient(tracking_uri=url)
    if kind == "log-metric":
        return lambda run_id, i: c.log_metric(run_id, "loss", 1.0 / (i + 1), timestamp=int(time.time() * 1000), step=i)

    def batch(run_id, i):
        ts = int(time.time() * 1000)
        c.log_batch(run_id, metrics=[Metric(f"m{j % 20}", (i * BATCH + j) * 1e-3, ts, i * 50 + j // 20)
                                     for j in range(BATCH)])
    return batch


def _client(url, auth, kind, mode, run_id, go, start_box, warmup, duration, out, lock):
    import requests

    s = requests.Session()
    if auth:
        s.auth = tuple(auth)
    s.headers["Content-Type"] = "application/json"
    target = url + PATHS[kind]
    call = _mlflow_call(url, kind) if mode == "client" else None
    lat, errors, first_errors = [], 0, []
    go.wait()
    t_start = start_box.value
    w0, w1 = t_start + warmup, t_start + warmup + duration
    i = int(time.time() * 1000) % 10_000_000 * 10  # distinct steps across cells for the same run
    while True:
        now = time.time()
        if now >= w1:
            break
        if call is None:
            body = _body(kind, run_id, i).encode()
        i += 1
        t0 = time.perf_counter()
        ok, err = False, ""
        try:
            if call is not None:  # the MLflow client (it builds its request inside the timed call)
                call(run_id, i)
                ok = True
            else:
                r = s.post(target, data=body, timeout=120)
                ok = r.status_code == 200
                if not ok:
                    err = f"HTTP {r.status_code}: {r.text[:120]}"
        except Exception as e:  # noqa: BLE001 - every failure is an error of the server under test
            err = f"{type(e).__name__}: {str(e)[:120]}"
        dt = time.perf_counter() - t0
        done = time.time()
        if w0 <= done <= w1:
            if ok:
                lat.append(dt)
            else:
                errors += 1
                if len(first_errors) < 3:
                    first_errors.append(err)
    s.close()
    with lock:
        out["lat"].extend(lat)
        out["errors"] += errors
        out["first_errors"].extend(first_errors)


def _proc_main(url, auth, kind, mode, run_ids, go, start_box, warmup, duration, ready_q, result_q):
    import os

    if mode == "client":
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_POOL_MAXSIZE"] = str(max(10, len(run_ids)))
        if auth:
            os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = auth
        import mlflow  # noqa: F401  (imported before "ready": import time is outside the window)
    lock = threading.Lock()
    out = {"lat": [], "errors": 0, "first_errors": []}
    threads = [threading.Thread(target=_client, args=(url, auth, kind, mode, r, go, start_box, warmup, duration, out,
                                                      lock)) for r in run_ids]
    for t in threads:
        t.start()
    import requests  # noqa: F401  (imported before "ready" so that import time is outside the window)

    ready_q.put(1)
    for t in threads:
        t.join()
    result_q.put(out)


def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def run_load(url: str, auth: tuple[str, str] | None, kind: str, run_ids: list[str], warmup: float,
             duration: float, mode: str = "raw", sample=None) -> dict:
    """Run len(run_ids) concurrent clients ("raw" or "client" mode); returns rps, p50_ms, p99_ms, errors, n.
    `sample()` (optional) is called at the start and the end of the measurement window; both results
    are returned ("window": [start, end])."""
    n = len(run_ids)
    procs_n = min(n, MAX_PROCS)
    ctx = mp.get_context("spawn")
    go, start_box = ctx.Event(), ctx.Value("d", 0.0)
    ready_q, result_q = ctx.Queue(), ctx.Queue()
    groups = [run_ids[i::procs_n] for i in range(procs_n)]
    procs = [ctx.Process(target=_proc_main, args=(url, auth, kind, mode, g, go, start_box, warmup, duration, ready_q,
                                                  result_q), daemon=True) for g in groups]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready_q.get(timeout=300)
        start_box.value = t_start = time.time() + 0.2
        go.set()
        window: list = []

        def sampler():
            for t in (t_start + warmup, t_start + warmup + duration):
                time.sleep(max(0.0, t - time.time()))
                window.append(sample())

        sampler_thread = threading.Thread(target=sampler, daemon=True) if sample else None
        if sampler_thread:
            sampler_thread.start()
        lat, errors, first = [], 0, []
        for _ in procs:
            out = result_q.get(timeout=warmup + duration + 180)
            lat.extend(out["lat"])
            errors += out["errors"]
            first.extend(out["first_errors"])
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
    if sampler_thread:
        sampler_thread.join(timeout=10)
    return {"clients": n, "kind": kind, "mode": mode, "n": len(lat), "rps": len(lat) / duration,
            "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000,
            "errors": errors, "first_errors": first[:3], "window": window}
