"""A large artifact round trip (default 5 GiB) through the project's server: the MLflow client
forced onto the proxy, and the MLflow client's default path, with the spool's peak.

    .venv/bin/python -m bench.big_artifact --mib 600       # bench/big-artifact.json + .md (~3 min here)
    .venv/bin/python -m bench.big_artifact                 # 5 GiB: against real S3-like speeds only

moto's S3 server runs with `S3Server(complete_like_s3=True)` (tests/support/s3_like.py): it answers
CompleteMultipartUpload as Amazon S3 does (S3 API Reference, CompleteMultipartUpload: a 200 at once,
white space while the object is assembled, then the result or the error). Plain moto sends nothing
until the object is assembled, and a 5 GiB object took it longer than botocore's 60 s read timeout
(botocore's retry failed, the server answered 500, the client sent the file again; docs/performance.md,
"Large artifacts and the spool"). Proxied downloads stream from S3 (image/plugins/
mlflow_stream_download): before that, the server read the whole object into the spool before the
first byte, and on a loaded 2-vCPU machine moto served a 2 GiB object slower than the MLflow client's
120 s request timeout (MLFLOW_HTTP_REQUEST_TIMEOUT) allows a download to wait for that byte.

Starts one MariaDB and one moto S3 server on 127.0.0.1 and the project's entrypoint (auth on,
defaults, the spool in the server's temporary dir on this machine's disk: "a spool large enough").
One file of random bytes is uploaded with `MlflowClient().log_artifact` and read back with
`download_artifacts` (bench/workload.py, mlflow_client), twice:

* forced proxy: `MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=false`, `..._DOWNLOAD=false`: one `PUT`
  of `/api/2.0/mlflow-artifacts/artifacts/...`, staged whole in the spool, and one `GET` of it,
  streamed from S3;
* the client's default (nothing set): it asks `/api/3.0/mlflow/server-info`, which advertises
  multipart for S3, so a file of 500 MiB or more goes to S3 through presigned part URLs and every
  download reads a presigned URL (tests/server/test_artifact_paths.py shows the requests).

Spool peak: the most bytes in the server's TMPDIR during the round trip (sampled every 0.1 s);
throughput: file size / wall time of each call, client start-up excluded. Every file it writes
(the source, the downloads, the bucket's objects) is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.servers import ProjectServer
from bench.workload import MiB, create_experiment, create_runs, make_file, mlflow_client
from tests.support.peers import MariaDB, S3Server

BENCH = Path(__file__).resolve().parent
BUCKET = "mlflow-bench-big"
DB_PASSWORD = "bench-db-pa55word"
LABELS = {"forced": "MLflow client forced onto the proxy (`MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD/DOWNLOAD=false`: "
                    "upload spooled whole, download streamed from S3)",
          "default": "MLflow client, default path (≥ 500 MiB: presigned S3 multipart upload; every download: "
                     "presigned S3 URL)"}


def big_artifact_round_trip(mib: int = 5 * 1024, cpus: str = "0-1", tmp: Path | None = None) -> dict:
    """Both round trips of one `mib` MiB file; returns {"forced": {...}, "default": {...}, ...}."""
    tmp = Path(tempfile.mkdtemp(prefix="mlflow-bench-big-", dir=tmp))
    out: dict = {"artifact_mib": mib, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        with MariaDB(max_connections=200) as db, S3Server(complete_like_s3=True) as s3:
            s3.create_bucket(BUCKET)
            name, auth_name = "bench_big", "bench_big_auth"
            for d in (name, auth_name):
                db.drop_database(d)
                db.create_database(d)
            db.create_user("bench", DB_PASSWORD, [name, auth_name])
            srv = ProjectServer(db, "bench", DB_PASSWORD, name, auth_name, s3, BUCKET, name, cpus)
            try:
                srv.start()
                run_id = create_runs(srv, create_experiment(srv, "big-artifact"), 1)[0]
                src = make_file(tmp / "big.bin", mib * MiB)
                for key, forced in (("forced", True), ("default", False)):
                    t0 = time.monotonic()
                    r = mlflow_client(srv, s3, run_id, src, tmp / "dl", forced_proxy=forced, timeout=7200)
                    r["wall_s"] = time.monotonic() - t0
                    r["label"] = LABELS[key]
                    out[key] = r
                    print(f"[bench big-artifact] {key}: {r}", flush=True)
                    c = s3.client()  # the next round trip starts from an empty run folder
                    for page in c.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=name):
                        for obj in page.get("Contents", []):
                            c.delete_object(Bucket=BUCKET, Key=obj["Key"])
            finally:
                srv.close()
                for d in (name, auth_name):
                    db.drop_database(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def rows(res: dict) -> list[str]:
    """Markdown table rows: path | upload MiB/s | download MiB/s | spool peak MiB | server RSS growth MiB."""
    gib = res["artifact_mib"] / 1024
    lines = []
    for key in ("forced", "default"):
        r = res.get(key) or {}
        if not r.get("ok"):
            lines.append(f"| {gib:g} GiB, {LABELS[key]} | failed: {r.get('error')} | | | |")
            continue
        lines.append(f"| {gib:g} GiB, {LABELS[key]} | {r['upload_mbps']:.0f} | {r['download_mbps']:.0f} | "
                     f"{r['spool_peak_mib']:,.0f} | {r['rss_growth_mib']:.0f} |")
    return lines


def render(res: dict) -> str:
    return "\n".join([
        f"# Large artifact round trip ({res['artifact_mib']:,} MiB), {res['date']}",
        "",
        "`python -m bench.big_artifact` (bench/big_artifact.py): the project's entrypoint (auth on, defaults), "
        "moto S3 (CompleteMultipartUpload answered as S3 does, tests/support/s3_like.py), MariaDB, all on 127.0.0.1; "
        "spool peak = most bytes in the server's TMPDIR during the round trip.",
        "",
        "| Path | upload MiB/s | download MiB/s | spool peak, MiB | server RSS growth, MiB |",
        "|---|---|---|---|---|",
        *rows(res),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.big_artifact", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=5 * 1024, help="artifact size in MiB (default 5120)")
    ap.add_argument("--cpus", default="0-1", help="taskset CPU list of the server")
    ap.add_argument("--out", default="big-artifact", help="bench/<OUT>.json and bench/<OUT>.md")
    args = ap.parse_args(argv)
    res = big_artifact_round_trip(args.mib, args.cpus)
    (BENCH / f"{args.out}.json").write_text(json.dumps(res, indent=1))
    text = render(res)
    (BENCH / f"{args.out}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
