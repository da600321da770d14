"""The admin step's application user (admin_step.py, step 3): created when missing and left exactly
read/write on rows of the tracking and auth databases (MySQL/MariaDB and PostgreSQL grants, in
admin_step.py's docstring), its password set from the application user's secret (generated and
stored the first time) or MLFLOW_DB_PASSWORD, and the quoting these statements need.

`ep` is the running entrypoint module, as in admin_step.py.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING

import db_wait

if TYPE_CHECKING:
    from admin_step import Target

ROW_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")
SEQUENCE_PRIVILEGES = ("USAGE", "SELECT", "UPDATE")
# PutSecretValue's ClientRequestToken (32..64 characters) for the first, generated password: a second
# admin step storing its own at the same moment is refused (the version exists with another value)
# and uses the stored one (AWS Secrets Manager API Reference, PutSecretValue, ClientRequestToken)
FIRST_VERSION_TOKEN = "mlflow-admin-step-generated-app-password-v1"
SECRET_SOURCE = "the application user's secret (MLFLOW_DB_APP_SECRET_ARN)"


# --------------------------------------------------------------------------------------------
# the application user
# --------------------------------------------------------------------------------------------
def mysql_user(ep, t: Target, password: str) -> None:
    import sqlalchemy

    sql = sqlalchemy.text
    who = {"u": t.user, "h": "%"}
    grantee = f"'{t.user}'@'%'"
    engine = ep._engine(t.tracking._replace(database=None), isolation_level="AUTOCOMMIT")
    schemas = [db_pattern(engine, u.database) for u in (t.tracking, t.auth)]
    grants = [f"GRANT {', '.join(ROW_PRIVILEGES)} ON {s}.* TO :u@:h" for s in schemas]
    with engine.connect() as conn:
        exists = conn.execute(sql("SELECT 1 FROM mysql.user WHERE User = :u AND Host = :h"), who).first()
        if not exists:
            conn.execute(sql("CREATE USER IF NOT EXISTS :u@:h IDENTIFIED BY :p"), {**who, "p": password})
            ep.info(f"created user {t.user!r} ({grantee})")
        else:
            ep.info(f"user {t.user!r} exists ({grantee})")
        wanted = {(s.replace("`", ""), p) for s in schemas for p in ROW_PRIVILEGES}
        held = {(r[0], r[1]) for r in conn.execute(sql(
            "SELECT TABLE_SCHEMA, PRIVILEGE_TYPE FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = :g"),
            {"g": grantee})}
        extra = sorted({f"{p} ON {s}.*" for s, p in held - wanted})
        extra += sorted({f"{r[0]} ON *.*" for r in conn.execute(sql(
            "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = :g"), {"g": grantee})
            if r[0] != "USAGE"})
        extra += sorted({f"{r[2]} ON {r[0]}.{r[1]}" for r in conn.execute(sql(
            "SELECT TABLE_SCHEMA, TABLE_NAME, PRIVILEGE_TYPE FROM information_schema.TABLE_PRIVILEGES "
            "WHERE GRANTEE = :g"), {"g": grantee})})
        granting = conn.execute(sql(
            "SELECT COUNT(*) FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = :g AND IS_GRANTABLE = 'YES'"),
            {"g": grantee}).scalar()
        if extra or granting:
            # MySQL applies database privilege changes to a session at its next USE, so the
            # moment between the two statements does not reach open connections
            conn.execute(sql("REVOKE ALL PRIVILEGES, GRANT OPTION FROM :u@:h"), who)
            ep.info(f"revoked every privilege of user {t.user!r} beyond rows of the two databases: "
                    f"{', '.join(extra) or 'GRANT OPTION'}")
        for grant in grants:
            conn.execute(sql(grant), who)
    ep.info(f"user {t.user!r} may {', '.join(ROW_PRIVILEGES)} rows in {t.tracking.database!r} and "
            f"{t.auth.database!r}, nothing else")


def postgresql_user(ep, t: Target, password: str) -> None:
    import sqlalchemy

    sql = sqlalchemy.text
    admin = ep._engine(t.tracking, isolation_level="AUTOCOMMIT")
    role, master = quote(admin, t.user), quote(admin, t.master)
    revoked: list[str] = []
    with admin.connect() as conn:
        attrs = conn.execute(sql("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = :u"),
                             {"u": t.user}).first()
        if attrs is None:
            try:
                conn.execute(sql(f"CREATE ROLE {role} LOGIN PASSWORD :p"), {"p": password})
                ep.info(f"created user {t.user!r}")
            except sqlalchemy.exc.ProgrammingError as e:
                raise ep.Fatal(f"master user {t.master!r} may not create user {t.user!r} ({driver_text(e)})") from None
        else:
            ep.info(f"user {t.user!r} exists")
            if attrs[0]:
                raise ep.Fatal(f"user {t.user!r} is a superuser: the application user must not be (drop it, or "
                               f"set MLFLOW_DB_USER to another name)")
            if attrs[1] or attrs[2]:
                conn.execute(sql(f"ALTER ROLE {role} NOCREATEDB NOCREATEROLE"))
                revoked += [a for a, on in (("CREATEDB", attrs[1]), ("CREATEROLE", attrs[2])) if on]
    for url in (t.tracking, t.auth):
        database = quote(admin, url.database)
        with ep._engine(url).begin() as conn:  # one transaction per database
            q = {"u": t.user}
            if conn.execute(sql("SELECT has_database_privilege(:u, current_database(), 'CREATE')"), q).scalar():
                conn.execute(sql(f"REVOKE CREATE ON DATABASE {database} FROM {role}"))
                revoked.append(f"CREATE ON DATABASE {url.database}")
            if conn.execute(sql("SELECT has_schema_privilege(:u, 'public', 'CREATE')"), q).scalar():
                conn.execute(sql(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}"))
                revoked.append(f"CREATE ON SCHEMA public of {url.database} (also from PUBLIC)")
            for kinds, allowed, objects in (("'r', 'p', 'v', 'm', 'f'", ROW_PRIVILEGES, "TABLES"),
                                            ("'S'", SEQUENCE_PRIVILEGES, "SEQUENCES")):
                held = {r[0] for r in conn.execute(sql(
                    f"SELECT DISTINCT a.privilege_type FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a "
                    f"WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ({kinds}) "
                    f"AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = :u)"), q)}
                extra = sorted(held - set(allowed))
                if extra:
                    conn.execute(sql(f"REVOKE {', '.join(extra)} ON ALL {objects} IN SCHEMA public FROM {role}"))
                    revoked.append(f"{', '.join(extra)} ON ALL {objects} of {url.database}")
            for statement in (
                    f"GRANT CONNECT ON DATABASE {database} TO {role}",
                    f"GRANT USAGE ON SCHEMA public TO {role}",
                    f"GRANT {', '.join(ROW_PRIVILEGES)} ON ALL TABLES IN SCHEMA public TO {role}",
                    f"GRANT {', '.join(SEQUENCE_PRIVILEGES)} ON ALL SEQUENCES IN SCHEMA public TO {role}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {master} IN SCHEMA public "
                    f"GRANT {', '.join(ROW_PRIVILEGES)} ON TABLES TO {role}",
                    f"ALTER DEFAULT PRIVILEGES FOR ROLE {master} IN SCHEMA public "
                    f"GRANT {', '.join(SEQUENCE_PRIVILEGES)} ON SEQUENCES TO {role}"):
                conn.execute(sql(statement))
    if revoked:
        ep.info(f"revoked from user {t.user!r}: {'; '.join(revoked)}")
    ep.info(f"user {t.user!r} may {', '.join(ROW_PRIVILEGES)} rows (and use sequences) in {t.tracking.database!r} "
            f"and {t.auth.database!r}, also in tables the master creates later; nothing else")


def ensure_password(ep, t: Target, password: str, source: str) -> None:
    """Set the application user's password to `password` unless a login with it already works."""
    import sqlalchemy

    app = t.tracking.set(username=t.user, password=password)
    try:
        with ep._engine(app).connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
        ep.info(f"the password of user {t.user!r} matches {source}")
        return
    except sqlalchemy.exc.SQLAlchemyError as e:
        category, line = db_wait.classify(t.kind, app, e)
        if category != "login":
            raise ep.Fatal(f"user {t.user!r} cannot connect to {t.tracking.database!r}: {line}") from None
    if t.kind == "mysql":
        engine = ep._engine(t.tracking._replace(database=None), isolation_level="AUTOCOMMIT")
        statement, params = "ALTER USER :u@:h IDENTIFIED BY :p", {"u": t.user, "h": "%", "p": password}
    else:
        engine = ep._engine(t.tracking, isolation_level="AUTOCOMMIT")
        statement, params = f"ALTER ROLE {quote(engine, t.user)} PASSWORD :p", {"p": password}
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(statement), params)
    ep.info(f"set the password of user {t.user!r} to {source}")


