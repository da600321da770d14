"""The entrypoint's check of an s3:// artifact destination before the server starts: HeadBucket
(s3:ListBucket on the bucket), each failure one line naming the bucket and what is wrong."""

from __future__ import annotations

from env_settings import Fatal, info

CONNECT_TIMEOUT = 5  # seconds, for the S3 check before the server starts (database limits: db_wait.py)


def check_bucket(destination: str, endpoint: str | None, region: str | None) -> None:
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    bucket = destination[len("s3://"):].split("/", 1)[0]
    if not bucket:
        raise Fatal(f"MLFLOW_ARTIFACTS_DESTINATION={destination!r} names no bucket")
    client = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                          config=Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=10,
                                        retries={"max_attempts": 2, "mode": "standard"}))
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise Fatal(f"the artifact bucket {bucket!r} (MLFLOW_ARTIFACTS_DESTINATION) does not exist") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise Fatal(f"access to the artifact bucket {bucket!r} is denied (check the task role's S3 "
                        f"permissions)") from None
        raise Fatal(f"the artifact bucket {bucket!r} cannot be checked: {code} {e}") from None
    except botocore.exceptions.NoCredentialsError:
        raise Fatal(f"no AWS credentials found to access the artifact bucket {bucket!r}") from None
    except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError) as e:
        raise Fatal(f"cannot reach S3 to check the artifact bucket {bucket!r}: {e}") from None
    except botocore.exceptions.BotoCoreError as e:
        raise Fatal(f"the artifact bucket {bucket!r} cannot be checked: {e}") from None
    info(f"artifact bucket {bucket!r} is reachable")
