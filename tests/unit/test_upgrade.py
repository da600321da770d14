"""The upgrade path, as ``pulumi up`` runs it (components/upgrade.py through the DatabaseAdminRun
provider): exit 0 stops nothing; exit 3 stops the writers, snapshots the cluster, migrates, then
starts the new image with the old count.

Stand-ins: ``tests/unit/fake_ecs.py`` (*Amazon ECS API Reference*: RunTask, DescribeTasks,
ListServices, DescribeServices, UpdateService, ListTasks; ECS Developer Guide, "Amazon ECS task
lifecycle": a stopped service task walks DEACTIVATING -> STOPPING -> DEPROVISIONING -> STOPPED) and
``tests/unit/fake_rds.py`` (*Amazon RDS API Reference*: CreateDBClusterSnapshot identifier rules,
``creating`` -> ``available``; *Application Auto Scaling API Reference*: scalable targets, suspended
state, scale-out to the minimum while not suspended), one clock and one call log.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from components.admin_task import DatabaseAdminRunProvider
from components.upgrade import (SNAPSHOT_WAIT_SECONDS, STOP_WAIT_SECONDS, UPGRADE_COMMAND, Clients, UpgradeError,
                                snapshot_identifier)
from tests.unit.fake_ecs import REGION, FakeAws, Outcome
from tests.unit.fake_rds import SNAPSHOT_ID_RE, FakeRds, FakeScaling

CLUSTER = "mlflow-service-cluster-1a2b"
DB = "mlflow-database-cluster-9f8e7d6"
SERVICE = "mlflow-service-service-0a1b2c3"
GROUP = "mlflow-service-logs-1a2b3c4d"
ADMIN = "mlflow-admin"
NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
SNAPSHOT = f"{DB}-pre-upgrade-20300101120000"
STEPS = ("RunTask", "UpdateService", "CreateDBClusterSnapshot", "RegisterScalableTarget")
"""The calls that change something (the order the upgrade must keep)."""


class World:
    """One stack: a cluster with the server service (old revision running), its DB cluster, the new
    server revision registered, and the admin task definition."""

    def __init__(self, desired: int = 2, *, autoscaling: bool = False, stop=(900, 120, 20)) -> None:
        self.aws = aws = FakeAws()
        self.cluster = aws.cluster(CLUSTER)
        self.admin = aws.task_definition("mlflow-tracking-prod-mlflow-service-admin", ADMIN, GROUP, "admin", 2)
        self.old = aws.task_definition("mlflow-tracking-prod-mlflow-service", "mlflow", GROUP, "mlflow", 4)
        self.new = aws.task_definition("mlflow-tracking-prod-mlflow-service", "mlflow", GROUP, "mlflow", 5)
        self.service = aws.service(self.cluster, SERVICE, self.old, desired, stop_durations=stop)
        self.rds = FakeRds(aws, clusters={DB: "available"})
        self.scaling = FakeScaling(aws)
        self.rid = f"service/{CLUSTER}/{SERVICE}"
        if autoscaling:
            self.scaling.target(self.rid, 2, 6)
        self.old_tasks = [t.arn for t in aws.service_tasks(self.service)]
        aws.calls.clear()
        self.props = {"region": REGION, "cluster": self.cluster, "task_definition": self.admin,
                      "subnets": ["subnet-a", "subnet-b"], "security_groups": ["sg-svc"], "container_name": ADMIN,
                      "log_group": GROUP, "log_stream_prefix": "admin", "timeout_seconds": 1200,
                      "db_cluster": DB, "server_task_definition": self.new}

    def provider(self) -> DatabaseAdminRunProvider:
        return DatabaseAdminRunProvider(
            clients=lambda region: Clients(self.aws.ecs(), self.aws.logs(), self.rds, self.scaling),
            clock=self.aws.clock.time, sleep=self.aws.clock.sleep, now=lambda: NOW)

    def create(self):
        return self.provider().create(self.props)

    def fails(self) -> str:
        with pytest.raises(UpgradeError) as err:
            self.create()
        return str(err.value)

    def steps(self) -> list[tuple[str, dict]]:
        return [(op, req) for op, req in self.aws.calls if op in STEPS]

    def running(self) -> list[str]:
        return [t.definition for t in self.aws.service_tasks(self.service) if self.aws.status(t) != "STOPPED"]


def watch(world: World) -> dict[str, list]:
    """What AWS looked like at the moment of the snapshot and of each RunTask."""
    seen: dict[str, list] = {"snapshot": [], "runs": []}
    create, run = world.rds.create_db_cluster_snapshot, None

    def snapshot(**req):
        seen["snapshot"].append(sorted({world.aws.status(world.aws.tasks[a]) for a in world.old_tasks}))
        return create(**req)

    world.rds.create_db_cluster_snapshot = snapshot
    from tests.unit import fake_ecs
    run = fake_ecs.FakeEcs.run_task

    def run_task(self, **req):
        seen["runs"].append({s.identifier: world.rds.status(s) for s in world.rds.snapshots.values()})
        return run(self, **req)

    world._patch = (fake_ecs.FakeEcs, "run_task", run_task)
    return seen


@pytest.fixture
def patch(monkeypatch):
    def apply(world: World) -> dict[str, list]:
        seen = watch(world)
        monkeypatch.setattr(*world._patch)
        return seen
    return apply


def test_equal_heads_stop_nothing_and_take_no_snapshot():
    """Exit 0 (heads equal, or a fresh database the step created): one RunTask, nothing else."""
    w = World()
    out = w.create().outs
    assert [op for op, _ in w.steps()] == ["RunTask"]
    assert not w.aws.ops("ListServices") and not w.rds.snapshots
    assert w.running() == [w.old, w.old] and w.service.desired == 2
    assert out["upgrade"] is None and out["check_exit_code"] == 0 == out["exit_code"]


def test_an_upgrade_stops_every_writer_snapshots_migrates_then_starts_the_new_image(patch):
    w = World()
    seen = patch(w)
    w.aws.outcomes += [Outcome(exit_code=3), Outcome(exit_code=0)]
    out = w.create().outs

    steps = w.steps()
    assert [op for op, _ in steps] == ["RunTask", "UpdateService", "CreateDBClusterSnapshot", "RunTask",
                                       "UpdateService"]
    check, stop, snap, migrate, start = (req for _, req in steps)
    assert "overrides" not in check
    assert stop == {"cluster": w.cluster, "service": SERVICE, "desiredCount": 0}
    assert seen["snapshot"] == [["STOPPED"]], "snapshot taken before every writer had stopped"
    assert snap["DBClusterIdentifier"] == DB and snap["DBClusterSnapshotIdentifier"] == SNAPSHOT
    assert {"Key": "mlflow-tracking:purpose", "Value": "pre-upgrade"} in snap["Tags"]
    assert seen["runs"] == [{}, {SNAPSHOT: "available"}], "migration started before the snapshot was available"
    assert migrate["overrides"] == {"containerOverrides": [{"name": ADMIN, "command": UPGRADE_COMMAND}]}
    assert migrate["taskDefinition"] == w.admin
    assert start == {"cluster": w.cluster, "service": SERVICE, "taskDefinition": w.new, "desiredCount": 2}
    assert w.running() == [w.new, w.new]
    up = out["upgrade"]
    assert out["check_exit_code"] == 3 and out["exit_code"] == 0 and out["task_arn"] == up["migration_task_arn"]
    assert (up["snapshot_identifier"], up["stopped_tasks"]) == (SNAPSHOT, 2)
    assert up["services"] == [{"service": SERVICE, "desired_count": 2, "task_definition": w.new,
                               "scaling_suspended_during_upgrade": False}]


def test_a_failed_migration_names_the_snapshot_and_starts_nothing():
    w = World()
    w.aws.outcomes += [Outcome(exit_code=3),
                       Outcome(exit_code=2, log_lines=("[admin] error: upgrade of the tracking schema failed",))]
    msg = w.fails()
    first = msg.splitlines()[0]
    assert SNAPSHOT in first and "left at 0 tasks" in first and 'docs/upgrading.md "Restore"' in first
    assert "exit code 2" in msg and "upgrade of the tracking schema failed" in msg
    assert not [req for op, req in w.steps() if op == "UpdateService" and "taskDefinition" in req]
    assert w.service.desired == 0 and w.running() == []
    assert f"was 2 task(s) of {w.old}" in msg
    assert f"aws ecs update-service --cluster {CLUSTER} --service {SERVICE} --desired-count 2" in msg


@pytest.mark.parametrize("how", ["failed", "timeout"])
def test_no_snapshot_no_migration_and_the_service_gets_its_count_back(how):
    """The old image still matches the untouched schema: restarting it is safe."""
    w = World()
    if how == "failed":
        w.rds.snapshot_final = "failed"
    else:
        w.rds.snapshot_seconds = float("inf")
    w.aws.outcomes += [Outcome(exit_code=3), Outcome(exit_code=0)]
    msg = w.fails()
    assert "schema untouched" in msg and SNAPSHOT in msg and "\n" not in msg
    assert len(w.aws.ops("RunTask")) == 1, "migrated without a snapshot"
    assert [req.get("desiredCount") for op, req in w.steps() if op == "UpdateService"] == [0, 2]
    assert not [req for op, req in w.steps() if op == "UpdateService" and "taskDefinition" in req]
    assert w.service.desired == 2 and w.running() == [w.old, w.old]
    if how == "timeout":
        assert SNAPSHOT_WAIT_SECONDS <= w.aws.clock.time() <= SNAPSHOT_WAIT_SECONDS + 3600


def test_tasks_that_never_stop_fail_within_the_bound_and_nothing_is_migrated():
    w = World(stop=(float("inf"), 120, 20))
    w.aws.outcomes += [Outcome(exit_code=3), Outcome(exit_code=0)]
    msg = w.fails()
    assert "not STOPPED after" in msg and "DEACTIVATING" in msg and "schema untouched" in msg
    assert STOP_WAIT_SECONDS <= w.aws.clock.time() <= STOP_WAIT_SECONDS + 600
    assert not w.rds.snapshots and len(w.aws.ops("RunTask")) == 1
    assert w.service.desired == 2


def test_autoscaling_is_suspended_for_the_upgrade_and_resumed_after():
    w = World(autoscaling=True)
    w.aws.outcomes += [Outcome(exit_code=3), Outcome(exit_code=0)]
    out = w.create().outs
    ops = [(op, req.get("SuspendedState") or req.get("desiredCount")) for op, req in w.steps()]
    assert ops == [("RunTask", None),
                   ("RegisterScalableTarget", {"DynamicScalingInSuspended": True, "DynamicScalingOutSuspended": True,
                                               "ScheduledScalingSuspended": True}),
                   ("UpdateService", 0), ("CreateDBClusterSnapshot", None), ("RunTask", None),
                   ("UpdateService", 2),
                   ("RegisterScalableTarget", {"DynamicScalingInSuspended": False,
                                               "DynamicScalingOutSuspended": False,
                                               "ScheduledScalingSuspended": False})]
    assert w.scaling.targets[w.rid]["MinCapacity"] == 2 and w.running() == [w.new, w.new]
    assert out["upgrade"]["services"][0]["scaling_suspended_during_upgrade"] is True


def test_the_stand_in_scales_a_service_back_up_while_scaling_is_not_suspended():
    """Why the suspension matters (and that the stand-in can catch its absence): Application Auto
    Scaling brings a service below its minimum capacity back to it."""
    w = World(autoscaling=True)
    w.aws.ecs().update_service(cluster=w.cluster, service=SERVICE, desiredCount=0)
    assert w.service.desired == 2 and len(w.running()) >= 2


def test_a_failed_migration_leaves_scaling_suspended_and_says_how_to_resume():
    w = World(autoscaling=True)
    w.aws.outcomes += [Outcome(exit_code=3), Outcome(exit_code=2)]
    msg = w.fails()
    assert w.scaling.targets[w.rid]["SuspendedState"]["DynamicScalingOutSuspended"] is True
    assert w.service.desired == 0 and w.running() == []
    assert f"--resource-id {w.rid}" in msg and "DynamicScalingOutSuspended=false" in msg


@pytest.mark.parametrize("cluster_id", [DB, "Mlflow--DB--", "1-db", "a" * 300, "db_cluster.x"])
def test_snapshot_identifiers_follow_rds_rules(cluster_id):
    """RDS API Reference, CreateDBClusterSnapshot: 1-63 letters, digits, hyphens (255 is a DB
    instance snapshot's limit); a letter first; no trailing hyphen, no two hyphens in a row."""
    ident = snapshot_identifier(cluster_id, NOW)
    assert SNAPSHOT_ID_RE.match(ident) and len(ident) <= 63 and ident.endswith("-pre-upgrade-20300101120000")


def test_the_stand_in_refuses_identifiers_rds_refuses():
    w = World()
    for bad in ("1abc", "a--b", "abc-", "a_b", "a" * 64):
        with pytest.raises(Exception, match="not a valid identifier"):
            w.rds.create_db_cluster_snapshot(DBClusterSnapshotIdentifier=bad, DBClusterIdentifier=DB)


def test_a_restored_db_cluster_runs_the_step_again_a_new_server_revision_alone_does_not():
    p = World().provider()
    olds = {**World().props, "upgrade": {"snapshot_identifier": SNAPSHOT}}
    assert p.diff("id", olds, {**olds, "db_cluster": "mlflow-database-cluster-0000000"}).replaces == ["db_cluster"]
    d = p.diff("id", olds, {**olds, "server_task_definition": "arn:...:task-definition/x:6"})
    assert d.changes and not d.replaces
    kept = p.update("id", olds, {**olds, "server_task_definition": "arn:...:task-definition/x:6"}).outs
    assert kept["upgrade"] == {"snapshot_identifier": SNAPSHOT}


def test_a_task_ecs_was_already_stopping_is_waited_for(patch):
    """Amazon ECS Developer Guide, "Amazon ECS task lifecycle": a task ECS decided to stop has
    desiredStatus STOPPED at once while its lastStatus walks DEACTIVATING (load balancer draining),
    STOPPING, DEPROVISIONING; ECS API Reference, ListTasks: ``desiredStatus`` filters, RUNNING by
    default. Such a task still writes: the snapshot waits for it too."""
    w = World(desired=3, stop=(30, 10, 5))
    w.service.desired = 2
    w.aws.reconcile()  # a scale-in under way when the upgrade starts: one task draining ...
    (stopping,) = w.aws.service_tasks(w.service, desired_running=False)
    stopping.stop_durations = (900, 120, 20)  # ... for long: its clients keep connections open
    w.aws.calls.clear()
    seen = patch(w)
    w.aws.outcomes += [Outcome(exit_code=3), Outcome(exit_code=0)]
    w.create()
    assert seen["snapshot"] == [["STOPPED"]], "snapshot taken while a stopping task still ran"