# --------------------------------------------------------------------------------------------
# the application user's password
# --------------------------------------------------------------------------------------------
def app_password(ep, env: dict, user: str) -> tuple[str, str]:
    """(password, where it comes from): MLFLOW_DB_PASSWORD as given, or the app secret's."""
    arn = env.get("MLFLOW_DB_APP_SECRET_ARN", "").strip()
    given = env.get("MLFLOW_DB_PASSWORD", "")
    if arn and given:
        raise ep.Fatal("set MLFLOW_DB_APP_SECRET_ARN (the application user's secret) or MLFLOW_DB_PASSWORD "
                       "(local use), not both")
    if given:
        return ep.secret(given), "MLFLOW_DB_PASSWORD"
    if not arn:
        raise ep.Fatal("the admin step needs MLFLOW_DB_APP_SECRET_ARN (the application user's Secrets Manager "
                       "secret) or, for local use, MLFLOW_DB_PASSWORD (the application user's password)")
    return secret_password(ep, env, arn, user), SECRET_SOURCE


def secret_password(ep, env: dict, arn: str, user: str) -> str:
    """The password in the secret; a generated one stored first when the secret has no value."""
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    parts = arn.split(":")
    region = env.get("AWS_REGION", "").strip() or (parts[3] if len(parts) > 3 and parts[3] else None)
    # endpoint: AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL when set (botocore reads them)
    client = boto3.client("secretsmanager", region_name=region,
                          config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3,
                                                                                     "mode": "standard"}))
    name = f"MLFLOW_DB_APP_SECRET_ARN={arn}"

    def failed(e: Exception, action: str) -> Exception:
        if isinstance(e, botocore.exceptions.ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return ep.Fatal(f"the application user's secret {name} does not exist (or is in another region)")
            if code in ("AccessDeniedException", "AccessDenied"):
                return ep.Fatal(f"the admin task may not {action} the application user's secret {name} (its task "
                                f"role needs secretsmanager:GetSecretValue and PutSecretValue on it)")
            return ep.Fatal(f"{action} of the application user's secret {name} failed: {code}")
        if isinstance(e, botocore.exceptions.NoCredentialsError):
            return ep.Fatal(f"no AWS credentials found to read the application user's secret ({name})")
        return ep.Fatal(f"cannot reach Secrets Manager for the application user's secret {name}: {type(e).__name__}")

    def current() -> str | None:
        try:
            value = client.get_secret_value(SecretId=arn)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None  # no such secret, or no value yet: PutSecretValue tells which
            raise failed(e, "GetSecretValue") from None
        except botocore.exceptions.BotoCoreError as e:
            raise failed(e, "GetSecretValue") from None
        return value.get("SecretString")

    text = current()
    if text is None:
        generated = ep.secret(secrets.token_urlsafe(32))
        try:
            client.put_secret_value(SecretId=arn, ClientRequestToken=FIRST_VERSION_TOKEN,
                                    SecretString=json.dumps({"username": user, "password": generated}))
            ep.info(f"stored a generated password for user {user!r} in the application user's secret")
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ResourceExistsException":
                raise failed(e, "PutSecretValue") from None
            ep.info("another admin step stored the application user's password a moment ago: using it")
        except botocore.exceptions.BotoCoreError as e:
            raise failed(e, "PutSecretValue") from None
        text = current()
        if text is None:
            raise ep.Fatal(f"the application user's secret {name} has no value after PutSecretValue")
    else:
        ep.info("the application user's password: from its secret")
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not isinstance(value.get("password"), str) or not value["password"]:
        raise ep.Fatal(f"the application user's secret {name} is not JSON with a non-empty \"password\"")
    if value.get("username") not in (None, user):
        raise ep.Fatal(f"the application user's secret {name} is for user {value['username']!r}, not "
                       f"MLFLOW_DB_USER={user!r}")
    return ep.secret(value["password"])


# --------------------------------------------------------------------------------------------
# quoting
# --------------------------------------------------------------------------------------------
def quote(bind, name: str) -> str:
    """An identifier, always quoted by the dialect (backticks / double quotes, doubled inside)."""
    return bind.dialect.identifier_preparer.quote_identifier(name)


def db_pattern(bind, name: str) -> str:
    """A MySQL database name for GRANT ... ON <name>.*: quoted, with the wildcards _ and % escaped."""
    return quote(bind, name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%"))


def driver_text(e: Exception) -> str:
    """The driver's message only (SQLAlchemy's adds the statement and its parameters)."""
    return " ".join(str(getattr(e, "orig", None) or e).split())[:300]
