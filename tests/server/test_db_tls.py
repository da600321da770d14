"""TLS to the database, enforced and verified (MLFLOW_DB_TLS_CA, image/db_tls.py).

The peers here are MariaDB and PostgreSQL started with a test CA's server certificate (IP
127.0.0.1 and DNS localhost in its subjectAltName) and refusing plain TCP connections, the way
the program's cluster parameter groups make Aurora refuse them: MariaDB with
require_secure_transport=ON (Aurora MySQL's `require_secure_transport`), PostgreSQL with
hostssl-only pg_hba.conf lines (Aurora PostgreSQL's `rds.force_ssl=1`). AWS documents both
in "Using SSL/TLS to encrypt a connection to a DB cluster" (Amazon Aurora User Guide) and
the per-engine pages it links ("TLS connections to Aurora MySQL DB clusters", "Securing
Aurora PostgreSQL data with SSL/TLS"); the per-connection TLS checks below are the queries of
"Updating applications to connect to Aurora MySQL/PostgreSQL DB clusters using new SSL/TLS
certificates" (performance_schema.threads.connection_type; pg_stat_ssl).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.dbadmin import prepare_databases
from tests.support.peers import MariaDB, PostgreSQL, free_port
from tests.support.server import Server, client_env, database_env, run_entrypoint
from tests.support.tls import TestCA

ENGINES = {"mariadb": MariaDB, "postgresql": PostgreSQL}
USER, PASSWORD = "mlflow_tls", "Tls-pa55:w/o@rd%25"
ADMIN_PASSWORD = "Adm1n-pa55word-for-tls"
SECRET_KEY = "flask-secret-key-for-the-tls-tests-0123456789"
# a directory name with URL- and ini-special characters: the path must survive the URL's query
# string and the auth ini's %-interpolation unchanged
ODD_DIR = "certs %25 &+ x"


@pytest.fixture(scope="module")
def pki():
    """The right CA (with a copy under an odd directory name, as the server sees it), a wrong CA
    with the very same subject name (verification goes by signature, not by name), the server
    certificate for 127.0.0.1/localhost and one for another host name, both from the right CA."""
    root = Path(tempfile.mkdtemp(prefix="mlflow-tls-pki-"))
    ca = TestCA(root / "ca", "mlflow test CA")
    wrong = TestCA(root / "wrong-ca", "mlflow test CA")
    odd = root / ODD_DIR / "bundle.pem"
    odd.parent.mkdir()
    shutil.copyfile(ca.cert_path, odd)
    yield {"ca": ca, "wrong": wrong, "odd": odd, "server": ca.issue_server(root / "server"),
           "elsewhere": ca.issue_server(root / "elsewhere", hosts=("db.elsewhere.internal",))}
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=list(ENGINES))
def tls_db(request, pki):
    """A database server that requires TLS, prepared by the admin step (as the master, over
    verified TLS too) with the tracking and auth databases and the application user USER."""
    with ENGINES[request.param](tls=pki["server"]) as db:
        prepare_databases(db, USER, PASSWORD, "mlflow", "mlflow_auth", MLFLOW_DB_TLS_CA=str(pki["ca"].cert_path))
        yield db


def server_env(db, ca, tmp: Path, **extra) -> dict[str, str]:
    return {**database_env(db, USER, PASSWORD), "MLFLOW_DB_TLS_CA": str(ca),
            "MLFLOW_ARTIFACTS_DESTINATION": str(tmp / "artifacts"), "MLFLOW_FLASK_SERVER_SECRET_KEY": SECRET_KEY,
            "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD, "MLFLOW_DB_WAIT_SECONDS": "300",
            "MLFLOW_PORT": str(free_port()), **extra}


def plain_connect(db):
    """A TCP connection without TLS, made with the driver itself."""
    if db.engine == "mysql":
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=db.port, user=USER, password=PASSWORD, database="mlflow",
                               ssl_disabled=True, connect_timeout=5, read_timeout=10)
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=db.port, user=USER, password=PASSWORD, dbname="mlflow",
                            sslmode="disable", connect_timeout=5)


def server_connections_tls(db) -> list:
    """TLS state of every connection of USER: (id, 'SSL/TLS' or other) / (pid, ssl bool)."""
    conn = db._connect()
    try:
        with conn.cursor() as cur:
            if db.engine == "mysql":
                cur.execute("SELECT PROCESSLIST_ID, CONNECTION_TYPE FROM performance_schema.threads "
                            "WHERE PROCESSLIST_USER = %s", (USER,))
            else:
                cur.execute("SELECT a.pid, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                            "WHERE a.usename = %s", (USER,))
            return list(cur.fetchall())
    finally:
        conn.close()


def one_line(result) -> str:
    assert result.returncode == 2 and len(result.error_lines) == 1, result.output
    line = result.error_lines[0]
    assert PASSWORD not in result.output and ADMIN_PASSWORD not in result.output, result.output
    return line


# --- the peers are as strict as the cluster ------------------------------------------------------
def test_the_database_refuses_a_plain_connection(tls_db, pki):
    """require_secure_transport / hostssl-only: the driver's own plain connection is refused, the
    same credentials over verified TLS are accepted (so the refusal is the transport's)."""
    with pytest.raises(Exception) as refused:
        plain_connect(tls_db).close()
    text = str(refused.value)
    # MariaDB 10.11 words it as a refused login; MySQL/Aurora MySQL says error 3159 "insecure transport"
    assert ("no encryption" in text) if tls_db.engine == "postgresql" else ("Access denied" in text), text
    verified_connect(tls_db, pki["ca"].cert_path).close()


def verified_connect(db, ca: Path):
    if db.engine == "mysql":
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=db.port, user=USER, password=PASSWORD, database="mlflow",
                               ssl_ca=str(ca), ssl_verify_identity=True, connect_timeout=5, read_timeout=10)
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=db.port, user=USER, password=PASSWORD, dbname="mlflow",
                            sslmode="verify-full", sslrootcert=str(ca), connect_timeout=5)


