"""The S3 stand-in answering CompleteMultipartUpload as Amazon S3 does (tests/support/s3_like.py).

Amazon S3 API Reference, CompleteMultipartUpload: after S3 "begins processing the request, it sends
an HTTP response header that specifies a 200 OK response. While processing is in progress, Amazon S3
periodically sends white space characters to keep the connection from timing out. [...] a 200 OK
response can contain either a success or an error." botocore raises the error of such a 200
(handlers.py, ``_handle_200_error``). Here, real moto processes on 127.0.0.1: the client's read
timeout is 2 s and the stand-in waits 3 s before asking moto (a slow assembly without gigabytes);
the control shows that same setup times out without the white space.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from tests.support.peers import S3Server

MiB = 1024 * 1024
READ_TIMEOUT_S, DELAY_S, KEEPALIVE_S = 2, 3, 0.5


@contextlib.contextmanager
def _server(**kwargs):
    s3 = S3Server(complete_like_s3=True, **kwargs).start()
    try:
        yield s3
    finally:
        s3.close()


@pytest.fixture(scope="module")
def slow():
    """CompleteMultipartUpload takes DELAY_S > READ_TIMEOUT_S; a space every KEEPALIVE_S."""
    with _server(keepalive_s=KEEPALIVE_S, complete_delay_s=DELAY_S) as s3:
        yield s3


@pytest.fixture(scope="module")
def fast():
    # an error moto finds at once keeps its own status when moto answers within the grace: 1.5 s
    # (under the clients' 2 s read timeout) keeps that true on a loaded machine
    with _server(keepalive_s=KEEPALIVE_S, grace_s=1.5) as s3:
        yield s3


def client(s3: S3Server, bodies: list | None = None):
    """A client with a short read timeout and no retry; `bodies` collects CompleteMultipartUpload's raw bodies."""
    c = boto3.client("s3", endpoint_url=s3.endpoint_url, region_name="us-east-1",
                     aws_access_key_id=s3.admin["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=s3.admin["AWS_SECRET_ACCESS_KEY"],
                     config=Config(read_timeout=READ_TIMEOUT_S, connect_timeout=5, retries={"total_max_attempts": 1}))
    if bodies is not None:  # a more specific event name runs before botocore's 'before-parse.s3.*' handlers
        c.meta.events.register("before-parse.s3.CompleteMultipartUpload",
                               lambda response_dict, **_: bodies.append(response_dict["body"]))
    return c


def upload_parts(c, bucket: str, key: str, parts: list[bytes]) -> tuple[str, list[dict]]:
    upload_id = c.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": c.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
                                                    Body=body)["ETag"]} for n, body in enumerate(parts, 1)]
    return upload_id, done


def bucket(s3: S3Server) -> str:
    return s3.create_bucket(f"like-s3-{uuid.uuid4().hex[:8]}")


def test_slow_complete_succeeds_through_white_space(slow):
    bodies: list[bytes] = []
    c, b = client(slow, bodies), bucket(slow)
    parts = [os.urandom(5 * MiB), os.urandom(1 * MiB + 7)]
    upload_id, done = upload_parts(c, b, "big.bin", parts)
    result = c.complete_multipart_upload(Bucket=b, Key="big.bin", UploadId=upload_id,
                                         MultipartUpload={"Parts": done})
    assert result["Key"] == "big.bin" and result["ETag"].endswith('-2"')
    assert c.get_object(Bucket=b, Key="big.bin")["Body"].read() == b"".join(parts)
    assert bodies[0].startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n ')  # the white space S3 sends
    assert b"<CompleteMultipartUploadResult" in bodies[0]


def test_error_during_assembly_is_a_client_error(slow):
    bodies: list[bytes] = []
    c, b = client(slow, bodies), bucket(slow)
    upload_id, done = upload_parts(c, b, "bad.bin", [os.urandom(5 * MiB), b"tail"])
    done[1]["ETag"] = '"00000000000000000000000000000000"'
    with pytest.raises(ClientError) as e:
        c.complete_multipart_upload(Bucket=b, Key="bad.bin", UploadId=upload_id, MultipartUpload={"Parts": done})
    assert e.value.response["Error"]["Code"] == "InvalidPart"
    assert bodies[0].startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n ') and b"<Error>" in bodies[0]
    with pytest.raises(ClientError):  # nothing was written
        c.head_object(Bucket=b, Key="bad.bin")


def test_without_white_space_the_same_complete_times_out():
    """The control: S3_LIKE_KEEPALIVE_S=0 is moto's silence, and the client gives up after 2 s."""
    with _server(keepalive_s=0, complete_delay_s=DELAY_S) as s3:
        c, b = client(s3), bucket(s3)
        upload_id, done = upload_parts(c, b, "big.bin", [os.urandom(5 * MiB), b"tail"])
        with pytest.raises(ReadTimeoutError):
            c.complete_multipart_upload(Bucket=b, Key="big.bin", UploadId=upload_id, MultipartUpload={"Parts": done})


def test_everything_else_passes_through(fast):
    c, b = client(fast), bucket(fast)
    small, big = os.urandom(1000), os.urandom(12 * MiB)
    c.put_object(Bucket=b, Key="a/small", Body=small)
    c.upload_fileobj(io.BytesIO(big), b, "a/big")  # boto3's multipart above 8 MiB
    assert c.get_object(Bucket=b, Key="a/small")["Body"].read() == small
    assert c.get_object(Bucket=b, Key="a/big")["Body"].read() == big
    assert c.get_object(Bucket=b, Key="a/big", Range="bytes=5-9")["Body"].read() == big[5:10]
    assert [o["Key"] for o in c.list_objects_v2(Bucket=b, Prefix="a/")["Contents"]] == ["a/big", "a/small"]
    c.delete_object(Bucket=b, Key="a/small")
    assert c.list_objects_v2(Bucket=b, Prefix="a/")["KeyCount"] == 1
    upload_id, done = upload_parts(c, b, "a/x", [b"only"])
    with pytest.raises(ClientError) as e:  # an error moto finds at once keeps its own status
        c.complete_multipart_upload(Bucket=b, Key="a/x", UploadId=upload_id,
                                    MultipartUpload={"Parts": [{**done[0], "ETag": '"0"'}]})
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.value.response["Error"]["Code"] == "InvalidPart"


def test_combines_with_enforced_iam():
    with _server(enforce_iam=True, keepalive_s=KEEPALIVE_S, complete_delay_s=DELAY_S) as s3:
        c, b = client(s3), bucket(s3)
        parts = [os.urandom(5 * MiB), b"tail"]
        upload_id, done = upload_parts(c, b, "k", parts)
        c.complete_multipart_upload(Bucket=b, Key="k", UploadId=upload_id, MultipartUpload={"Parts": done})
        assert c.get_object(Bucket=b, Key="k")["Body"].read() == b"".join(parts)
        assert '"action": "s3:PutObject"' in s3.audit_log.read_text()  # written by moto_iam.py only
