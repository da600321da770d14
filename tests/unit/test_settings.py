"""config.py: defaults, the stack files, and bad settings failing early with one clear message."""

from __future__ import annotations

import pytest
import pulumi

import config
from components.sizing import PoolTooSmall, aurora_connection_limit, pool_sizing
from tests.unit.conftest import PROD_OVERRIDES, run_program
from tests.unit.harness import CERT, PROMOTED_REF, run, stack_config

NS = config.NAMESPACE


def settings_of(stack: str, **overrides) -> config.Settings:
    raw = {k.split(":", 1)[1]: v for k, v in stack_config(stack, **overrides).items() if k.startswith(NS + ":")}
    return config.load_settings(raw)


def test_defaults_are_documented_and_safe():
    s = config.load_settings({"allowedCidrs": "10.0.0.0/8"})  # no default without HTTPS (test_tls.py)
    assert s.environment == "dev"
    assert s.protect_data is True and s.deletion_protection is True and s.final_snapshot is True
    assert s.bucket_force_destroy is False and s.bucket_versioning is True
    assert s.idle_timeout_seconds == 900
    assert s.image_ref is None and s.certificate_arn is None
    assert s.db_engine == "mysql" and s.db_engine_version == "8.0.mysql_aurora.3"  # the newest minor at preview
    assert 21 <= s.ephemeral_storage_gib <= 200


def test_dev_stack_file_settings():
    s = settings_of("dev")
    assert (s.environment, s.protect_data, s.nat_mode, s.task_subnets) == ("dev", False, "none", "public")
    assert s.db_min_acu == 0 and 300 <= s.db_auto_pause_seconds <= 86400
    assert (s.desired_count, s.min_tasks, s.max_tasks) == (1, 1, 1)
    assert 25 <= s.ephemeral_storage_gib <= 40
    assert s.bucket_force_destroy and not s.deletion_protection and not s.final_snapshot


def test_prod_stack_file_settings():
    s = settings_of("prod", **PROD_OVERRIDES)
    assert (s.environment, s.protect_data, s.nat_mode) == ("prod", True, "perAz")
    assert s.deletion_protection and s.final_snapshot and s.db_reader
    assert s.db_backup_retention_days == 14 and s.log_retention_days == 90
    assert s.min_tasks >= 2 and s.max_tasks > s.min_tasks and s.ephemeral_storage_gib >= 100
    assert not s.bucket_force_destroy and s.bucket_versioning


def test_values_arrive_as_strings_from_the_engine():
    s = config.load_settings({"dbMinAcu": "0.5", "dbMaxAcu": "2.5", "dbReader": "true", "cpu": "2048",
                              "memory": "4096", "allowedCidrs": '["10.0.0.0/8", "2001:db8::/32"]'})
    assert (s.db_min_acu, s.db_max_acu, s.db_reader, s.cpu, s.memory) == (0.5, 2.5, True, 2048, 4096)
    assert s.allowed_cidrs == ("10.0.0.0/8", "2001:db8::/32")
    assert config.load_settings({"allowedCidrs": "10.1.0.0/16, 192.168.0.0/24"}).allowed_cidrs == (
        "10.1.0.0/16", "192.168.0.0/24")


def test_postgresql_with_zero_acu_uses_a_version_that_can_pause():
    s = config.load_settings({"dbEngine": "postgresql", "dbMinAcu": "0", "allowedCidrs": "10.0.0.0/8"})
    assert s.db_engine_version == "16" and s.db_port == 5432  # 16.3+ can pause; the program checks the minor