# --- the server over verified TLS ----------------------------------------------------------------
def test_server_serves_over_verified_tls(tls_db, pki, tmp_path):
    """MLFLOW_DB_TLS_CA=<test CA>: the entrypoint's checks and MLflow's own engines connect; a real
    MLflow client call is served, and every connection of the server's user is a TLS connection
    (on MariaDB also implied by require_secure_transport, checked per connection anyway)."""
    from mlflow.tracking import MlflowClient

    with Server(server_env(tls_db, pki["odd"], tmp_path)) as srv, \
            client_env(srv.client_env("admin", ADMIN_PASSWORD)):
        client = MlflowClient(srv.url)
        experiment = client.create_experiment(f"tls-{tls_db.engine}")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "m", 1.5)
        assert [m.value for m in client.get_metric_history(run.info.run_id, "m")] == [1.5]
        connections = server_connections_tls(tls_db)
    assert connections, "the server holds no connection of its user"
    expected = "SSL/TLS" if tls_db.engine == "mysql" else True
    assert all(state == expected for _, state in connections), connections


def test_mlflow_engines_verify_against_the_bundle(tls_db, pki, tmp_path):
    """The backend store URI and the auth ini's database_uri that the entrypoint hands to MLflow,
    turned into engines by MLflow's own code (create_sqlalchemy_engine, read_auth_config), connect
    over TLS with the bundle, and refuse the server once the bundle holds another CA."""
    from mlflow.server.auth.config import read_auth_config
    from mlflow.store.db.utils import create_sqlalchemy_engine

    bundle = tmp_path / ODD_DIR / "bundle.pem"
    bundle.parent.mkdir()
    shutil.copyfile(pki["ca"].cert_path, bundle)
    with Server(server_env(tls_db, bundle, tmp_path)) as srv:
        environ = server_process_env(srv)
        with client_env({"MLFLOW_AUTH_CONFIG_PATH": environ["MLFLOW_AUTH_CONFIG_PATH"]}):
            auth_uri = read_auth_config().database_uri
    uris = {"backend store": environ["MLFLOW_BACKEND_STORE_URI"], "auth store": auth_uri}
    for what, uri in uris.items():
        assert str(bundle) not in uri, f"the {what} URI must carry the path URL-encoded: {uri}"
        assert tls_state(create_sqlalchemy_engine(uri)) is True, what
    shutil.copyfile(pki["wrong"].cert_path, bundle)
    for what, uri in uris.items():
        with pytest.raises(Exception) as refused:
            tls_state(create_sqlalchemy_engine(uri))
        assert "certificate verify failed" in str(refused.value).lower(), (what, refused.value)


