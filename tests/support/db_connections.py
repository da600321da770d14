"""Count a database user's open connections on a peer (tests/support/peers.py), as a DBA would.

    with ConnectionSampler(mariadb, "mlflow_app") as sampler:   # samples every 20 ms in a thread
        ...load...
    sampler.peak, sampler.samples

    open_connections(postgresql, "mlflow_app")                 # one count, now

MariaDB/MySQL: ``information_schema.PROCESSLIST`` rows of that user; PostgreSQL:
``pg_stat_activity`` client backends of that role. The counting connection is the peer's
superuser over its unix socket, so it is never counted itself.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

_QUERIES = {
    "mysql": "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
    "postgresql": "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND backend_type = 'client backend'",
}


class _Counter:
    """One superuser connection (unix socket) that counts `user`'s connections on `db`."""

    def __init__(self, db, user: str) -> None:
        self.user = user
        self.query = _QUERIES[db.engine]
        self.conn = db._connect()  # the peer's superuser over the unix socket (autocommit)

    def __call__(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(self.query, (self.user,))
            return int(cur.fetchone()[0])

    def close(self) -> None:
        self.conn.close()


def open_connections(db, user: str) -> int:
    """How many connections `user` has open on `db` right now."""
    counter = _Counter(db, user)
    try:
        return counter()
    finally:
        counter.close()


def wait_for_count(db, user: str, predicate: Callable[[int], bool], timeout: float,
                   interval: float = 0.25) -> tuple[int, float]:
    """Poll until predicate(count) holds or `timeout` s pass: (last count, seconds waited)."""
    counter = _Counter(db, user)
    t0 = time.monotonic()
    try:
        while True:
            count = counter()
            waited = time.monotonic() - t0
            if predicate(count) or waited >= timeout:
                return count, waited
            time.sleep(interval)
    finally:
        counter.close()


class ConnectionSampler:
    """Samples `user`'s connection count every `interval` s in a daemon thread while in the
    `with` block; `peak` is the largest count seen, `samples` every (seconds, count)."""

    def __init__(self, db, user: str, interval: float = 0.02) -> None:
        self.db, self.user, self.interval = db, user, interval
        self.samples: list[tuple[float, int]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak(self) -> int:
        return max((c for _, c in self.samples), default=0)

    def _run(self) -> None:
        counter = _Counter(self.db, self.user)
        t0 = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    self.samples.append((time.monotonic() - t0, counter()))
                except Exception as e:  # noqa: BLE001 - reported by the caller through `errors`
                    self.errors.append(f"{type(e).__name__}: {e}")
                    return
                self._stop.wait(self.interval)
        finally:
            counter.close()

    def __enter__(self) -> "ConnectionSampler":
        self._thread = threading.Thread(target=self._run, daemon=True, name="connection-sampler")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
