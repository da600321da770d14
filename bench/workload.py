"""Set-up and single-client measurements: runs, search, keep-alive, artifact transfers."""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from bench.proc import Sampler, dir_bytes

MiB = 1024 * 1024


def api(srv, method: str, path: str, **body) -> dict:
    r = requests.request(method, f"{srv.url}/api/2.0/mlflow/{path}", json=body or None, auth=srv.auth, timeout=120)
    if r.status_code != 200:
        raise RuntimeError(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


TRAINER = ("trainer", "bench-Tra1ner-pa55word")


def create_trainer(srv) -> tuple[str, str]:
    """A regular (non-admin) user, as a training job would use: admins skip MLflow's permission
    checks, regular users do not. It creates the experiments, so it owns them (MANAGE)."""
    r = requests.post(f"{srv.url}/api/2.0/mlflow/users/create", auth=srv.auth, timeout=60,
                      json={"username": TRAINER[0], "password": TRAINER[1]})
    if r.status_code != 200:
        raise RuntimeError(f"users/create: HTTP {r.status_code}: {r.text[:300]}")
    return TRAINER


def first_calls(srv, run_id: str, n: int) -> dict:
    """The first `n` log_metric calls of one client right after start-up (cold workers, a new
    connection): req/s, p50, p99 and the share of calls slower than 35 ms (delayed-ACK stalls)."""
    from bench.load import percentile

    s = requests.Session()
    s.auth = srv.auth
    lat, errors = [], 0
    base = int(time.time() * 1000)
    for i in range(n):
        t0 = time.perf_counter()
        r = s.post(f"{srv.url}/api/2.0/mlflow/runs/log-metric", timeout=60,
                   json={"run_id": run_id, "key": "first", "value": 1.0, "timestamp": base + i, "step": i})
        lat.append(time.perf_counter() - t0)
        errors += r.status_code != 200
    return {"clients": 1, "n": n, "rps": n / sum(lat), "p50_ms": percentile(lat, 50) * 1000,
            "p99_ms": percentile(lat, 99) * 1000, "errors": errors,
            "stalled_pct": 100 * sum(x > 0.035 for x in lat) / n}


def create_experiment(srv, name: str) -> str:
    return api(srv, "POST", "experiments/create", name=name)["experiment_id"]


def create_runs(srv, experiment_id: str, n: int) -> list[str]:
    s = requests.Session()
    s.auth = srv.auth
    ids = []
    for i in range(n):
        r = s.post(f"{srv.url}/api/2.0/mlflow/runs/create", timeout=60,
                   json={"experiment_id": experiment_id, "run_name": f"load-{i}", "start_time": int(time.time() * 1000)})
        r.raise_for_status()
        ids.append(r.json()["run"]["info"]["run_id"])
    return ids


# ---------------------------------------------------------------------------------------------
# 10,000 runs, inserted directly (creating them through the API would take minutes per contender)
# ---------------------------------------------------------------------------------------------
def insert_runs(db, user: str, password: str, database: str, experiment_id: str, n: int, seed: int = 7) -> float:
    """Insert `n` finished runs into `experiment_id` as MLflow's SQL store would write them: two
    metrics (history and latest), two params, two tags each. Same data for every contender."""
    import pymysql

    rnd = random.Random(seed)
    conn = pymysql.connect(host="127.0.0.1", port=db.port, user=user, password=password, database=database,
                           autocommit=False)
    t0 = time.monotonic()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT artifact_location FROM experiments WHERE experiment_id = %s", (experiment_id,))
            location = cur.fetchone()[0]
            now = int(time.time() * 1000) - n * 1000
            runs, metrics, params, tags = [], [], [], []
            for i in range(n):
                rid = uuid.UUID(int=rnd.getrandbits(128)).hex
                start = now + i * 1000
                runs.append((rid, f"run-{i}", "LOCAL", "bench", "", "bench", "FINISHED", start, start + 60_000,
                             None, "", "active", f"{location}/{rid}/artifacts", int(experiment_id)))
                for key, value in (("loss", rnd.random()), ("accuracy", rnd.random())):
                    metrics.append((key, value, start + 60_000, 99, 0, rid))
                params += [("lr", rnd.choice(("0.1", "0.01", "0.001")), rid), ("batch_size", str(rnd.choice((32, 64, 128))), rid)]
                tags += [("mlflow.runName", f"run-{i}", rid), ("team", rnd.choice(("vision", "nlp", "speech")), rid)]
            cur.executemany(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
                "start_time, end_time, deleted_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", runs)
            for table in ("metrics", "latest_metrics"):
                cur.executemany(f"INSERT INTO {table} (`key`, value, timestamp, step, is_nan, run_uuid) "
                                "VALUES (%s, %s, %s, %s, %s, %s)", metrics)
            cur.executemany("INSERT INTO params (`key`, value, run_uuid) VALUES (%s, %s, %s)", params)
            cur.executemany("INSERT INTO tags (`key`, value, run_uuid) VALUES (%s, %s, %s)", tags)
        conn.commit()
    finally:
        conn.close()
    return time.monotonic() - t0


SEARCHES = {
    "page": {"max_results": 1000},
    "filter": {"filter": "metrics.loss < 0.5 and params.lr = '0.01'", "order_by": ["metrics.loss ASC"],
               "max_results": 1000},
}


def search_p50(srv, experiment_id: str, reps: int) -> dict:
    """p50 (ms) of one search_runs page (1,000 rows) over the experiment's 10,000 runs: the default
    order, and a metric+param filter ordered by a metric. One warm-up call each."""
    s = requests.Session()
    s.auth = srv.auth
    out = {}
    for name, body in SEARCHES.items():
        times, rows = [], 0
        for i in range(reps + 1):
            t0 = time.perf_counter()
            r = s.post(f"{srv.url}/api/2.0/mlflow/runs/search", json={"experiment_ids": [experiment_id], **body},
                       timeout=120)
            dt = time.perf_counter() - t0
            r.raise_for_status()
            rows = len(r.json().get("runs", []))
            if i:
                times.append(dt)
        out[name] = {"p50_ms": statistics.median(times) * 1000, "rows": rows}
    return out


# ---------------------------------------------------------------------------------------------
# keep-alive: does the server keep an idle connection open longer than the ALB's idle timeout?
# ---------------------------------------------------------------------------------------------
def keepalive_probe(url: str, idle: float) -> bool:
    """True if a keep-alive connection is still open after `idle` seconds without traffic."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += s.recv(4096)
        time.sleep(idle)
        s.setblocking(False)
        try:
            return s.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# artifacts
# ---------------------------------------------------------------------------------------------
def make_file(path: Path, size: int) -> Path:
    chunk = 8 * MiB
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(os.urandom(min(chunk, left)))
            left -= chunk
    return path


def _mbps(size: int, seconds: float) -> float:
    return size / MiB / seconds


def direct_s3(s3, bucket: str, key: str, src: Path, dst: Path) -> dict:
    """boto3 straight to the S3 server (default TransferConfig: multipart, 10 threads)."""
    c = s3.client()
    size = src.stat().st_size
    t0 = time.perf_counter()
    c.upload_file(str(src), bucket, key)
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    c.download_file(bucket, key, str(dst))
    down = time.perf_counter() - t0
    ok = dst.stat().st_size == size
    dst.unlink()
    c.delete_object(Bucket=bucket, Key=key)
    return {"upload_mbps": _mbps(size, up), "download_mbps": _mbps(size, down), "ok": ok}


def proxy_raw(srv, path: str, src: Path, dst: Path) -> dict:
    """PUT then GET /api/2.0/mlflow-artifacts/artifacts/<path> (what a forced-proxy client does for
    one file), streaming from/to disk; samples the server tree's RSS and its spool dir."""
    size = src.stat().st_size
    url = f"{srv.url}/api/2.0/mlflow-artifacts/artifacts/{path}"
    out = {}
    for direction in ("upload", "download"):
        base_spool = dir_bytes(srv.spool)
        with Sampler(srv.sid, srv.spool) as smp:
            t0 = time.perf_counter()
            if direction == "upload":
                with open(src, "rb") as f:
                    r = requests.put(url, data=f, auth=srv.auth, timeout=1800)
                ok = r.status_code == 200
            else:
                with requests.get(url, auth=srv.auth, stream=True, timeout=1800) as r, open(dst, "wb") as f:
                    for chunk in r.iter_content(1 * MiB):
                        f.write(chunk)
                ok = r.status_code == 200 and dst.stat().st_size == size
            dt = time.perf_counter() - t0
        out[direction] = {"mbps": _mbps(size, dt), "ok": ok, "status": r.status_code,
                          "rss_growth_mib": smp.rss_growth_kib / 1024,
                          "spool_peak_mib": max(0, smp.peak_dir_bytes - base_spool) / MiB}
    dst.unlink(missing_ok=True)
    return out


CLIENT_SCRIPT = r"""
import json, os, sys, time
from mlflow import MlflowClient
src, dst, run_id = sys.argv[1:4]
c = MlflowClient()
size = os.path.getsize(src)
t0 = time.perf_counter(); c.log_artifact(run_id, src); up = time.perf_counter() - t0
t0 = time.perf_counter(); p = c.download_artifacts(run_id, os.path.basename(src), dst); down = time.perf_counter() - t0
print(json.dumps({"upload_s": up, "download_s": down, "ok": os.path.getsize(p) == size}))
"""


def mlflow_client(srv, s3, run_id: str, src: Path, dst_dir: Path, forced_proxy: bool, timeout: float = 900) -> dict:
    """The MLflow client (log_artifact + download_artifacts) in a subprocess. Default path (both
    variables unset: the client follows the server's /api/3.0/mlflow/server-info, which advertises
    multipart for S3): presigned S3 URLs for every download and for uploads >= 500 MiB, a proxied PUT
    below that (tests/server/test_artifact_paths.py; the client has a route to S3 but no AWS
    credentials); forced proxy: MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD/DOWNLOAD=false."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_"))}
    env.update(MLFLOW_TRACKING_URI=srv.url, NO_PROXY="127.0.0.1,localhost")
    if srv.auth:
        env.update(MLFLOW_TRACKING_USERNAME=srv.auth[0], MLFLOW_TRACKING_PASSWORD=srv.auth[1])
    if forced_proxy:
        env.update(MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD="false", MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD="false")
    size = src.stat().st_size
    dst_dir.mkdir(parents=True, exist_ok=True)
    base_spool = dir_bytes(srv.spool)
    with Sampler(srv.sid, srv.spool) as smp:
        p = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, str(src), str(dst_dir), run_id], env=env,
                           capture_output=True, text=True, timeout=timeout)
    for f in dst_dir.iterdir():
        f.unlink()
    if p.returncode != 0:
        return {"ok": False, "error": (p.stderr or p.stdout).strip().splitlines()[-1:]}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"ok": r["ok"], "upload_mbps": _mbps(size, r["upload_s"]), "download_mbps": _mbps(size, r["download_s"]),
            "rss_growth_mib": smp.rss_growth_kib / 1024,
            "spool_peak_mib": max(0, smp.peak_dir_bytes - base_spool) / MiB}
