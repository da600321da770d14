"""MLFLOW_DB_TLS_CA into connection settings (image/db_tls.py), checked against the drivers themselves.

What "verified" means is what the drivers do with the URL, so the URL is handed to SQLAlchemy's
own dialects and, for MySQL, to a PyMySQL connection object that is built but not connected
(PyMySQL 1.2 `defer_connect`): its SSL context must require a certificate and check the host
name. PostgreSQL: libpq's `verify-full` (PostgreSQL manual, "SSL Support", table "SSL Mode
Descriptions": verify the chain and that the server host name matches the certificate). AWS:
"Using SSL/TLS to encrypt a connection to a DB cluster" (Amazon Aurora User Guide).
"""

from __future__ import annotations

import ssl

import pytest
from sqlalchemy.engine import make_url

from tests.support.server import load_entrypoint
from tests.support.tls import TestCA

load_entrypoint()  # puts image/ on sys.path
import db_tls  # noqa: E402
import db_wait  # noqa: E402

MYSQL = "mysql+pymysql://u:p%40w@db.example:3306/mlflow"
PG = "postgresql+psycopg2://u:p%40w@db.example:5432/mlflow"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca")).cert_path


def pymysql_connection(url):
    """A PyMySQL connection object made from `url` as SQLAlchemy makes it, not connected."""
    import pymysql
    from sqlalchemy.dialects.mysql.pymysql import MySQLDialect_pymysql

    _, kwargs = MySQLDialect_pymysql().create_connect_args(url)
    return pymysql.connections.Connection(**kwargs, defer_connect=True)


def test_mysql_requires_tls_and_verifies_chain_and_host_name(ca):
    url = db_tls.secure_url({"MLFLOW_DB_TLS_CA": str(ca)}, "mysql", make_url(MYSQL))
    assert dict(url.query) == {"ssl_ca": str(ca), "ssl_check_hostname": "true"}
    conn = pymysql_connection(url)
    assert conn.ssl and conn._ssl_required, "PyMySQL must refuse a server without TLS"
    assert conn.ctx.verify_mode == ssl.CERT_REQUIRED and conn.ctx.check_hostname
    assert [c["subject"] for c in conn.ctx.get_ca_certs()] == [((("commonName", "mlflow test CA"),),)], \
        "only the bundle's CAs, not the system's"


def test_postgresql_verify_full_with_the_bundle(ca):
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2

    url = db_tls.secure_url({"MLFLOW_DB_TLS_CA": str(ca)}, "postgresql", make_url(PG))
    _, kwargs = PGDialect_psycopg2().create_connect_args(url)
    assert (kwargs["sslmode"], kwargs["sslrootcert"]) == ("verify-full", str(ca))


@pytest.mark.parametrize("env", [{}, {"MLFLOW_DB_TLS_CA": ""}, {"MLFLOW_DB_TLS_CA": "  "}], ids=["unset", "empty", "blank"])
def test_no_bundle_means_plain_not_the_drivers_unverified_default(env):
    """PyMySQL 1.2 alone would try TLS without verifying anything (PREFERRED), libpq too
    (sslmode=prefer): plain is asked for explicitly."""
    assert not pymysql_connection(make_url(MYSQL)).ctx.verify_mode, "the premise: PyMySQL's default verifies nothing"
    mysql = db_tls.secure_url(env, "mysql", make_url(MYSQL))
    assert dict(mysql.query) == {"ssl_disabled": "true"} and not pymysql_connection(mysql).ssl
    assert dict(db_tls.secure_url(env, "postgresql", make_url(PG)).query) == {"sslmode": "disable"}


def test_a_given_uri_keeps_its_own_tls_without_a_bundle_and_may_not_mix(ca):
    own = make_url(PG + "?sslmode=require")
    assert db_tls.secure_url({}, "postgresql", own, from_uri=True) == own
    with pytest.raises(db_tls.TLSSettingError) as refused:
        db_tls.secure_url({"MLFLOW_DB_TLS_CA": str(ca)}, "postgresql", own, from_uri=True)
    assert "MLFLOW_BACKEND_STORE_URI sets sslmode" in str(refused.value)
    plain_uri = db_tls.secure_url({"MLFLOW_DB_TLS_CA": str(ca)}, "mysql", make_url(MYSQL), from_uri=True)
    assert plain_uri.query["ssl_check_hostname"] == "true"


def test_mlflows_own_mysql_ssl_variables_are_refused_next_to_the_bundle(ca):
    """MLflow passes MLFLOW_MYSQL_SSL_CA as PyMySQL's ssl_ca= keyword (mlflow/store/db/utils.py,
    create_sqlalchemy_engine), which replaces the verified `ssl` dict with an unverified one."""
    import pymysql

    premise = pymysql.connections.Connection(ssl={"ca": str(ca), "check_hostname": True}, ssl_ca=str(ca),
                                             defer_connect=True)
    assert premise.ctx.verify_mode == ssl.CERT_NONE, "the premise: ssl_ca= turns verification off"
    with pytest.raises(db_tls.TLSSettingError) as refused:
        db_tls.secure_url({"MLFLOW_DB_TLS_CA": str(ca), "MLFLOW_MYSQL_SSL_CA": str(ca)}, "mysql", make_url(MYSQL))
    assert "MLFLOW_MYSQL_SSL_CA" in str(refused.value) and "\n" not in str(refused.value)


