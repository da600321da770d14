"""The takeover setting (docs/takeover.md, components/takeover.py) and the dump splitters of
image/admin_import.py, without a database.

IAM (IAM User Guide, "Grant least privilege"): with `takeover`, the admin task role may s3:GetObject
exactly the dump objects under `takeover/` (plus kms:Decrypt on the bucket's key with SSE-KMS), and the
server's role is unchanged (its grant covers `<prefix>/*` only, so it cannot read a dump)."""

from __future__ import annotations

import importlib
import io
import sys
from pathlib import Path

import pytest

from components.takeover import parse
from config_parsers import SettingsError
from tests.unit.conftest import run_program

IMAGE = Path(__file__).resolve().parents[2] / "image"
TAKEOVER = {"dump": "mlflow.sql.gz", "authDump": "mlflow_auth.sql.gz", "artifactRoot": "s3://old-bucket/team/mlruns/"}


@pytest.fixture(scope="module")
def taken_over():
    return run_program("dev", takeover=TAKEOVER)


def admin_env(run) -> dict:
    (c,) = run.named("mlflow-service-dbadmin-task").container_definitions()
    return {e["name"]: e["value"] for e in c["environment"]}


def test_the_admin_task_reads_exactly_the_dump_objects(taken_over, dev):
    bucket = taken_over.one("aws:s3/bucket:Bucket").outputs
    statements = {s["Sid"]: s for s in taken_over.named("mlflow-service-dbadmin-task-policy").policy()["Statement"]}
    assert statements["TakeoverDumps"]["Action"] == ["s3:GetObject"]
    assert statements["TakeoverDumps"]["Resource"] == [f"{bucket['arn']}/takeover/mlflow.sql.gz",
                                                       f"{bucket['arn']}/takeover/mlflow_auth.sql.gz"]
    assert "TakeoverDumpsKey" not in statements  # SSE-S3 in dev: no key to grant
    assert taken_over.named("mlflow-service-task-policy").policy() == dev.named("mlflow-service-task-policy").policy()
    env = admin_env(taken_over)
    assert env["MLFLOW_IMPORT_TRACKING_DUMP"] == f"s3://{bucket['bucket']}/takeover/mlflow.sql.gz"
    assert env["MLFLOW_IMPORT_AUTH_DUMP"] == f"s3://{bucket['bucket']}/takeover/mlflow_auth.sql.gz"
    assert env["MLFLOW_IMPORT_ARTIFACT_ROOT"] == "s3://old-bucket/team/mlruns"


def test_without_the_setting_nothing_of_it_exists(dev, prod):
    for run in (dev, prod):
        assert not [k for k in admin_env(run) if k.startswith("MLFLOW_IMPORT_")]
        sids = [s["Sid"] for s in run.named("mlflow-service-dbadmin-task-policy").policy()["Statement"]]
        assert sids == ["ApplicationUserSecret"]


@pytest.mark.parametrize("value,words", [
    ({"authDump": "a.sql"}, "allowed: empty, or an object"),
    ({"dump": "../etc/passwd"}, "a file name"),
    ({"dump": "a.sql", "authDump": "a.sql"}, "two different files"),
    ({"dump": "a.sql", "artifactRoot": "gs://b/p"}, "artifactRoot: s3://"),
    ({"dump": "a.sql", "bucket": "other"}, "allowed: empty, or an object"),
])
def test_bad_takeover_settings_are_one_message(value, words):
    import config

    with pytest.raises(SettingsError, match="mlflow-tracking:takeover") as e:
        config._takeover("takeover", value)
    assert words in str(e.value)


def test_the_setting_as_the_engine_passes_it():
    assert parse('{"dump": "m.sql"}').keys == ["takeover/m.sql"]
    assert parse("") is None and parse(None) is None


# ---- the splitters (image/admin_import.py) -------------------------------------------------
@pytest.fixture(scope="module")
def loader_module():
    sys.path.insert(0, str(IMAGE))
    try:
        yield importlib.import_module("admin_import")
    finally:
        sys.path.remove(str(IMAGE))


def split(module, cls, text: str) -> list[str]:
    lines = module._Lines(io.BytesIO(text.encode()))
    return list(cls(None, None, "tracking", "dump.sql").split(lines))


def test_mysql_statements_end_at_the_delimiter_at_end_of_line(loader_module):
    m = loader_module
    text = ("/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n\n/*!40101 SET NAMES utf8mb4 */;\n"
            "CREATE TABLE `t` (\n  `a` varchar(10) DEFAULT ';',\n  `b` int\n) ENGINE=InnoDB;\n"
            "INSERT INTO `t` VALUES ('x;\\ny',1),('z',2);\nDELIMITER ;;\n"
            "/*!50003 CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.b = 1;\nEND */;;\n"
            "DELIMITER ;\nUNLOCK TABLES;\n")
    assert split(m, m.MysqlLoader, text) == [
        "/*!40101 SET NAMES utf8mb4 */", "CREATE TABLE `t` (\n  `a` varchar(10) DEFAULT ';',\n  `b` int\n) ENGINE=InnoDB",
        "INSERT INTO `t` VALUES ('x;\\ny',1),('z',2)",
        "/*!50003 CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.b = 1;\nEND */", "UNLOCK TABLES"]
    with pytest.raises(m.ImportError_, match="ends inside a statement"):
        split(m, m.MysqlLoader, "CREATE TABLE `t` (\n  `a` int\n")


def test_postgresql_statements_skip_strings_bodies_comments_and_restrict_lines(loader_module):
    m = loader_module
    text = ("\\restrict AbC123\n--\n-- PostgreSQL database dump\n--\nSET client_encoding = 'UTF8';\n"
            "SELECT pg_catalog.set_config('search_path', '', false);\n"
            "COMMENT ON TABLE public.t IS 'a;\nb''c;';\n"
            "CREATE FUNCTION public.f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql; -- done;\n"
            "/* x; */ CREATE TABLE public.\"we;rd\" (a int);\n\\unrestrict AbC123\n")
    assert split(m, m.PostgresLoader, text) == [
        "SET client_encoding = 'UTF8'", "SELECT pg_catalog.set_config('search_path', '', false)",
        "COMMENT ON TABLE public.t IS 'a;\nb''c;'",
        "CREATE FUNCTION public.f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
        "/* x; */ CREATE TABLE public.\"we;rd\" (a int)"]
    with pytest.raises(m.ImportError_, match=r"psql command \\connect:"):
        split(m, m.PostgresLoader, "\\connect mlflow\n")
    with pytest.raises(m.ImportError_, match="ends inside a statement"):
        split(m, m.PostgresLoader, "CREATE TABLE public.t (\n a text DEFAULT 'open\n")
