"""Stack output names, shared by ``__main__.py``, the tests and the automation code (``deploy``).

They are part of the public interface of a stack: renaming one breaks every consumer, so they
live here once.
"""

TRACKING_URI = "trackingUri"
"""URL the MLflow client uses (``MLFLOW_TRACKING_URI``)."""

LOAD_BALANCER_DNS = "loadBalancerDnsName"
"""DNS name of the Application Load Balancer."""

ARTIFACT_BUCKET = "artifactBucketName"
"""Name of the S3 bucket that holds the artifacts."""

DATABASE_ENDPOINT = "databaseEndpoint"
"""Writer endpoint of the Aurora cluster (reachable only from the service)."""

IMAGE_REF = "imageRef"
"""Digest reference of the server image (``<repo>@sha256:<64 hex>``); promotion copies it."""

ADMIN_SECRET_ARN = "adminSecretArn"
"""ARN of the Secrets Manager secret with the MLflow admin ``username`` and ``password``."""

ALL = (TRACKING_URI, LOAD_BALANCER_DNS, ARTIFACT_BUCKET, DATABASE_ENDPOINT, IMAGE_REF, ADMIN_SECRET_ARN)
