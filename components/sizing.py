"""Database connection pool sizing: a pure function, shared by the settings check and the
composition (which passes the result to the task as ``MLFLOW_SQLALCHEMYSTORE_*``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

BUDGET_SHARE = 0.8
"""Share of Aurora's ``max_connections`` the fleet may use at full scale-out."""
RESERVED_CONNECTIONS = 5
"""Kept free for schema migrations and operators."""
ENGINES_PER_WORKER = 3
"""SQLAlchemy engines (each with its own pool) that every uvicorn worker opens: MLflow's tracking
store, model registry store and basic-auth store (measured with MLflow 3.17.2)."""
JOB_ENGINES_PER_WORKER = 1
"""One more per worker with MLflow's job runner on (``enableJobExecution``): the jobs store."""
SERVER_PROCESS_CONNECTIONS = 3
"""Per task: the ``mlflow server`` process itself, one connection per store it opens before it
starts uvicorn: the tracking and model registry stores (``initialize_backend_stores`` in
``mlflow/cli``) and, with MLflow's ``basic-auth`` app (the app the image runs when the job runner
is on), the auth store that creates the admin user. Measured (processlist by client port): 2 with
the auth fast path, 3 with ``basic-auth``; kept until the idle release closes them."""
MAX_POOL_SIZE = 10
"""Per engine. Kept connections, no overflow (the image honours overflow 0: image/plugins/mlflow_db_pool).
The first bench comparison measured MLflow's 10 + 10 under the name 10 + 0; re-measured with the
overflow honoured (bench/pool-rerun-1.md, -2.md, a 2-vCPU machine busy with other work) 10 + 0 and
5 + 5 are within noise at 8 and 32 clients, and 10 + 0 never opens or closes a connection under load
(peak 42 per task at 32 clients, all kept; 5 + 5: 36-39 at the peak, 26-27 kept)."""


@dataclass(frozen=True)
class PoolSizing:
    pool_size: int
    """``MLFLOW_SQLALCHEMYSTORE_POOL_SIZE``: connections kept per engine."""
    max_overflow: int
    """``MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW``: extra connections per engine under load."""
    connection_limit: int
    """The estimated ``max_connections`` of the database the sizing used."""
    engines_per_worker: int
    """SQLAlchemy engines per uvicorn worker: 3, or 4 with the job runner."""
    task_connections: int
    """``workers × engines_per_worker × (pool_size + max_overflow) + 3``: the most one task opens."""
    fleet_connections: int
    """``max_tasks × task_connections``: the most the fleet can open."""


def engines_per_worker(job_execution: bool = False) -> int:
    """SQLAlchemy engines one uvicorn worker opens (:data:`ENGINES_PER_WORKER`, plus the jobs store)."""
    return ENGINES_PER_WORKER + (JOB_ENGINES_PER_WORKER if job_execution else 0)


def task_connections(*, workers: int, pool_size: int, max_overflow: int, job_execution: bool = False) -> int:
    """The most database connections one server task opens: every engine of every worker full
    (pool and overflow), plus the ``mlflow server`` process's own (:data:`SERVER_PROCESS_CONNECTIONS`).
    The image makes the configured overflow the effective one (image/plugins/mlflow_db_pool)."""
    return workers * engines_per_worker(job_execution) * (pool_size + max_overflow) + SERVER_PROCESS_CONNECTIONS


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


def pool_sizing(*, engine: str, min_acu: float, max_acu: float, max_tasks: int, workers: int,
                job_execution: bool = False) -> PoolSizing:
    """Pool size and overflow per SQLAlchemy engine that keep the whole fleet within Aurora's
    connection limit at full scale-out::

        budget     = floor(0.8 × limit) − 5
        engines    = workers × (3, or 4 with the job runner)          per task
        per_engine = floor((floor(budget / max_tasks) − 3) / engines)
        pool       = min(per_engine, 10)
        overflow   = 0

    hence ``max_tasks × (workers × engines × pool + 3) <= budget``.

    :raises PoolTooSmall: when ``per_engine < 1``.
    """
    if workers < 1:
        raise ValueError(f"workers: at least 1, got {workers!r}")
    limit = aurora_connection_limit(engine, min_acu, max_acu)
    budget = math.floor(BUDGET_SHARE * limit) - RESERVED_CONNECTIONS
    tasks = max(max_tasks, 1)
    per_worker = engines_per_worker(job_execution)
    engines = workers * per_worker
    per_task = budget // tasks if budget > 0 else 0
    per_engine = max(per_task - SERVER_PROCESS_CONNECTIONS, 0) // engines
    if per_engine < 1:
        fit = max(budget, 0) // (engines + SERVER_PROCESS_CONNECTIONS)
        raise PoolTooSmall(
            f"{tasks} tasks × {workers} workers × {per_worker} connection pools do not fit the "
            f"about {limit} connections of Aurora at {max_acu:g} ACU (at most {fit} tasks fit)",
            fit, limit)
    pool = min(MAX_POOL_SIZE, per_engine)
    one_task = task_connections(workers=workers, pool_size=pool, max_overflow=0, job_execution=job_execution)
    return PoolSizing(pool, 0, limit, per_worker, one_task, tasks * one_task)
