"""What every peer in tests/support/peers.py shares: a free port on 127.0.0.1, waiting for it to
listen, stopping a process for good, and the life cycle of a peer (a temporary directory of its own,
a process, start/stop/restart, a context manager). Nothing here listens on or connects to anything
but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class PeerError(RuntimeError):
    """A peer could not be started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PeerError(f"{what or 'process'} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise PeerError(f"{what or 'process'} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """`sig` (SIGTERM), then SIGKILL after `timeout`; always reaps the process."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _is_root() -> bool:
    return os.geteuid() == 0


def _which(*candidates: str) -> str:
    for name in candidates:
        path = shutil.which(name) or (name if os.path.isabs(name) and os.access(name, os.X_OK) else None)
        if path:
            return path
    raise PeerError(f"none of {', '.join(candidates)} is installed (bin/setup installs them)")


class _Peer:
    """Common life cycle: a temporary directory, a process, start/stop/restart, context manager."""

    name = "peer"
    stop_signal = signal.SIGTERM

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix=f"mlflow-{self.name}-"))
        self.port = free_port()
        self.host = LOOPBACK
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / f"{self.name}.log"

    # subclasses implement _spawn() and may override _prepare() (first start only)
    def _prepare(self) -> None:  # pragma: no cover - trivial default
        pass

    def _spawn(self) -> subprocess.Popen:  # pragma: no cover - abstract
        raise NotImplementedError

    def _ready(self) -> None:
        wait_for_port(self.port, 60, self.proc, self.name)

    def start(self) -> "_Peer":
        if not getattr(self, "_prepared", False):
            self._prepare()
            self._prepared = True
        self.proc = self._spawn()
        try:
            self._ready()
        except Exception:
            self.stop()
            raise PeerError(f"{self.name} did not start; its log:\n{self.log_tail()}") from None
        return self

    def stop(self) -> None:
        stop_process(self.proc, sig=self.stop_signal)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