def test_unusable_bundles_are_one_line(tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("# nothing\n")
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    for path, words in ((tmp_path / "missing.pem", "no such file"), (tmp_path, "not a file"),
                        (empty, "holds no PEM certificate"), (broken, "not a valid PEM CA bundle")):
        with pytest.raises(db_tls.TLSSettingError) as refused:
            db_tls.ca_bundle({"MLFLOW_DB_TLS_CA": str(path)})
        message = str(refused.value)
        assert message.startswith("MLFLOW_DB_TLS_CA=") and words in message and "\n" not in message, message


def mysql_error(code: int, message: str):
    import pymysql

    return pymysql.err.OperationalError(code, message)


def pg_error(message: str):
    import psycopg2

    return psycopg2.OperationalError(message)


VERIFIED_MYSQL = make_url(MYSQL + "?ssl_ca=%2Fapp%2Fcerts%2Frds-global-bundle.pem&ssl_check_hostname=true")
PLAIN_MYSQL = make_url(MYSQL + "?ssl_disabled=true")
VERIFIED_PG = make_url(PG + "?sslmode=verify-full&sslrootcert=%2Fapp%2Fcerts%2Frds-global-bundle.pem")
PLAIN_PG = make_url(PG + "?sslmode=disable")


@pytest.mark.parametrize("kind,url,error,category,words", [
    ("mysql", VERIFIED_MYSQL, mysql_error(2003, "Can't connect to MySQL server on 'db.example' ([SSL: "
     "CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate (_ssl.c:1000))"),
     "tls", ("not signed by a CA in MLFLOW_DB_TLS_CA=/app/certs/rds-global-bundle.pem",
             "unable to get local issuer certificate")),
    ("mysql", VERIFIED_MYSQL, mysql_error(2003, "Can't connect to MySQL server on 'db.example' ([SSL: "
     "CERTIFICATE_VERIFY_FAILED] certificate verify failed: Hostname mismatch, certificate is not valid for "
     "'db.example'. (_ssl.c:1000))"), "tls", ("does not cover host name 'db.example'",)),
    ("mysql", VERIFIED_MYSQL, mysql_error(2026, "SSL is required but the server doesn't support it"), "tls",
     ("does not offer TLS",)),
    ("mysql", PLAIN_MYSQL, mysql_error(3159, "Connections using insecure transport are prohibited while "
     "--require_secure_transport=ON."), "tls", ("refuses connections without TLS", "MLFLOW_DB_TLS_CA is empty")),
    ("mysql", PLAIN_MYSQL, mysql_error(1045, "Access denied for user 'u'@'10.0.0.5' (using password: YES)"),
     "login", ("refused the login", "plain connection", "MLFLOW_DB_TLS_CA is empty")),
    ("postgresql", VERIFIED_PG, pg_error('connection to server at "10.0.0.9", port 5432 failed: SSL error: '
     'certificate verify failed'), "tls", ("not signed by a CA in MLFLOW_DB_TLS_CA=",)),
    ("postgresql", VERIFIED_PG, pg_error('connection to server at "10.0.0.9", port 5432 failed: server '
     'certificate for "other.example" does not match host name "db.example"'), "tls",
     ("does not cover host name 'db.example'",)),
    ("postgresql", PLAIN_PG, pg_error('connection to server at "10.0.0.9", port 5432 failed: FATAL:  no '
     'pg_hba.conf entry for host "10.0.0.5", user "u", database "mlflow", no encryption'), "tls",
     ("accepts no connection without TLS", "MLFLOW_DB_TLS_CA is empty")),
], ids=["mysql-ca", "mysql-host", "mysql-no-tls", "aurora-mysql-plain", "mariadb-plain", "pg-ca", "pg-host",
        "pg-plain"])
def test_tls_failures_are_one_clear_line_and_never_waited_for(kind, url, error, category, words):
    """Driver errors as PyMySQL 1.2 / Python's ssl and libpq 17 word them; MySQL 8 (Aurora MySQL
    3) says error 3159 for a plain connection under require_secure_transport, MariaDB 10.11 1045."""
    got, line = db_wait.classify(kind, url, error)
    assert got == category and got != "unreachable", line
    assert "db.example:" in line and all(w in line for w in words), line
    assert "p@w" not in line and "\n" not in line


def test_a_handshake_that_times_out_is_still_waited_for():
    error = mysql_error(2013, "Lost connection to MySQL server during query (The read operation timed out)")
    assert db_wait.classify("mysql", VERIFIED_MYSQL, error)[0] == "unreachable"
    assert db_wait.classify("mysql", VERIFIED_MYSQL, mysql_error(1045, "Access denied for user 'u'"))[0] == "login"
