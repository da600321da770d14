"""Under Pulumi mocks: what the upgrade path needs from the program, and the restore setting.

- The admin run gets the DB cluster identifier (RDS API Reference, CreateDBClusterSnapshot
  ``DBClusterIdentifier``) and the new server task definition's ARN as inputs, and waits for both;
  the ECS service still waits for the run (no cycle: the run does not depend on the service).
- ``dbRestoreSnapshot`` sets ``aws.rds.Cluster`` ``snapshotIdentifier`` (terraform-provider-aws
  ``aws_rds_cluster``: ForceNew, so it replaces the cluster; ``master_username`` comes from the
  snapshot); bad values fail at preview with one line; unset, nothing changes.
- With ``protectData`` the cluster and its instances are ``retainOnDelete`` (Pulumi docs, "Resource
  option: retainOnDelete": the provider's Delete is not called when the resource is deleted or
  replaced), so a restore keeps the old cluster.
"""

from __future__ import annotations

import pytest

import config
from tests.unit.conftest import PROD_OVERRIDES, run_program
from tests.unit.harness import Run

NS = config.NAMESPACE
RUN = "pulumi-python:dynamic/mlflowtracking:DatabaseAdminRun"
CLUSTER = "aws:rds/cluster:Cluster"
INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
SNAP = "mlflow-database-cluster-9f8e7d6-pre-upgrade-20300101120000"
SNAP_ARN = f"arn:aws:rds:eu-west-1:123456789012:cluster-snapshot:{SNAP}"


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack(request, dev, prod) -> Run:
    return {"dev": dev, "prod": prod}[request.param]


def test_the_run_gets_the_db_cluster_and_the_new_server_task_definition(stack):
    run, cluster, task = stack.one(RUN), stack.one(CLUSTER), stack.named("mlflow-service-task")
    assert run.inputs["db_cluster"] == cluster.outputs["clusterIdentifier"]
    assert run.inputs["server_task_definition"] == task.outputs["arn"]
    assert {cluster.urn, task.urn} <= set(run.dependencies)
    service = stack.one("aws:ecs/service:Service")
    assert run.urn in service.dependencies and service.urn not in run.dependencies


def test_no_restore_by_default(stack):
    assert "snapshotIdentifier" not in stack.one(CLUSTER).inputs


@pytest.mark.parametrize("value", [SNAP, SNAP_ARN, "rds:mlflow-database-cluster-9f8e7d6-2030-01-01-02-05"])
def test_the_setting_restores_the_cluster_from_the_snapshot(value):
    r = run_program("prod", **PROD_OVERRIDES, dbRestoreSnapshot=value)
    cluster = r.one(CLUSTER)
    assert cluster.inputs["snapshotIdentifier"] == value
    # what the restore keeps: the same master user name (RDS takes it from the snapshot), managed password
    assert cluster.inputs["masterUsername"] == "mlflow" and cluster.inputs["manageMasterUserPassword"] is True
    # the snapshot's engine version, not the one recorded at creation (which ignore_changes would keep)
    want = "8.0.mysql_aurora.3.09.0" if value.startswith("rds:") else "8.0.mysql_aurora.3.10.0"
    assert cluster.inputs["engineVersion"] == want and "engineVersion" not in cluster.ignore_changes


def test_without_a_restore_the_engine_version_is_left_to_automatic_minor_upgrades(stack):
    assert "engineVersion" in stack.one(CLUSTER).ignore_changes


@pytest.mark.parametrize("value, why", [
    ("mlflow-no-such-snapshot", "allowed: a DB cluster snapshot in this region ("),
    ("mlflow-pg-before-upgrade", "allowed: a snapshot of aurora-mysql (dbEngine mysql), got aurora-postgresql"),
])
def test_a_snapshot_that_is_not_there_or_of_another_engine_stops_the_preview(value, why):
    """Terraform data source aws_db_cluster_snapshot ("Your query returned no results"); the
    restored cluster keeps dbEngine's engine (RestoreDBClusterFromSnapshot's Engine must match)."""
    with pytest.raises(Exception) as info:
        run_program("prod", **PROD_OVERRIDES, dbRestoreSnapshot=value)
    msg = str(info.value)
    assert f"{NS}:dbRestoreSnapshot = '{value}'" in msg and why in msg, msg
    assert "\n" not in msg.strip() and ("no results" in msg or "aurora-postgresql" in msg)


@pytest.mark.parametrize("value", ["1snapshot", "snap--1", "snap-", "snap_1", "a" * 256,
                                   "arn:aws:rds:eu-west-1:123456789012:snapshot:db-snap"])
def test_a_bad_snapshot_fails_with_one_line_naming_the_setting(value):
    with pytest.raises(config.SettingsError) as info:
        config.load_settings({"dbRestoreSnapshot": value, "allowedCidrs": "10.0.0.0/8"})
    msg = str(info.value)
    assert f"{NS}:dbRestoreSnapshot" in msg and "cluster snapshot identifier" in msg and "\n" not in msg


def test_protected_data_is_retained_on_replacement(prod, dev):
    for res in [prod.one(CLUSTER), *prod.of_type(INSTANCE)]:
        assert res.protect and res.retain_on_delete, res.name
    # a disposable stack destroys cleanly
    assert not any(r.retain_on_delete for r in [dev.one(CLUSTER), *dev.of_type(INSTANCE)])