def server_process_env(srv: Server) -> dict[str, str]:
    """The environment of the server process the entrypoint exec'd into (uvicorn: image/direct_launch.py)."""
    environ = Path(f"/proc/{srv.proc.pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in environ.split("\0") if "=" in item)


def tls_state(engine) -> bool:
    import sqlalchemy

    try:
        with engine.connect() as conn:
            if engine.dialect.name == "mysql":
                row = conn.execute(sqlalchemy.text("SHOW SESSION STATUS LIKE 'Ssl_version'")).first()
                return bool(row and row[1].startswith("TLS"))
            return bool(conn.execute(sqlalchemy.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
                        .scalar())
    finally:
        engine.dispose()


# --- what must fail, at once and in one line ---------------------------------------------------------
def test_plain_entrypoint_is_refused_by_the_database(tls_db, tmp_path):
    """MLFLOW_DB_TLS_CA= (empty): plain connections, which the database refuses: exit 2, one line
    naming MLFLOW_DB_TLS_CA, without waiting MLFLOW_DB_WAIT_SECONDS (300) for it."""
    line = one_line(run_entrypoint(server_env(tls_db, "", tmp_path), timeout=90))
    assert "MLFLOW_DB_TLS_CA" in line and f"127.0.0.1:{tls_db.port}" in line, line


def test_wrong_ca_fails_at_once_with_one_line(tls_db, pki, tmp_path):
    """A bundle without the server's CA: exit 2, one line naming TLS certificate verification, the
    server and the bundle; a certificate failure is not "unreachable", so it is not retried."""
    line = one_line(run_entrypoint(server_env(tls_db, pki["wrong"].cert_path, tmp_path), timeout=90))
    assert "TLS" in line and "certificate" in line and f"127.0.0.1:{tls_db.port}" in line, line
    assert "MLFLOW_DB_TLS_CA" in line and "attempt" not in line, line


@pytest.mark.parametrize("engine", list(ENGINES))
def test_certificate_for_another_host_fails_with_one_line(engine, pki, tmp_path):
    """The right CA, but a certificate for another name than MLFLOW_DB_HOST: refused (PyMySQL's
    check_hostname, libpq's verify-full), one line naming the host."""
    with ENGINES[engine](tls=pki["elsewhere"]) as db:
        line = one_line(run_entrypoint(server_env(db, pki["ca"].cert_path, tmp_path), timeout=90))
    assert "TLS" in line and "host name" in line and "'127.0.0.1'" in line, line


@pytest.mark.parametrize("content", [None, "not a certificate\n", "dir"], ids=["missing", "no-pem", "directory"])
def test_unusable_bundle_is_one_line(content, tmp_path):
    """A CA bundle that is missing, holds no certificate or is a directory: exit 2, one line naming
    MLFLOW_DB_TLS_CA, before any connection (no database needed: port 9 answers nothing)."""
    path = tmp_path / "bundle.pem"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content)

    class Nowhere:
        engine, port = "mysql", 9

    line = one_line(run_entrypoint(server_env(Nowhere, path, tmp_path), timeout=60))
    assert line.count("MLFLOW_DB_TLS_CA") == 1 and str(path) in line, line


def test_a_server_without_tls_is_refused_when_tls_is_asked_for(database, pki, tmp_path):
    """MLFLOW_DB_TLS_CA set and a database server that offers no TLS (the session's plain peers):
    no silent fallback to plain (PyMySQL error 2026, libpq "server does not support SSL")."""
    line = one_line(run_entrypoint(server_env(database, pki["ca"].cert_path, tmp_path), timeout=90))
    assert "TLS" in line and "does not offer TLS" in line and f"127.0.0.1:{database.port}" in line, line
