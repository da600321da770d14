"""The containers of the Service's two task definitions (README, "Container contract").

- The server (:func:`container_definition`): plain values in ``environment``; the application
  user's database password, the MLflow admin user/password and the Flask secret key only in
  ``secrets`` (ECS reads them from Secrets Manager, ``<secret-arn>:<json-key>::``). Never the
  database master secret.
- The admin step (:func:`admin_container_definition`): the same image with the command ``admin``;
  the master user and password in ``secrets`` (from RDS's secret), the application user's name and
  secret ARN in ``environment`` (the step reads and writes that secret with its task role).

Both: read-only root file system, all Linux capabilities dropped, the image's non-root user, the
spool volume mounted where the image expects it, awslogs to the same log group with their own
stream prefixes, and the RDS CA bundle the image carries for verified TLS to the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import pulumi

if TYPE_CHECKING:
    from components.service import ServiceArgs

CONTAINER_NAME = "mlflow"
CONTAINER_PORT = 5000
SPOOL_VOLUME = "spool"
SPOOL_PATH = "/var/spool/mlflow"
HEALTHCHECK_COMMAND = ["CMD", "python3", "/app/entrypoint.py", "--healthcheck"]
HEALTHCHECK = {"command": HEALTHCHECK_COMMAND, "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 300}
"""ECS ignores a Dockerfile HEALTHCHECK. The start period is ECS's maximum (300 s): with the 3 × 30 s
retries it outlasts the entrypoint's database wait (``MLFLOW_DB_WAIT_SECONDS``, 300 s) plus the
server's start, so a task that waits for a new writer or a resuming 0-ACU database is not killed."""
DB_TLS_CA = "/app/certs/rds-global-bundle.pem"
"""The Amazon RDS global CA bundle in the image: every database connection verifies against it."""
ADMIN_CONTAINER_NAME = "mlflow-admin"
ADMIN_COMMAND = ["admin"]
"""Appended to the image's ENTRYPOINT (``python3 /app/entrypoint.py``)."""
ADMIN_LOG_PREFIX = "admin"
"""awslogs stream prefix of the admin step: streams ``admin/mlflow-admin/<task id>``."""
STOP_TIMEOUT_SECONDS = 120
"""SIGTERM to SIGKILL when ECS stops the task, after the target group drained it: the Fargate
maximum (ECS task definition parameters, ``stopTimeout``). The server's graceful shutdown must end
within it (uvicorn ``--timeout-graceful-shutdown``, set by the image's entrypoint)."""


def container_definition(args: "ServiceArgs", *, prefix: str, log_group_name: pulumi.Input[str],
                         admin_secret_arn: pulumi.Input[str], flask_secret_arn: pulumi.Input[str],
                         allowed_hosts: pulumi.Input[str],
                         signer_arn: Optional[pulumi.Input[str]] = None) -> dict[str, Any]:
    """The container, as ECS's ``containerDefinitions`` entry (values may be Outputs). With single
    sign-on (``args.sso``), the ``MLFLOW_SSO_*`` variables, ``signer_arn`` (the load balancer's ARN)
    among them (components/sso.py, docs/sso.md)."""
    env = {
        **database_environment(args),
        "MLFLOW_ARTIFACTS_DESTINATION": pulumi.Output.concat("s3://", args.bucket_name, f"/{prefix}"),
        "MLFLOW_AUTH_CACHE_TTL_SECONDS": str(args.auth_cache_ttl_seconds),
        "MLFLOW_AUTH_DEFAULT_PERMISSION": args.auth_default_permission,
        "MLFLOW_DB_IDLE_RELEASE_SECONDS": str(args.db_idle_release_seconds),
        "MLFLOW_LB_IDLE_TIMEOUT_SECONDS": str(args.idle_timeout_seconds),
        "MLFLOW_PORT": str(CONTAINER_PORT),
        "MLFLOW_SERVE_ARTIFACTS": "true",
        "MLFLOW_SERVER_ALLOWED_HOSTS": allowed_hosts,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if args.enable_job_execution else "false",
        "MLFLOW_SPOOL_DIR": SPOOL_PATH,
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(args.max_overflow),
        "MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE": "280",
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(args.pool_size),
        "MLFLOW_WORKERS": str(args.workers),
        **(args.sso.environment(signer_arn) if args.sso is not None else {}),
    }
    secrets = {
        "MLFLOW_AUTH_ADMIN_PASSWORD": pulumi.Output.concat(admin_secret_arn, ":password::"),
        "MLFLOW_AUTH_ADMIN_USERNAME": pulumi.Output.concat(admin_secret_arn, ":username::"),
        "MLFLOW_DB_PASSWORD": pulumi.Output.concat(args.db_app_secret_arn, ":password::"),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": pulumi.Output.concat(flask_secret_arn, ":secret_key::"),
    }
    return {
        "name": CONTAINER_NAME,
        "image": args.image_ref,
        "essential": True,
        "portMappings": [{"containerPort": CONTAINER_PORT, "protocol": "tcp", "name": "http"}],
        "environment": [{"name": k, "value": v} for k, v in sorted(env.items())],
        "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())],
        "readonlyRootFilesystem": True,
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}, "initProcessEnabled": True},
        "mountPoints": [{"sourceVolume": SPOOL_VOLUME, "containerPath": SPOOL_PATH, "readOnly": False}],
        "healthCheck": HEALTHCHECK,
        "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
        "stopTimeout": STOP_TIMEOUT_SECONDS,
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": log_group_name, "awslogs-region": args.region,
            "awslogs-stream-prefix": CONTAINER_NAME}},
    }


