"""The database admin step (`python3 image/entrypoint.py admin`) as a deployment runs it, for tests.

    master = ensure_master(mariadb)                      # an RDS-like master user on the peer (idempotent)
    env = admin_env(mariadb, "mlflow_app", "pw", "mlflow", "mlflow_auth")   # + master credentials
    result = run_admin_step(env)                         # -> tests.support.server.Finished
    result = run_admin_step(env, upgrade=True)           # `admin --upgrade` (an old schema: exit 3 without)
    prepare_databases(mariadb, "mlflow_app", "pw", "mlflow", "mlflow_auth")  # the same, must exit 0

The master is what RDS gives a cluster's master user, not the peer's superuser:
 - MariaDB/MySQL: the privileges Amazon RDS grants the master user (RDS User Guide, "Master user
   account privileges": SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES,
   INDEX, ALTER, SHOW DATABASES, CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, REPLICATION SLAVE,
   REPLICATION CLIENT, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, EVENT,
   TRIGGER on *.* WITH GRANT OPTION), so no SUPER;
 - PostgreSQL: LOGIN CREATEDB CREATEROLE and no SUPERUSER (on RDS the master is a member of
   rds_superuser, which is not a superuser).
Its password carries every URL-special character, so the admin step's URL building is tested too.
A server started after the admin step gets the application user only (`database_env`), never
these credentials.
"""

from __future__ import annotations

from tests.support.peers import LOOPBACK
from tests.support.server import Finished, run_entrypoint

MASTER_USER = "mlflow_master"
MASTER_PASSWORD = "M4ster@:/?#%25&+pw"
RDS_MYSQL_MASTER_PRIVILEGES = (
    "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, RELOAD, PROCESS, REFERENCES, INDEX, ALTER, SHOW DATABASES, "
    "CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, REPLICATION SLAVE, REPLICATION CLIENT, CREATE VIEW, "
    "SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, CREATE USER, EVENT, TRIGGER")
ADMIN_VARIABLES = ("MLFLOW_DB_ADMIN_USER", "MLFLOW_DB_ADMIN_PASSWORD")


def ensure_master(db) -> tuple[str, str]:
    """Create (once per peer) the RDS-like master user; returns (user, password)."""
    if getattr(db, "_master_made", False):
        return MASTER_USER, MASTER_PASSWORD
    conn = db._connect()  # the peer's superuser over its unix socket
    try:
        with conn.cursor() as cur:
            if db.engine == "mysql":
                cur.execute(f"CREATE USER IF NOT EXISTS '{MASTER_USER}'@'%%' IDENTIFIED BY %s", (MASTER_PASSWORD,))
                cur.execute(f"GRANT {RDS_MYSQL_MASTER_PRIVILEGES} ON *.* TO '{MASTER_USER}'@'%' WITH GRANT OPTION")
            else:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (MASTER_USER,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(f'{verb} ROLE "{MASTER_USER}" LOGIN CREATEDB CREATEROLE NOSUPERUSER PASSWORD %s',
                            (MASTER_PASSWORD,))
    finally:
        conn.close()
    db._master_made = True
    return MASTER_USER, MASTER_PASSWORD


def admin_env(db, user: str, password: str | None, name: str = "mlflow", auth_name: str = "mlflow_auth",
              secret_arn: str | None = None) -> dict[str, str]:
    """The admin container's environment (components/container_definition.py, the README's contract)
    for a peer: the master credentials, the application user's name, and either its password
    (local use) or its Secrets Manager secret."""
    master, master_password = ensure_master(db)
    env = {"MLFLOW_DB_ENGINE": db.engine, "MLFLOW_DB_HOST": LOOPBACK, "MLFLOW_DB_PORT": str(db.port),
           "MLFLOW_DB_NAME": name, "MLFLOW_AUTH_DB_NAME": auth_name, "MLFLOW_DB_USER": user,
           "MLFLOW_DB_ADMIN_USER": master, "MLFLOW_DB_ADMIN_PASSWORD": master_password}
    if password is not None:
        env["MLFLOW_DB_PASSWORD"] = password
    if secret_arn is not None:
        env["MLFLOW_DB_APP_SECRET_ARN"] = secret_arn
    return env


def run_admin_step(env: dict[str, str], timeout: float = 300, upgrade: bool = False) -> Finished:
    """`entrypoint.py admin` (`admin --upgrade` with `upgrade`: schemas below the image's heads are
    upgraded instead of exit 3) to completion (see run_entrypoint for the clean environment)."""
    return run_entrypoint(env, ("admin", "--upgrade") if upgrade else ("admin",), timeout=timeout)


def prepare_databases(db, user: str, password: str, name: str = "mlflow", auth_name: str = "mlflow_auth",
                      **extra: str) -> Finished:
    """Run the admin step for these databases and application user; fail loudly unless it exits 0."""
    result = run_admin_step({**admin_env(db, user, password, name, auth_name), **extra})
    if result.returncode != 0:
        raise AssertionError(f"the admin step exited {result.returncode}:\n{result.output[-4000:]}")
    return result


def drop_app_user(db, user: str) -> None:
    """Remove an application user the admin step created (after its databases were dropped)."""
    if db.engine == "mysql":
        db.execute(f"DROP USER IF EXISTS '{user}'@'%'", f"DROP USER IF EXISTS '{user}'@'127.0.0.1'")
    else:
        db.execute(f'DROP ROLE IF EXISTS "{user}"')
