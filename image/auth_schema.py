"""The basic-auth user store's schema, with the fix MLflow needs on MySQL and MariaDB.

MLflow's first auth migration (revision 8606fa83a998, mlflow/server/auth/db/migrations/versions/
8606fa83a998_initial_migration.py) names the foreign key of both `experiment_permissions` and
`registered_model_permissions` `fk_user_id`. Constraint names are per schema on MySQL and
MariaDB, so the second CREATE TABLE fails (errno 121, mlflow issues 9642 and 10964) and, since
DDL is not transactional there, it leaves `users`, `experiment_permissions` and an empty
`alembic_version_auth` behind, on which every later start fails too.

The fix: on MySQL-family databases whose auth schema has no revision yet, create the three tables
of that first revision ourselves, with the same columns and a unique name for each foreign key,
stamp the revision, and let MLflow's own migrations take it from there (the later revisions never
refer to the initial foreign keys by name). A half-created store left by a failed stock
migration is repaired the same way. PostgreSQL and SQLite are left to MLflow as shipped.
"""

from __future__ import annotations

INITIAL_REVISION = "8606fa83a998"
VERSION_TABLE = "alembic_version_auth"
FIXED_FK_NAMES = {
    "experiment_permissions": "fk_experiment_permissions_user_id",
    "registered_model_permissions": "fk_registered_model_permissions_user_id",
}


def _initial_tables():
    import sqlalchemy as sa

    md = sa.MetaData()
    sa.Table(
        "users", md,
        sa.Column("id", sa.Integer(), nullable=False, primary_key=True),
        sa.Column("username", sa.String(length=255), nullable=True),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=True),
        sa.UniqueConstraint("username"),
    )
    sa.Table(
        "experiment_permissions", md,
        sa.Column("id", sa.Integer(), nullable=False, primary_key=True),
        sa.Column("experiment_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("permission", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=FIXED_FK_NAMES["experiment_permissions"]),
        sa.UniqueConstraint("experiment_id", "user_id", name="unique_experiment_user"),
    )
    sa.Table(
        "registered_model_permissions", md,
        sa.Column("id", sa.Integer(), nullable=False, primary_key=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("permission", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=FIXED_FK_NAMES["registered_model_permissions"]),
        sa.UniqueConstraint("name", "user_id", name="unique_name_user"),
    )
    return md


def current_revision(engine, version_table: str = VERSION_TABLE) -> str | None:
    """The alembic revision recorded in `version_table` (the auth store's by default), None if none."""
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": version_table}).get_current_revision()


def apply_mysql_initial_fix(engine) -> bool:
    """Create the first revision's tables with unique FK names and stamp it; True if it did."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return False
    if current_revision(engine) is not None:
        return False  # past the faulty revision already
    from alembic.command import stamp
    from mlflow.server.auth.db.utils import _get_alembic_config

    _initial_tables().create_all(engine, checkfirst=True)
    cfg = _get_alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        stamp(cfg, INITIAL_REVISION)
    return True


def migrate(engine, fix: bool = True) -> tuple[str | None, str]:
    """Bring the auth store to MLflow's head revision. Returns (revision before, revision after)."""
    from mlflow.server.auth.db.utils import migrate_if_needed

    before = current_revision(engine)
    if fix:
        apply_mysql_initial_fix(engine)
    migrate_if_needed(engine, "head")
    return before, current_revision(engine)
