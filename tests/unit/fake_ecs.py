"""A stand-in for the Amazon ECS and CloudWatch Logs APIs the admin step uses, as strict as their
references, with a clock of its own (nothing in a test really waits).

- ``RunTask`` (*Amazon ECS API Reference*): the cluster must exist (``ClusterNotFoundException``),
  the task definition must be registered (``InvalidParameterException``, "TaskDefinition not
  found."); a task definition with ``networkMode`` ``awsvpc`` needs ``networkConfiguration``
  ("Network Configuration must be provided when networkMode 'awsvpc' is specified.") with 1 to 16
  subnets and at most 5 security groups; ``assignPublicIp`` is ``ENABLED`` or ``DISABLED``. A task
  that cannot be placed comes back in ``failures`` (``arn``, ``reason``, ``detail``), not as an error.
- The task's lifecycle (ECS Developer Guide, "Amazon ECS task lifecycle"): ``lastStatus`` goes
  PROVISIONING -> PENDING -> ACTIVATING -> RUNNING -> DEACTIVATING -> STOPPING -> DEPROVISIONING ->
  STOPPED as time passes. A stopped task has ``stopCode`` (``TaskFailedToStart``,
  ``EssentialContainerExited``, ...), ``stoppedReason`` and ``stoppedAt``; a container that ran has an
  ``exitCode``, one that never started has only a ``reason`` (e.g. ``CannotPullContainerError``,
  ECS Developer Guide, "Amazon ECS stopped task error messages").
- ``DescribeTasks``: at most 100 tasks; a task ARN ECS does not know (yet: the API is eventually
  consistent, ECS Developer Guide, "Eventual consistency") is a ``failures`` entry with reason
  ``MISSING``.
- Logs (awslogs driver, ECS Developer Guide, "Using the awslogs log driver"): the stream
  ``<prefix>/<container>/<task id>`` exists only once the container started. ``GetLogEvents``
  (*CloudWatch Logs API Reference*): ``ResourceNotFoundException`` "The specified log stream does not
  exist."; ``limit`` 1 to 10000; ``startFromHead=False`` returns the *last* events, oldest first.
- Services (*Amazon ECS API Reference*): ``ListServices`` (``maxResults`` 1 to 100, ``nextToken``),
  ``DescribeServices`` (1 to 10 services; unknown ones are ``failures`` with reason ``MISSING``),
  ``UpdateService`` (``ServiceNotFoundException``, ``ServiceNotActiveException``; ``desiredCount`` >= 0;
  a ``taskDefinition`` that is not registered: ``ClientException``), ``ListTasks`` (``serviceName``,
  ``desiredStatus`` RUNNING | PENDING | STOPPED, ``maxResults`` 1 to 100, ``ServiceNotFoundException``).
  The service scheduler keeps ``desiredCount`` tasks of the service's task definition: a task it stops
  gets ``desiredStatus`` STOPPED at once and walks DEACTIVATING (load balancer draining) -> STOPPING
  (SIGTERM, ``stopTimeout``) -> DEPROVISIONING -> STOPPED (ECS Developer Guide, "Amazon ECS task
  lifecycle"); a new task definition replaces every task (a deployment).

The state the calls act on (tasks, services, the lifecycle at the clock's time, the service
scheduler) is in tests/unit/fake_ecs_state.py; its names are importable from here too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional

from tests.unit.fake_ecs_state import (ACCOUNT, EPOCH, LIFECYCLE, REGION, SERVICE_STOP, Clock, FakeAws, Outcome,
                                       Service, Task, _err)

__all__ = ["ACCOUNT", "EPOCH", "LIFECYCLE", "REGION", "SERVICE_STOP", "Clock", "FakeAws", "FakeEcs", "FakeLogs",
           "Outcome", "Service", "Task", "_err"]


class FakeEcs:
    def __init__(self, aws: FakeAws) -> None:
        self.aws = aws

    def run_task(self, **req: Any) -> dict[str, Any]:
        self.aws.call("RunTask", req, "ecs")
        cluster = req.get("cluster", "default")
        if cluster not in self.aws.clusters:
            raise _err("ClusterNotFoundException", "Cluster not found.", "RunTask")
        definition = req.get("taskDefinition")
        if definition not in self.aws.definitions:
            raise _err("InvalidParameterException", "TaskDefinition not found.", "RunTask")
        if req.get("launchType") not in (None, "EC2", "FARGATE", "EXTERNAL"):
            raise _err("InvalidParameterException", "launchType: EC2, FARGATE or EXTERNAL", "RunTask")
        if not 1 <= req.get("count", 1) <= 10:
            raise _err("InvalidParameterException", "count: 1 to 10", "RunTask")
        vpc = (req.get("networkConfiguration") or {}).get("awsvpcConfiguration")
        if self.aws.definitions[definition]["network_mode"] == "awsvpc":
            if not vpc:
                raise _err("InvalidParameterException", "Network Configuration must be provided when networkMode "
                           "'awsvpc' is specified.", "RunTask")
            if not 1 <= len(vpc.get("subnets") or []) <= 16 or len(vpc.get("securityGroups") or []) > 5:
                raise _err("InvalidParameterException", "subnets: 1 to 16; securityGroups: at most 5", "RunTask")
            if vpc.get("assignPublicIp", "DISABLED") not in ("ENABLED", "DISABLED"):
                raise _err("InvalidParameterException", "assignPublicIp: ENABLED or DISABLED", "RunTask")
        outcome = self.aws.outcomes.pop(0) if self.aws.outcomes else Outcome()
        if outcome.placement_failure:
            return {"tasks": [], "failures": [dict(outcome.placement_failure)]}
        task_id = f"{next(self.aws._ids):032x}"
        arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{self.aws.clusters[cluster]}/{task_id}"
        task = Task(arn, cluster, definition, self.aws.definitions[definition]["container"], self.aws.clock.time(),
                    outcome)
        self.aws.tasks[arn] = task
        return {"tasks": [self._view(task)], "failures": []}

    def describe_tasks(self, *, cluster: str = "default", tasks: list[str], include: Optional[list[str]] = None):
        self.aws.call("DescribeTasks", {"cluster": cluster, "tasks": list(tasks)}, "ecs")
        if cluster not in self.aws.clusters:
            raise _err("ClusterNotFoundException", "Cluster not found.", "DescribeTasks")
        if not 1 <= len(tasks) <= 100:
            raise _err("InvalidParameterException", "tasks: 1 to 100", "DescribeTasks")
        found, failures = [], []
        for arn in tasks:
            task = self.aws.tasks.get(arn)
            if task is None or task.cluster_arn != cluster or task.described < task.outcome.missing_polls:
                if task is not None:
                    task.described += 1
                failures.append({"arn": arn, "reason": "MISSING"})
                continue
            task.described += 1
            found.append(self._view(task))
        return {"tasks": found, "failures": failures}

    def _view(self, task: Task) -> dict[str, Any]:
        status = self.aws.status(task)
        started = EPOCH + timedelta(seconds=task.started)
        container: dict[str, Any] = {"containerArn": f"{task.arn}-container", "taskArn": task.arn,
                                     "name": task.container, "lastStatus": "PENDING"}
        view: dict[str, Any] = {"taskArn": task.arn, "clusterArn": task.cluster_arn,
                                "taskDefinitionArn": task.definition, "lastStatus": status, "desiredStatus": "RUNNING",
                                "launchType": "FARGATE", "createdAt": started, "containers": [container]}
        if self.aws.started_container(task):
            container["lastStatus"] = "RUNNING"
        if status in ("DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED") or task.stop_requested is not None:
            view.update(desiredStatus="STOPPED", stopCode=task.outcome.stop_code,
                        stoppedReason=task.outcome.stopped_reason)
            container["lastStatus"] = "STOPPED"
            if task.outcome.exit_code is not None:
                container["exitCode"] = task.outcome.exit_code
            if task.outcome.container_reason:
                container["reason"] = task.outcome.container_reason
        if status == "STOPPED":
            view["stoppedAt"] = EPOCH + timedelta(seconds=self.aws.clock.time())
        return view


    # -- services

    def _cluster(self, cluster: str, op: str) -> str:
        arn = cluster if cluster in self.aws.clusters else next(
            (a for a, n in self.aws.clusters.items() if n == cluster), None)
        if arn is None:
            raise _err("ClusterNotFoundException", "Cluster not found.", op)
        return arn

    def _service(self, cluster: str, service: str, op: str) -> Service:
        arn = self._cluster(cluster, op)
        found = [s for s in self.aws.services.values() if s.cluster_arn == arn and service in (s.arn, s.name)]
        if not found:
            raise _err("ServiceNotFoundException", "Service not found.", op)
        return found[0]

    @staticmethod
    def _page(items: list[str], max_results: int, token: Optional[str], op: str) -> dict[str, Any]:
        if not 1 <= max_results <= 100:
            raise _err("InvalidParameterException", "maxResults: 1 to 100", op)
        start = int(token) if token else 0
        page: dict[str, Any] = {"items": items[start:start + max_results]}
        if start + max_results < len(items):
            page["nextToken"] = str(start + max_results)
        return page

    def list_services(self, *, cluster: str = "default", maxResults: int = 10, nextToken: Optional[str] = None,
                      **_: Any) -> dict[str, Any]:
        self.aws.call("ListServices", {"cluster": cluster}, "ecs")
        arn = self._cluster(cluster, "ListServices")
        page = self._page([s.arn for s in self.aws.services.values() if s.cluster_arn == arn and s.status == "ACTIVE"],
                          maxResults, nextToken, "ListServices")
        return {"serviceArns": page.pop("items"), **page}

    def describe_services(self, *, cluster: str = "default", services: list[str], **_: Any) -> dict[str, Any]:
        self.aws.call("DescribeServices", {"cluster": cluster, "services": list(services)}, "ecs")
        arn = self._cluster(cluster, "DescribeServices")
        if not 1 <= len(services) <= 10:
            raise _err("InvalidParameterException", "services: 1 to 10", "DescribeServices")
        self.aws.reconcile()
        found, failures = [], []
        for name in services:
            svc = next((s for s in self.aws.services.values() if s.cluster_arn == arn and name in (s.arn, s.name)),
                       None)
            if svc is None:
                failures.append({"arn": name, "reason": "MISSING"})
                continue
            tasks = self.aws.service_tasks(svc)
            found.append({"serviceArn": svc.arn, "serviceName": svc.name, "clusterArn": arn, "status": svc.status,
                          "desiredCount": svc.desired, "taskDefinition": svc.definition,
                          "runningCount": sum(self.aws.status(t) == "RUNNING" for t in tasks),
                          "pendingCount": 0, "launchType": "FARGATE"})
        return {"services": found, "failures": failures}

    def update_service(self, *, service: str, cluster: str = "default", desiredCount: Optional[int] = None,
                       taskDefinition: Optional[str] = None, **rest: Any) -> dict[str, Any]:
        req = {"cluster": cluster, "service": service, **rest}
        if desiredCount is not None:
            req["desiredCount"] = desiredCount
        if taskDefinition is not None:
            req["taskDefinition"] = taskDefinition
        self.aws.call("UpdateService", req, "ecs")
        svc = self._service(cluster, service, "UpdateService")
        if svc.status != "ACTIVE":
            raise _err("ServiceNotActiveException", "Service was not ACTIVE.", "UpdateService")
        if desiredCount is not None and (isinstance(desiredCount, bool) or desiredCount < 0):
            raise _err("InvalidParameterException", "desiredCount: at least 0", "UpdateService")
        if taskDefinition is not None and taskDefinition not in self.aws.definitions:
            raise _err("ClientException", "TaskDefinition not found.", "UpdateService")
        if desiredCount is not None:
            svc.desired = desiredCount
        if taskDefinition is not None:
            svc.definition = taskDefinition
        self.aws.reconcile()
        return {"service": {"serviceArn": svc.arn, "serviceName": svc.name, "desiredCount": svc.desired,
                            "taskDefinition": svc.definition, "status": svc.status}}

    def list_tasks(self, *, cluster: str = "default", serviceName: Optional[str] = None,
                   desiredStatus: str = "RUNNING", maxResults: int = 100, nextToken: Optional[str] = None,
                   **_: Any) -> dict[str, Any]:
        self.aws.call("ListTasks", {"cluster": cluster, "serviceName": serviceName, "desiredStatus": desiredStatus},
                      "ecs")
        arn = self._cluster(cluster, "ListTasks")
        if desiredStatus not in ("RUNNING", "PENDING", "STOPPED"):
            raise _err("InvalidParameterException", "desiredStatus: RUNNING, PENDING or STOPPED", "ListTasks")
        self.aws.reconcile()
        tasks = [t for t in self.aws.tasks.values() if t.cluster_arn == arn]
        if serviceName is not None:
            svc = self._service(cluster, serviceName, "ListTasks")
            tasks = [t for t in tasks if t.service == svc.arn]
        wanted = desiredStatus == "STOPPED"
        page = self._page([t.arn for t in tasks if (t.stop_requested is not None) == wanted],
                          maxResults, nextToken, "ListTasks")
        return {"taskArns": page.pop("items"), **page}


class FakeLogs:
    def __init__(self, aws: FakeAws) -> None:
        self.aws = aws

    def get_log_events(self, *, logGroupName: str, logStreamName: str, startFromHead: bool = False,
                       limit: int = 10000, **_: Any) -> dict[str, Any]:
        self.aws.call("GetLogEvents", {"logGroupName": logGroupName, "logStreamName": logStreamName,
                                       "startFromHead": startFromHead, "limit": limit}, "logs")
        if not 1 <= limit <= 10000:
            raise _err("InvalidParameterException", "limit: 1 to 10000", "GetLogEvents")
        for task in self.aws.tasks.values():
            d = self.aws.definitions[task.definition]
            if d["group"] == logGroupName and self.aws.stream(task) == logStreamName and \
                    self.aws.started_container(task):
                lines = list(task.outcome.log_lines)
                chosen = lines[:limit] if startFromHead else lines[-limit:]
                events = [{"timestamp": i, "message": m, "ingestionTime": i} for i, m in enumerate(chosen)]
                return {"events": events, "nextForwardToken": "f/1", "nextBackwardToken": "b/1"}
        raise _err("ResourceNotFoundException", "The specified log stream does not exist.", "GetLogEvents")
