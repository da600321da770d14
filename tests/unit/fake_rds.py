"""Stand-ins for the Amazon RDS cluster-snapshot API and Application Auto Scaling, as strict as their
references, sharing :class:`tests.unit.fake_ecs.FakeAws`'s clock and call log (one order of calls
across the three services).

- ``CreateDBClusterSnapshot`` (*Amazon RDS API Reference*): ``DBClusterSnapshotIdentifier`` "Can't
  be null, empty, or blank; must contain from 1 to 63 letters, numbers, or hyphens; first character
  must be a letter; can't end with a hyphen or contain two consecutive hyphens"
  (``InvalidParameterValue``); ``DBClusterNotFoundFault``; ``DBClusterSnapshotAlreadyExistsFault``;
  ``InvalidDBClusterStateFault`` when the cluster is not ``available``; tag keys 1 to 128 and values
  0 to 256 characters, no ``aws:`` prefix. RDS keeps identifiers in lower case. The snapshot is
  ``creating`` first, then ``available`` (or, in a test, ``failed``).
- ``DescribeDBClusterSnapshots``: ``DBClusterSnapshotNotFoundFault`` for an unknown identifier.
- Application Auto Scaling (*Application Auto Scaling API Reference*): ``DescribeScalableTargets``
  (``ServiceNamespace`` required; ``ecs`` resource IDs ``service/<cluster>/<service>``);
  ``RegisterScalableTarget`` on an existing target changes only what is given; a new one needs
  ``MinCapacity`` and ``MaxCapacity`` and an existing ECS service (``ValidationException``);
  ``SuspendedState`` has only ``DynamicScalingInSuspended``, ``DynamicScalingOutSuspended``,
  ``ScheduledScalingSuspended``. While dynamic scale-out is not suspended, a target-tracking policy
  brings a service below ``MinCapacity`` back up to it (*Application Auto Scaling User Guide*,
  "Suspend and resume scaling"), which the stand-in does at every ECS scheduler step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

from tests.unit.fake_ecs import ACCOUNT, REGION, FakeAws, _err

SNAPSHOT_ID_RE = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{0,62}(?<!-)$")
SUSPENDED_KEYS = {"DynamicScalingInSuspended", "DynamicScalingOutSuspended", "ScheduledScalingSuspended"}


@dataclass
class Snapshot:
    identifier: str
    cluster: str
    created: float
    seconds: float
    final: str
    tags: list[dict[str, str]]


@dataclass
class FakeRds:
    aws: FakeAws
    clusters: dict[str, str] = field(default_factory=dict)  # identifier -> status
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    snapshot_seconds: float = 120
    """How long the next snapshot stays ``creating``; ``float('inf')``: forever."""
    snapshot_final: str = "available"

    def status(self, snap: Snapshot) -> str:
        return "creating" if self.aws.clock.time() - snap.created < snap.seconds else snap.final

    def _view(self, snap: Snapshot) -> dict[str, Any]:
        return {"DBClusterSnapshotIdentifier": snap.identifier, "DBClusterIdentifier": snap.cluster,
                "DBClusterSnapshotArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster-snapshot:{snap.identifier}",
                "SnapshotType": "manual", "Status": self.status(snap), "TagList": list(snap.tags)}

    def create_db_cluster_snapshot(self, *, DBClusterSnapshotIdentifier: str, DBClusterIdentifier: str,
                                   Tags: Optional[list[dict[str, str]]] = None) -> dict[str, Any]:
        op = "CreateDBClusterSnapshot"
        self.aws.call(op, {"DBClusterSnapshotIdentifier": DBClusterSnapshotIdentifier,
                           "DBClusterIdentifier": DBClusterIdentifier, "Tags": Tags}, "rds")
        if not SNAPSHOT_ID_RE.match(DBClusterSnapshotIdentifier or ""):
            raise _err("InvalidParameterValue", "The parameter DBClusterSnapshotIdentifier is not a valid identifier. "
                       "Identifiers must begin with a letter; must contain only ASCII letters, digits, and hyphens; "
                       "and must not end with a hyphen or contain two consecutive hyphens.", op)
        for tag in Tags or []:
            if set(tag) != {"Key", "Value"} or not 1 <= len(tag["Key"]) <= 128 or len(tag["Value"]) > 256 \
                    or tag["Key"].lower().startswith("aws:"):
                raise _err("InvalidParameterValue", f"invalid tag {tag!r}", op)
        cluster = DBClusterIdentifier.lower()
        if cluster not in self.clusters:
            raise _err("DBClusterNotFoundFault", f"DBCluster {DBClusterIdentifier} not found.", op)
        if self.clusters[cluster] != "available":
            raise _err("InvalidDBClusterStateFault", f"DBCluster {cluster} is not in available state.", op)
        identifier = DBClusterSnapshotIdentifier.lower()
        if identifier in self.snapshots:
            raise _err("DBClusterSnapshotAlreadyExistsFault", f"Cannot create the snapshot because a snapshot with "
                       f"the identifier {identifier} already exists.", op)
        snap = Snapshot(identifier, cluster, self.aws.clock.time(), self.snapshot_seconds, self.snapshot_final,
                        list(Tags or []))
        self.snapshots[identifier] = snap
        return {"DBClusterSnapshot": self._view(snap)}

    def describe_db_cluster_snapshots(self, *, DBClusterSnapshotIdentifier: str, **_: Any) -> dict[str, Any]:
        op = "DescribeDBClusterSnapshots"
        self.aws.call(op, {"DBClusterSnapshotIdentifier": DBClusterSnapshotIdentifier}, "rds")
        snap = self.snapshots.get(DBClusterSnapshotIdentifier.lower())
        if snap is None:
            raise _err("DBClusterSnapshotNotFoundFault", f"DBClusterSnapshot {DBClusterSnapshotIdentifier} not found.",
                       op)
        return {"DBClusterSnapshots": [self._view(snap)]}


@dataclass
class FakeScaling:
    aws: FakeAws
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # resource id -> target

    def __post_init__(self) -> None:
        self.aws.reconcilers.append(self.scale)

    def _service(self, resource_id: str):
        return next((s for s in self.aws.services.values()
                     if f"service/{self.aws.clusters[s.cluster_arn]}/{s.name}" == resource_id), None)

    def scale(self) -> None:
        """Target tracking: a service below its minimum is scaled out, unless scale-out is suspended."""
        for rid, target in self.targets.items():
            svc = self._service(rid)
            if svc is not None and not target["SuspendedState"]["DynamicScalingOutSuspended"] \
                    and svc.desired < target["MinCapacity"]:
                svc.desired = target["MinCapacity"]

    def target(self, resource_id: str, min_capacity: int, max_capacity: int) -> None:
        self.register_scalable_target(ServiceNamespace="ecs", ResourceId=resource_id,
                                      ScalableDimension="ecs:service:DesiredCount", MinCapacity=min_capacity,
                                      MaxCapacity=max_capacity)
        self.aws.calls.clear()

    def describe_scalable_targets(self, *, ServiceNamespace: str, ResourceIds: Optional[list[str]] = None,
                                  ScalableDimension: Optional[str] = None, **_: Any) -> dict[str, Any]:
        op = "DescribeScalableTargets"
        self.aws.call(op, {"ServiceNamespace": ServiceNamespace, "ResourceIds": ResourceIds,
                           "ScalableDimension": ScalableDimension}, "application-autoscaling")
        if ServiceNamespace != "ecs":
            raise _err("ValidationException", "this stand-in knows the ecs namespace only", op)
        found = [{"ServiceNamespace": "ecs", "ResourceId": rid, "ScalableDimension": "ecs:service:DesiredCount",
                  **{k: (dict(v) if isinstance(v, dict) else v) for k, v in t.items()}}
                 for rid, t in self.targets.items() if ResourceIds is None or rid in ResourceIds]
        return {"ScalableTargets": found}

    def register_scalable_target(self, *, ServiceNamespace: str, ResourceId: str, ScalableDimension: str,
                                 MinCapacity: Optional[int] = None, MaxCapacity: Optional[int] = None,
                                 SuspendedState: Optional[dict[str, bool]] = None, **_: Any) -> dict[str, Any]:
        op = "RegisterScalableTarget"
        self.aws.call(op, {"ServiceNamespace": ServiceNamespace, "ResourceId": ResourceId,
                           "ScalableDimension": ScalableDimension, "MinCapacity": MinCapacity,
                           "MaxCapacity": MaxCapacity, "SuspendedState": SuspendedState}, "application-autoscaling")
        if ServiceNamespace != "ecs" or ScalableDimension != "ecs:service:DesiredCount":
            raise _err("ValidationException", "namespace ecs, dimension ecs:service:DesiredCount", op)
        if SuspendedState is not None and not set(SuspendedState) <= SUSPENDED_KEYS:
            raise _err("ValidationException", f"SuspendedState: only {sorted(SUSPENDED_KEYS)}", op)
        target = self.targets.get(ResourceId)
        if target is None:
            if MinCapacity is None or MaxCapacity is None:
                raise _err("ValidationException", "MinCapacity and MaxCapacity are required for registering a new "
                           "scalable target.", op)
            if self._service(ResourceId) is None:
                raise _err("ValidationException", f"ECS service doesn't exist: {ResourceId}", op)
            target = self.targets[ResourceId] = {"MinCapacity": MinCapacity, "MaxCapacity": MaxCapacity,
                                                 "SuspendedState": {k: False for k in SUSPENDED_KEYS}}
        if MinCapacity is not None:
            target["MinCapacity"] = MinCapacity
        if MaxCapacity is not None:
            target["MaxCapacity"] = MaxCapacity
        target["SuspendedState"].update(SuspendedState or {})
        self.aws.reconcile()
        return {"ScalableTargetARN": f"arn:aws:application-autoscaling:{REGION}:{ACCOUNT}:scalable-target/x"}