def database_environment(args: "ServiceArgs") -> dict[str, Any]:
    """What every container of the image needs to reach the databases (no secret): the region, the
    engine, endpoint, names, user and the CA bundle for verified TLS."""
    return {
        "AWS_REGION": args.region,
        "MLFLOW_AUTH_DB_NAME": args.auth_db_name,
        "MLFLOW_DB_ENGINE": args.db_engine,
        "MLFLOW_DB_HOST": args.db_host,
        "MLFLOW_DB_NAME": args.db_name,
        "MLFLOW_DB_PORT": str(args.db_port),
        "MLFLOW_DB_TLS_CA": DB_TLS_CA,
        "MLFLOW_DB_USER": args.db_user,
    }


def one_off_container(args: "ServiceArgs", *, name: str, command: list[str], environment: dict[str, Any],
                      secrets: dict[str, Any], log_group_name: pulumi.Input[str], log_prefix: str) -> dict[str, Any]:
    """A container of the image that runs one command and exits (the admin step, gc), as a
    ``containerDefinitions`` entry: no port, no health check, the server's hardening and spool mount."""
    return {
        "name": name,
        "image": args.image_ref,
        "essential": True,
        "command": command,
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "secrets": [{"name": k, "valueFrom": v} for k, v in sorted(secrets.items())],
        "readonlyRootFilesystem": True,
        "linuxParameters": {"capabilities": {"drop": ["ALL"]}, "initProcessEnabled": True},
        "mountPoints": [{"sourceVolume": SPOOL_VOLUME, "containerPath": SPOOL_PATH, "readOnly": False}],
        "logConfiguration": {"logDriver": "awslogs", "options": {
            "awslogs-group": log_group_name, "awslogs-region": args.region, "awslogs-stream-prefix": log_prefix}},
    }


def admin_container_definition(args: "ServiceArgs", *, log_group_name: pulumi.Input[str]) -> dict[str, Any]:
    """The admin step's container (the contract's "admin step"), as a ``containerDefinitions`` entry."""
    env = {
        **database_environment(args),
        "MLFLOW_DB_APP_SECRET_ARN": args.db_app_secret_arn,
        # a takeover (components/takeover.py, docs/takeover.md): the dumps the admin step imports
        **(args.takeover.environment(args.bucket_name) if args.takeover else {}),
    }
    secrets = {
        "MLFLOW_DB_ADMIN_PASSWORD": pulumi.Output.concat(args.db_master_secret_arn, ":password::"),
        "MLFLOW_DB_ADMIN_USER": pulumi.Output.concat(args.db_master_secret_arn, ":username::"),
    }
    return one_off_container(args, name=ADMIN_CONTAINER_NAME, command=ADMIN_COMMAND, environment=env, secrets=secrets,
                             log_group_name=log_group_name, log_prefix=ADMIN_LOG_PREFIX)
