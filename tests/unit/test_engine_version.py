"""Aurora engine versions that survive AWS's automatic minor upgrades.

RDS upgrades a cluster with ``auto_minor_version_upgrade`` to newer minors in its maintenance
window; a program that still names the old exact minor then plans a downgrade, which RDS refuses
(Aurora User Guide, "Automatic minor version upgrades"; DESIGN §5). The program therefore takes
a major line (``8.0.mysql_aurora.3`` / ``16``) or an exact version, resolves it once with the
``aws_rds_engine_version`` data source, and never diffs the cluster's version afterwards.
"""

from __future__ import annotations

import pytest

import config
from tests.unit import stand_ins
from tests.unit.conftest import run_program
from tests.unit.harness import run, stack_config

CLUSTER = "aws:rds/cluster:Cluster"
INSTANCE = "aws:rds/clusterInstance:ClusterInstance"
INVOKE = "aws:rds/getEngineVersion:getEngineVersion"
NS = config.NAMESPACE


def engine_calls(r) -> list[dict]:
    return [args for token, args in r.recorder.calls if token == INVOKE]


def test_the_default_is_a_major_line_not_an_exact_minor():
    assert config.load_settings({"allowedCidrs": "10.0.0.0/8"}).db_engine_version == "8.0.mysql_aurora.3"
    assert config.load_settings({"dbEngine": "postgresql", "allowedCidrs": "10.0.0.0/8"}).db_engine_version == "16"


def test_the_program_resolves_the_newest_minor_of_the_major_line_once(dev):
    (call,) = engine_calls(dev)
    assert call["engine"] == "aurora-mysql" and call["parameterGroupFamily"] == "aurora-mysql8.0"
    assert call["latest"] is True
    assert dev.one(CLUSTER).inputs["engineVersion"] == stand_ins.NEWEST["mysql"]


def test_the_cluster_never_diffs_its_version_after_creation(dev, prod):
    """``ignore_changes`` on ``engineVersion``: AWS's upgrades (and newer minors the data source
    finds later) plan no change; instances follow their cluster (terraform-provider-aws,
    ``aws_rds_cluster_instance``: "engine_version ... must be done on the aws_rds_cluster")."""
    for r in (dev, prod):
        assert "engineVersion" in r.one(CLUSTER).ignore_changes
        assert r.one(CLUSTER).inputs.get("allowMajorVersionUpgrade") in (None, False)
        for inst in r.of_type(INSTANCE):
            assert "engineVersion" not in inst.inputs, inst.name
            assert inst.inputs["autoMinorVersionUpgrade"] is True


def test_postgresql_major_line_resolves_within_that_major():
    r = run_program("dev", dbEngine="postgresql", dbEngineVersion="15")
    (call,) = engine_calls(r)
    assert call["engine"] == "aurora-postgresql" and call["parameterGroupFamily"] == "aurora-postgresql15"
    assert r.one(CLUSTER).inputs["engineVersion"] == "15.10"


def test_an_exact_version_is_used_as_given():
    r = run_program("dev", dbEngineVersion="8.0.mysql_aurora.3.08.2")
    (call,) = engine_calls(r)
    assert call["preferredVersions"] == ["8.0.mysql_aurora.3.08.2"] and not call.get("latest")
    assert r.one(CLUSTER).inputs["engineVersion"] == "8.0.mysql_aurora.3.08.2"


def _error_of(**overrides) -> str:
    import program

    captured = {}

    def body():
        try:
            program.define_stack()
        except config.SettingsError as err:
            captured["err"] = err

    result = run(body, stack_config("dev", **overrides), "dev")
    assert "err" in captured, "no settings error"
    assert [x for x in result.resources if not x.type.startswith("mlflowtracking:")] == []
    return str(captured["err"])


def test_an_exact_version_the_region_does_not_offer_fails_naming_the_setting():
    msg = _error_of(dbEngineVersion="8.0.mysql_aurora.3.99.9")
    assert f"{NS}:dbEngineVersion" in msg and "3.99.9" in msg and "\n" not in msg


def test_zero_acu_is_checked_against_the_resolved_version(monkeypatch):
    """Where the newest minor of a line predates 0-ACU support (Aurora User Guide, "Scaling to
    zero ACUs with automatic pause and resume": PostgreSQL 14.12+), auto-pause must fail at
    preview naming dbEngineVersion, not at ``pulumi up``."""
    monkeypatch.setitem(stand_ins.ENGINE_VERSIONS, ("aurora-postgresql", "aurora-postgresql14"), ["14.6", "14.9"])
    msg = _error_of(dbEngine="postgresql", dbEngineVersion="14", dbMinAcu="0")
    assert f"{NS}:dbEngineVersion" in msg and "14.9" in msg and "auto-pause" in msg and "\n" not in msg


@pytest.mark.parametrize("value", ["8.0.mysql_aurora.2", "5.7.mysql_aurora.2.11.2", "8.0", "8.0.mysql_aurora.3.08"])
def test_mysql_versions_outside_aurora_mysql_3_are_refused(value):
    with pytest.raises(config.SettingsError, match=f"{NS}:dbEngineVersion"):
        config.load_settings({"dbEngineVersion": value, "allowedCidrs": "10.0.0.0/8"})


@pytest.mark.parametrize("value", ["12", "16.6.1", "sixteen"])
def test_postgresql_versions_without_serverless_v2_or_malformed_are_refused(value):
    with pytest.raises(config.SettingsError, match=f"{NS}:dbEngineVersion"):
        config.load_settings({"dbEngine": "postgresql", "dbEngineVersion": value, "allowedCidrs": "10.0.0.0/8"})