# key, value, extra settings, words the message must contain (besides key and value)
BAD = [
    ("ephemeralStorageGib", "20", {}, ["21", "200"]),
    ("ephemeralStorageGib", "201", {}, ["21", "200"]),
    ("memory", "1024", {"cpu": "1024"}, ["cpu 1024", "2048", "8192"]),
    ("memory", "3000", {"cpu": "512"}, ["1024", "4096"]),
    ("cpu", "300", {}, ["256", "512", "1024", "16384"]),
    ("dbMaxAcu", "2", {"dbMinAcu": "4"}, ["dbMinAcu", "256", "0.5"]),
    ("dbMinAcu", "0.3", {}, ["0", "256", "steps of 0.5"]),
    ("dbMaxAcu", "0.5", {}, ["1", "256"]),
    ("dbAutoPauseSeconds", "100", {}, ["300", "86400"]),
    ("natMode", "dual", {}, ["none", "single", "perAz"]),
    ("dbEngine", "oracle", {}, ["mysql", "postgresql"]),
    ("allowedCidrs", '["10.0.0.300/8"]', {}, ["network"]),
    ("allowedCidrs", "10.0.0.1/8", {}, ["network"]),
    ("allowedCidrs", "[]", {}, ["non-empty"]),
    ("desiredCount", "-1", {}, ["0", "100"]),
    ("minTasks", "3", {"maxTasks": "2", "desiredCount": "2"}, ["maxTasks (2)"]),
    ("desiredCount", "5", {"minTasks": "1", "maxTasks": "3"}, ["minTasks (1)", "maxTasks (3)"]),
    ("imageRef", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mlflow:latest", {}, ["@sha256:<64 hex>"]),
    ("imageRef", "mlflow@sha256:abc", {}, ["@sha256:<64 hex>"]),
    ("environment", "staging", {}, ["dev", "prod"]),
    ("protectData", "yes", {}, ["true or false"]),
    ("cpuArchitecture", "arm64", {}, ["X86_64", "ARM64"]),
    ("albScheme", "public", {}, ["internet-facing", "internal"]),
    ("logRetentionDays", "10", {}, ["7", "14", "90"]),
    ("idleTimeoutSeconds", "4001", {}, ["1", "4000"]),
    ("certificateArn", "my-cert", {}, ["ACM certificate ARN"]),
    ("dbEngineVersion", "8.0.mysql_aurora.3.05.2", {"dbMinAcu": "0"}, ["3.08", "auto-pause"]),
    ("dbEngineVersion", "15.4", {"dbEngine": "postgresql", "dbMinAcu": "0"}, ["15.7+"]),
    ("vpcCidr", "10.0.0.0/24", {}, ["/16", "/20"]),
    ("azCount", "1", {}, ["2", "4"]),
    ("maxTasks", "40", {"serverWorkers": "4", "dbMaxAcu": "1", "minTasks": "1"}, ["dbMaxAcu", "serverWorkers"]),
    ("dbMinAcuu", "1", {}, ["did you mean dbMinAcu", "known keys"]),
]


@pytest.mark.parametrize("key,value,extra,words", BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bad_setting_names_key_value_and_what_is_allowed(key, value, extra, words):
    with pytest.raises(config.SettingsError) as info:
        config.load_settings({**extra, key: value})
    msg = str(info.value)
    assert f"{NS}:{key}" in msg
    assert repr(value) in msg or value in msg
    assert "allowed:" in msg
    for word in words:
        assert word in msg, f"{word!r} missing from: {msg}"
    assert "\n" not in msg  # one message, one line


def test_a_kms_alias_arn_is_refused_with_how_to_find_the_key_arn():
    """KMS Developer Guide, "Aliases in AWS KMS" / "Using aliases to control access to KMS keys":
    an alias ARN in a policy's Resource element controls access to the alias, not to the key, so
    the task role's kms:Decrypt / kms:GenerateDataKey grant on an alias ARN grants nothing."""
    alias = "arn:aws:kms:eu-west-1:123456789012:alias/mlflow-artifacts"
    with pytest.raises(config.SettingsError) as info:
        config.load_settings({"bucketKmsKeyArn": alias, "allowedCidrs": "10.0.0.0/8"})
    msg = str(info.value)
    assert f"{NS}:bucketKmsKeyArn" in msg and "aws kms describe-key" in msg and "KeyMetadata.Arn" in msg
    assert "\n" not in msg
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert config.load_settings({"bucketKmsKeyArn": key, "allowedCidrs": "10.0.0.0/8"}).bucket_kms_key_arn == key


def test_prod_refuses_to_run_without_a_certificate():
    with pytest.raises(config.SettingsError,
                       match=f"{NS}:hostedZoneId.*allowed: a Route 53 hosted zone ID.*certificateArn.*allowInsecureHttp"):
        config.load_settings({"environment": "prod", "imageRef": PROMOTED_REF})


def test_prod_runs_on_http_only_when_explicitly_allowed():
    """And, like any plain-HTTP stack, with the admitted networks chosen on purpose."""
    with pytest.raises(config.SettingsError, match=f"{NS}:allowedCidrs"):
        config.load_settings({"environment": "prod", "imageRef": PROMOTED_REF, "allowInsecureHttp": "true"})
    s = config.load_settings({"environment": "prod", "imageRef": PROMOTED_REF, "allowInsecureHttp": "true",
                              "allowedCidrs": "10.0.0.0/8"})
    assert s.certificate_arn is None and s.allow_insecure_http


def test_prod_never_builds_it_needs_a_promoted_image_ref():
    with pytest.raises(config.SettingsError, match=f"{NS}:imageRef.*prod never builds"):
        config.load_settings({"environment": "prod", "certificateArn": CERT, "domainName": "mlflow.example.com"})


def test_settings_error_is_a_clean_pulumi_run_error():
    """RunError: the Pulumi language host prints the message alone, without a stack trace."""
    assert issubclass(config.SettingsError, pulumi.RunError)
    assert issubclass(config.SettingsError, ValueError)


def test_secret_values_are_not_echoed_in_errors():
    pulumi.runtime.set_all_config({f"{NS}:oops": "hunter2-very-secret"}, [f"{NS}:oops"])
    try:
        with pytest.raises(config.SettingsError) as info:
            config.load_settings()
    finally:
        pulumi.runtime.set_all_config({}, [])
    assert "hunter2" not in str(info.value) and "[secret]" in str(info.value)


def test_unknown_key_in_the_stack_config_fails_the_program_before_any_resource():
    with pytest.raises(config.SettingsError, match=f"{NS}:natmode"):
        run_program("dev", natmode="none")


def test_the_committed_prod_file_stops_at_preview_until_https_is_set():
    with pytest.raises(config.SettingsError, match=f"{NS}:hostedZoneId.*certificateArn"):
        run_program("prod")


def test_bad_value_fails_the_program_with_the_message_and_registers_nothing():
    import program

    captured = {}

    def body():
        try:
            program.define_stack()
        except config.SettingsError as err:
            captured["err"] = err

    result = run(body, stack_config("dev", ephemeralStorageGib=20))
    assert "ephemeralStorageGib = '20'" in str(captured["err"])
    assert result.resources == []


def test_config_is_read_from_the_engine_environment_too(monkeypatch):
    """The language host passes config as PULUMI_CONFIG (JSON); unknown keys there are caught too."""
    import json

    pulumi.runtime.set_all_config({}, [])
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"{NS}:natMode": "none", "aws:region": "eu-west-1",
                                                    f"{NS}:allowedCidrs": "10.0.0.0/8"}))
    assert config.load_settings().nat_mode == "none"
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"{NS}:nope": "1"}))
    with pytest.raises(config.SettingsError, match=f"{NS}:nope"):
        config.load_settings()


