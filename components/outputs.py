"""Stack output names, shared by ``__main__.py``, the tests and the automation code (``deploy``).

They are part of the public interface of a stack: renaming one breaks every consumer, so they
live here once.
"""

import re

TRACKING_URI = "trackingUri"
"""URL the MLflow client uses (``MLFLOW_TRACKING_URI``)."""

LOAD_BALANCER_DNS = "loadBalancerDnsName"
"""DNS name of the Application Load Balancer."""

ARTIFACT_BUCKET = "artifactBucketName"
"""Name of the S3 bucket that holds the artifacts."""

DATABASE_ENDPOINT = "databaseEndpoint"
"""Writer endpoint of the Aurora cluster (reachable only from the service)."""

IMAGE_REF = "imageRef"
"""Digest reference of the server image (``<repo>@sha256:<64 hex>``) in the stack's own ECR
repository (an image promoted from outside ECR: as given); promotion hands it to another stack,
which copies the digest into its own repository."""

ADMIN_SECRET_ARN = "adminSecretArn"
"""ARN of the Secrets Manager secret with the MLflow admin ``username`` and ``password``."""

SSO_CALLBACK_URL = "ssoCallbackUrl"
"""With the ``sso`` setting only: ``https://<domainName>/oauth2/idpresponse``, the redirect URI to
register at the identity provider (docs/sso.md)."""

DIGEST_REF_RE = re.compile(
    r"^[a-z0-9][a-z0-9.\-]*(?::[0-9]+)?"        # registry[:port]
    r"/[a-z0-9][a-z0-9._\-/]*"                  # /repository
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127})?"  # optional :tag (informational only)
    r"@sha256:[0-9a-f]{64}$")                   # the digest, which is what counts
"""A digest reference ``<registry>/<repository>[:tag]@sha256:<64 lowercase hex>`` (never a tag
alone): the only form the ``imageRef`` setting accepts and the only one ``deploy.promote`` copies between stacks."""

ALL = (TRACKING_URI, LOAD_BALANCER_DNS, ARTIFACT_BUCKET, DATABASE_ENDPOINT, IMAGE_REF, ADMIN_SECRET_ARN)
