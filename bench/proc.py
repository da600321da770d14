"""Process-tree and directory measurements from /proc (psutil is not a dependency).

A server is started in a session of its own (`start_new_session=True`), so "the server's
process tree" is every live process of that session: `mlflow server`, uvicorn's supervisor,
its workers and, for stock MLflow, the GenAI job runner and its huey consumers.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes whose session id is `sid`."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            # fields after the command name "(...)": state ppid pgrp session ...
            rest = stat[stat.rindex(")") + 2:].split()
            if rest[0] != "Z" and int(rest[3]) == sid:
                pids.append(int(entry.name))
    return sorted(pids)


def _field_kib(path: str, name: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    return 0


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS over `pids` (KiB). Shared pages count once per process (an upper bound)."""
    return sum(_field_kib(f"/proc/{p}/status", "VmRSS:") for p in pids)


def pss_kib(pids: list[int]) -> int:
    """Sum of PSS over `pids` (KiB, /proc/<pid>/smaps_rollup): shared pages split fairly."""
    return sum(_field_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)


def dir_bytes(path: Path) -> int:
    """Bytes allocated under `path` (st_blocks, so sparse or still-growing files count as written)."""
    total = 0
    stack = [str(path)]
    while stack:
        d = stack.pop()
        with contextlib.suppress(OSError):
            for e in os.scandir(d):
                with contextlib.suppress(OSError):
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    else:
                        total += e.stat(follow_symlinks=False).st_blocks * 512
    return total


class Sampler:
    """Samples a session's summed RSS and a directory's size every `interval` s in a thread.

        with Sampler(sid, spool) as s:
            ...transfer...
        s.rss_growth_kib, s.peak_dir_bytes
    """

    def __init__(self, sid: int, directory: Path | None, interval: float = 0.1) -> None:
        self.sid, self.directory, self.interval = sid, directory, interval
        self.base_rss_kib = rss_kib(session_pids(sid))
        self.peak_rss_kib = self.base_rss_kib
        self.peak_dir_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_rss_kib = max(self.peak_rss_kib, rss_kib(session_pids(self.sid)))
        if self.directory is not None:
            self.peak_dir_bytes = max(self.peak_dir_bytes, dir_bytes(self.directory))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    @property
    def rss_growth_kib(self) -> int:
        return max(0, self.peak_rss_kib - self.base_rss_kib)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of `pids` (their own, not reaped children), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{p}/stat").read_text()
            rest = stat[stat.rindex(")") + 2:].split()
            total += int(rest[11]) + int(rest[12])
    return total / tick


def wait(seconds: float) -> None:
    time.sleep(max(0.0, seconds))


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (busy = total - idle - iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(f[:8])  # user nice system idle iowait irq softirq steal
    return total - f[3] - f[4], total


def cpu_sample(sid: int) -> dict:
    """The server tree's CPU seconds and the machine's busy/total jiffies, now."""
    busy, total = machine_jiffies()
    return {"server_cpu_s": cpu_seconds(session_pids(sid)), "busy": busy, "total": total}


def cpu_delta(a: dict, b: dict, calls: int) -> dict:
    """Server CPU ms per call and machine busy % between two cpu_sample()s."""
    dt = b["total"] - a["total"]
    return {"server_cpu_ms_per_call": 1000 * (b["server_cpu_s"] - a["server_cpu_s"]) / calls if calls else None,
            "server_cpu_s": b["server_cpu_s"] - a["server_cpu_s"],
            "machine_busy_pct": 100 * (b["busy"] - a["busy"]) / dt if dt else None}


def cpu_calibration(reps: int = 5) -> float:
    """Milliseconds (median of `reps`) of one fixed, single-threaded pure-Python workload: a yardstick
    of how fast this machine's CPU is now, so that runs on different days (or a neighbour stealing
    the CPU) can be told apart from a change in the code. Only comparable on the same Python."""
    import json
    import statistics

    doc = {"runs": [{"info": {"run_id": f"{i:032x}", "start_time": 1_764_547_200_000 + i, "status": "FINISHED"},
                     "data": {"metrics": [{"key": "loss", "value": i / 7, "step": i}],
                              "params": [{"key": "lr", "value": "0.01"}]}} for i in range(2000)]}
    times = []
    for _ in range(reps):
        t0 = time.process_time()
        text = json.dumps(doc, indent=2)
        total = sum(len(line) for line in text.splitlines())
        total += sum(i * i % 7 for i in range(300_000))
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1000