# --- connection pool sizing ------------------------------------------------------------------

@pytest.mark.parametrize("engine,min_acu,max_acu,tasks,workers", [
    ("mysql", 0, 2, 1, 2), ("mysql", 1, 8, 6, 2), ("mysql", 0.5, 1, 2, 2), ("postgresql", 0, 1, 1, 4),
    ("postgresql", 2, 16, 20, 4), ("mysql", 1, 256, 60, 16),
])
@pytest.mark.parametrize("jobs", [False, True])
def test_pool_sizing_keeps_the_fleet_within_the_connection_limit(engine, min_acu, max_acu, tasks, workers, jobs):
    """Every engine of every worker (tracking, model registry, basic-auth; + jobs store with the
    job runner) and the `mlflow server` process's own connections (3), per task."""
    p = pool_sizing(engine=engine, min_acu=min_acu, max_acu=max_acu, max_tasks=tasks, workers=workers,
                    job_execution=jobs)
    assert p.pool_size >= 1 and p.max_overflow >= 0
    assert p.engines_per_worker == (4 if jobs else 3)
    fleet = tasks * (workers * p.engines_per_worker * (p.pool_size + p.max_overflow) + 3)
    assert fleet == p.fleet_connections == tasks * p.task_connections
    assert fleet <= 0.8 * p.connection_limit - 5


def test_pool_prefers_kept_connections_up_to_ten():
    """10 kept, no overflow when the budget allows (the measured default); fewer when it does not."""
    roomy = pool_sizing(engine="mysql", min_acu=0, max_acu=8, max_tasks=2, workers=2)
    assert (roomy.pool_size, roomy.max_overflow) == (10, 0)
    tight = pool_sizing(engine="mysql", min_acu=1, max_acu=1, max_tasks=2, workers=2)  # ~45 connections
    assert (tight.pool_size, tight.max_overflow) == (2, 0)  # floor((floor((floor(0.8 × 45) − 5) / 2) − 3) / 6) = 2


def test_connection_limit_estimates_match_documented_small_classes():
    assert aurora_connection_limit("mysql", 1, 1) == 45  # 2 GiB (db.t3.small: 45)
    assert aurora_connection_limit("mysql", 1, 2) == 90  # 4 GiB (db.t3.medium: 90)
    assert aurora_connection_limit("postgresql", 1, 1) == 168
    assert aurora_connection_limit("mysql", 0.5, 256) == 2000  # capped with a 0/0.5 ACU minimum


def test_pool_sizing_refuses_a_fleet_that_cannot_fit():
    with pytest.raises(PoolTooSmall):
        pool_sizing(engine="mysql", min_acu=1, max_acu=1, max_tasks=40, workers=4)


def test_disposable_defaults_follow_protect_data():
    """A stack with protectData false (e.g. an ephemeral test stack) destroys cleanly by default."""
    net = {"allowedCidrs": "10.0.0.0/8"}
    s = config.load_settings({"protectData": "false", **net})
    assert (s.deletion_protection, s.final_snapshot, s.bucket_force_destroy) == (False, False, True)
    s = config.load_settings({"protectData": "true", **net})
    assert (s.deletion_protection, s.final_snapshot, s.bucket_force_destroy) == (True, True, False)
    s = config.load_settings({"protectData": "false", "deletionProtection": "true", **net})
    assert s.deletion_protection is True


def test_every_setting_is_documented_in_the_settings_table():
    from tests.unit.harness import ROOT

    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text[text.index("\n## Settings\n"):text.index("\n## Stack outputs\n")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in rows] == list(config.KEYS)
