"""The server image's size, layers, biggest packages and start-up time (docs/image.md, "Size").

    .venv/bin/python -m bench.image_size [LABEL=]TAG ... [--runs N] [--json PATH]   # default 5 runs per tag

LABEL names the image in bench/image_size.json (default: the tag itself); bench/report.py puts the
images labelled `project`, `before` and `stock` (a plain `pip install mlflow[auth]` image, if one was
measured) in the main table of bench/RESULTS.md. Example:

    .venv/bin/python -m bench.image_size before=mlflow-server:old project=mlflow-server:new --runs 5

For each image tag (built beforehand: `docker build -t mlflow-server:x image/`, or the Dockerfile of
another commit): its size (docker image inspect), its layers (docker history), the 15 biggest entries of
site-packages (du in a container), and N times the seconds from `docker run` to GET /health 200.
Start-up runs in embedded mode (nothing configured: SQLite state and local artifacts in the spool, see
image/entrypoint.py), locked down as the ECS task is (uid 10001, read-only root, no capabilities),
--network host on a free 127.0.0.1 port. The first run of each tag creates its spool volume (schemas
migrated, state written) and is not counted; the N counted runs reuse it, i.e. start on an existing
schema as a service's tasks do. Tags are interleaved run by run so that a busy machine slows all alike.
Prints median / min / max and writes them, with each image's size and layers, to --json
(default bench/image_size.json); nothing is asserted (measurements, not tests).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid

from tests.support.peers import LOOPBACK, free_port
from tests.support.server import health

SPOOL = "/var/spool/mlflow"


def docker(*args: str, timeout: float = 300) -> str:
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}: {p.stderr.strip()[-2000:]}")
    return p.stdout


def describe(tag: str) -> dict:
    size = json.loads(docker("image", "inspect", tag))[0]["Size"]
    print(f"\n== {tag}: {size / 1e6:.0f} MB")
    info = {"tag": tag, "size_mb": round(size / 1e6, 1), "layers": []}
    for line in docker("history", "--format", "{{.Size}}\t{{.CreatedBy}}", tag).splitlines():
        size, _, created = line.partition("\t")
        if size not in ("0B", "0"):
            print(f"  layer {size:>8}  {created[:90]}")
            info["layers"].append([size, created[:200]])
    du = docker("run", "--rm", "--entrypoint", "sh", tag, "-c",
                "cd /usr/local/lib/python3.12/site-packages && du -sk . && du -sk -- * | sort -rn | head -15")
    print("  site-packages (KiB):", ", ".join(f"{n} {k}" for k, n in (line.split("\t") for line in du.splitlines())))
    info["site_packages_kib"] = {n: int(k) for k, n in (line.split("\t") for line in du.splitlines())}
    return info


def start_once(tag: str, volume: str) -> float:
    port = free_port()
    name = f"mlflow-bench-size-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    docker("run", "-d", "--name", name, "--user", "10001:10001", "--read-only", "-v", f"{volume}:{SPOOL}",
           "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "host",
           "-e", f"MLFLOW_PORT={port}", "-e", "MLFLOW_HOST=127.0.0.1", tag)
    try:
        url = f"http://{LOOPBACK}:{port}"
        while health(url, timeout=1.0) != 200:
            if time.monotonic() - t0 > 300:
                raise RuntimeError(f"{tag}: no /health 200 within 300 s")
            time.sleep(0.1)
        return time.monotonic() - t0
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)


def main(argv: list[str]) -> int:
    runs = 5
    if "--runs" in argv:
        i = argv.index("--runs")
        runs = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    out_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "image_size.json")
    if "--json" in argv:
        i = argv.index("--json")
        out_path = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    labels = dict(a.split("=", 1) if "=" in a else (a, a) for a in argv[1:])  # label -> tag
    tags = list(labels.values())
    if not tags:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    images = {label: describe(tag) for label, tag in labels.items()}
    volumes = {tag: f"mlflow-bench-size-{os.getpid()}-{i}" for i, tag in enumerate(tags)}
    times: dict[str, list[float]] = {tag: [] for tag in tags}
    try:
        for tag, volume in volumes.items():
            docker("volume", "create", volume)
            print(f"\n{tag}: first start (creates the state): {start_once(tag, volume):.1f} s")
        for _ in range(runs):
            for tag in tags:
                times[tag].append(start_once(tag, volumes[tag]))
    finally:
        for volume in volumes.values():
            subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, timeout=120)
    print(f"\ndocker run -> /health 200 on an existing state, {runs} runs (os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}):")
    for tag, t in times.items():
        print(f"  {tag}: median {statistics.median(t):.1f} s, min {min(t):.1f}, max {max(t):.1f} "
              f"({', '.join(f'{x:.1f}' for x in t)})")
    for info in images.values():
        t = times[info["tag"]]
        info["start_s"] = {"runs": [round(x, 2) for x in t], "median": round(statistics.median(t), 2) if t else None}
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
              "loadavg": round(os.getloadavg()[0], 1), "runs": runs, "images": images}
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
