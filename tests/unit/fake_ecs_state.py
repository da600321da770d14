"""The state behind the ECS stand-in (tests/unit/fake_ecs.py, whose docstring names the documents):
clusters, registered task definitions, tasks and services, the call log and denied operations, and
a clock of its own (nothing in a test really waits).

- A task's ``lastStatus`` at the clock's time (ECS Developer Guide, "Amazon ECS task lifecycle"):
  PROVISIONING -> PENDING -> ACTIVATING -> RUNNING -> DEACTIVATING -> STOPPING -> DEPROVISIONING ->
  STOPPED, each status lasting what its :class:`Outcome` says; a task that never started its
  container skips RUNNING.
- The service scheduler (:meth:`FakeAws.reconcile`) keeps ``desiredCount`` tasks of the service's
  task definition: a task it stops gets ``desiredStatus`` STOPPED at once and walks DEACTIVATING ->
  STOPPING -> DEPROVISIONING -> STOPPED; a new task definition replaces every task.

``FakeAws.ecs()`` and ``FakeAws.logs()`` are the API clients on this state (tests/unit/fake_ecs.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from botocore.exceptions import ClientError

REGION = "eu-west-1"
ACCOUNT = "123456789012"
LIFECYCLE = ("PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING")
EPOCH = datetime(2030, 1, 1, tzinfo=timezone.utc)


def _err(code: str, message: str, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


class Clock:
    """Monotonic seconds that move only when someone sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 60, f"an unbounded or odd poll interval: {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Outcome:
    """How the next task started will go."""

    durations: tuple[float, ...] = (20, 30, 5, 60, 5, 5, 10)
    """Seconds in each :data:`LIFECYCLE` status; ``float('inf')`` never leaves it."""
    exit_code: Optional[int] = 0
    """The container's exit code; ``None``: it never started."""
    stop_code: str = "EssentialContainerExited"
    stopped_reason: str = "Essential container in task exited"
    container_reason: Optional[str] = None
    log_lines: tuple[str, ...] = ()
    missing_polls: int = 1
    """DescribeTasks calls that do not know the task yet (eventual consistency)."""
    placement_failure: Optional[dict[str, str]] = None
    """A RunTask ``failures`` entry instead of a task."""


SERVICE_STOP = ("DEACTIVATING", "STOPPING", "DEPROVISIONING")


@dataclass
class Task:
    arn: str
    cluster_arn: str
    definition: str
    container: str
    started: float
    outcome: Outcome
    described: int = 0
    service: Optional[str] = None
    """The service that started it (its scheduler stops it)."""
    stop_requested: Optional[float] = None
    stop_durations: tuple[float, ...] = (30, 120, 10)
    """Seconds in DEACTIVATING, STOPPING, DEPROVISIONING after the scheduler stopped it."""


@dataclass
class Service:
    arn: str
    name: str
    cluster_arn: str
    desired: int
    definition: str
    status: str = "ACTIVE"
    stop_durations: tuple[float, ...] = (30, 120, 10)


@dataclass
class FakeAws:
    clock: Clock = field(default_factory=Clock)
    clusters: dict[str, str] = field(default_factory=dict)  # arn -> name
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # arn -> {container, network_mode, prefix, group}
    outcomes: list[Outcome] = field(default_factory=list)
    tasks: dict[str, Task] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    services: dict[str, Service] = field(default_factory=dict)  # arn -> service
    reconcilers: list[Any] = field(default_factory=list)
    """Called before each service-scheduler step (Application Auto Scaling's stand-in registers here)."""
    denied: set[str] = field(default_factory=set)
    """Operations the caller's IAM policy does not allow (``AccessDeniedException``)."""
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def cluster(self, name: str) -> str:
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{name}"
        self.clusters[arn] = name
        return arn

    def task_definition(self, family: str, container: str, log_group: str, prefix: str, revision: int = 1) -> str:
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}"
        self.definitions[arn] = {"container": container, "network_mode": "awsvpc", "group": log_group,
                                 "prefix": prefix}
        return arn

    def service(self, cluster_arn: str, name: str, definition: str, desired: int, **kw: Any) -> Service:
        """A running service with ``desired`` RUNNING tasks of ``definition``."""
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{self.clusters[cluster_arn]}/{name}"
        self.services[arn] = svc = Service(arn, name, cluster_arn, desired, definition, **kw)
        self.reconcile()
        return svc

    def service_tasks(self, svc: Service, desired_running: Optional[bool] = None) -> list[Task]:
        return [t for t in self.tasks.values() if t.service == svc.arn and
                (desired_running is None or (t.stop_requested is None) == desired_running)]

    def reconcile(self) -> None:
        """The service scheduler: keep ``desired`` tasks of the service's task definition."""
        for hook in self.reconcilers:
            hook()
        for svc in self.services.values():
            live = self.service_tasks(svc, desired_running=True)
            for task in live:
                if task.definition != svc.definition:
                    task.stop_requested = self.clock.time()
            live = [t for t in live if t.stop_requested is None]
            for task in live[svc.desired:]:
                task.stop_requested = self.clock.time()
            for _ in range(svc.desired - len(live)):
                arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{self.clusters[svc.cluster_arn]}/{next(self._ids):032x}"
                d = self.definitions[svc.definition]
                self.tasks[arn] = Task(arn, svc.cluster_arn, svc.definition, d["container"], self.clock.time(),
                                       Outcome(missing_polls=0, stop_code="ServiceSchedulerInitiated",
                                               stopped_reason="Scaling activity initiated by deployment"),
                                       service=svc.arn, stop_durations=svc.stop_durations)

    def ecs(self) -> "FakeEcs":
        from tests.unit.fake_ecs import FakeEcs

        return FakeEcs(self)

    def logs(self) -> "FakeLogs":
        from tests.unit.fake_ecs import FakeLogs

        return FakeLogs(self)

    def call(self, op: str, req: dict[str, Any], service: str) -> None:
        self.calls.append((op, req))
        if op in self.denied:
            raise _err("AccessDeniedException", f"User: arn:aws:iam::{ACCOUNT}:user/ci is not authorized to perform: "
                       f"{service}:{op} because no identity-based policy allows the {service}:{op} action", op)

    def ops(self, name: str) -> list[dict[str, Any]]:
        return [req for op, req in self.calls if op == name]

    # -- the task's state at the current time

    def status(self, task: Task) -> str:
        if task.service is not None:
            if task.stop_requested is None:
                return "RUNNING"
            elapsed = self.clock.time() - task.stop_requested
            for status, seconds in zip(SERVICE_STOP, task.stop_durations):
                if elapsed < seconds:
                    return status
                elapsed -= seconds
            return "STOPPED"
        elapsed = self.clock.time() - task.started
        ran = task.outcome.exit_code is not None
        for status, seconds in zip(LIFECYCLE, task.outcome.durations):
            if not ran and status == "RUNNING":
                continue  # a task that fails to start goes from PENDING to stopping
            if elapsed < seconds:
                return status
            elapsed -= seconds
        return "STOPPED"

    def started_container(self, task: Task) -> bool:
        if task.outcome.exit_code is None:
            return False
        status = self.status(task)
        return status == "STOPPED" or LIFECYCLE.index(status) >= LIFECYCLE.index("RUNNING")

    def stream(self, task: Task) -> str:
        d = self.definitions[task.definition]
        return f"{d['prefix']}/{task.container}/{task.arn.rsplit('/', 1)[1]}"
