"""Database connection pool sizing: a pure function, shared by the settings check and the
composition (which passes the result to the task as ``MLFLOW_SQLALCHEMYSTORE_*``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

BUDGET_SHARE = 0.8
"""Share of Aurora's ``max_connections`` the fleet may use at full scale-out."""
RESERVED_CONNECTIONS = 5
"""Kept free for schema migrations and operators."""
ENGINES_PER_WORKER = 2
"""Each uvicorn worker holds two SQLAlchemy engines: the tracking store and the basic-auth store."""
MAX_POOL_SIZE = 10
"""Per engine. Kept connections, no overflow: bench/ measured pool 10 + overflow 0 against 5 + 5
(the same ceiling): within noise at 1 and 8 clients, 116.6 vs 75.6 log_metric calls/s at 32 clients, because
SQLAlchemy opens and closes overflow connections under load (README "Performance")."""


@dataclass(frozen=True)
class PoolSizing:
    pool_size: int
    """``MLFLOW_SQLALCHEMYSTORE_POOL_SIZE``: connections kept per engine."""
    max_overflow: int
    """``MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW``: extra connections per engine under load."""
    connection_limit: int
    """The estimated ``max_connections`` of the database the sizing used."""
    fleet_connections: int
    """``max_tasks × workers × 2 × (pool_size + max_overflow)``: the most the fleet can open."""


class PoolTooSmall(ValueError):
    """Not even one connection per SQLAlchemy engine fits Aurora's connection limit."""

    def __init__(self, message: str, max_tasks_that_fit: int, connection_limit: int) -> None:
        super().__init__(message)
        self.max_tasks_that_fit = max_tasks_that_fit
        self.connection_limit = connection_limit


def aurora_connection_limit(engine: str, min_acu: float, max_acu: float) -> int:
    """Conservative estimate of Aurora Serverless v2's ``max_connections``.

    Assumption (AWS documentation on Aurora Serverless v2 connections): ``max_connections`` is
    derived from the memory of the *maximum* ACU (2 GiB per ACU), so that connections survive
    scaling down, and is capped at 2000 when the minimum is 0 or 0.5 ACU.
    ``DBInstanceClassMemory`` is taken as 75% of the nominal memory (RDS reserves the rest),
    which reproduces the documented limits of small instance classes (MySQL: 45 at 2 GiB,
    90 at 4 GiB) and is lower than the real value for larger ones. Default parameter groups:

    - Aurora MySQL: ``GREATEST(log2(mem/805306368)*45, log2(mem/8187281408)*1000)``
    - Aurora PostgreSQL: ``LEAST(mem/9531392, 5000)``
    """
    mem = max_acu * 2 * 1024**3 * 0.75
    if engine == "mysql":
        limit = max(math.log2(mem / 805306368) * 45, math.log2(mem / 8187281408) * 1000)
    elif engine == "postgresql":
        limit = min(mem / 9531392, 5000)
    else:
        raise ValueError(f"engine: mysql or postgresql, got {engine!r}")
    limit = max(int(limit), 0)
    return min(limit, 2000) if min_acu <= 0.5 else limit


def pool_sizing(*, engine: str, min_acu: float, max_acu: float, max_tasks: int, workers: int) -> PoolSizing:
    """Pool size and overflow per SQLAlchemy engine that keep the whole fleet within Aurora's
    connection limit at full scale-out::

        budget     = floor(0.8 × limit) − 5
        engines    = max_tasks × workers × 2
        per_engine = floor(budget / engines)
        pool       = min(per_engine, 10)
        overflow   = 0

    hence ``max_tasks × workers × 2 × pool <= budget``.

    :raises PoolTooSmall: when ``per_engine < 1``.
    """
    if workers < 1:
        raise ValueError(f"workers: at least 1, got {workers!r}")
    limit = aurora_connection_limit(engine, min_acu, max_acu)
    budget = math.floor(BUDGET_SHARE * limit) - RESERVED_CONNECTIONS
    tasks = max(max_tasks, 1)
    engines = tasks * workers * ENGINES_PER_WORKER
    per_engine = budget // engines if budget > 0 else 0
    if per_engine < 1:
        fit = max(budget, 0) // (workers * ENGINES_PER_WORKER)
        raise PoolTooSmall(
            f"{tasks} tasks × {workers} workers × {ENGINES_PER_WORKER} connection pools do not fit the "
            f"about {limit} connections of Aurora at {max_acu:g} ACU (at most {fit} tasks fit)",
            fit, limit)
    pool = min(MAX_POOL_SIZE, per_engine)
    return PoolSizing(pool, 0, limit, engines * pool)
