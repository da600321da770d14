"""moto's S3 server answering CompleteMultipartUpload the way Amazon S3 does: 200 OK at once, white
space while the object is assembled, then the result, or the error, inside that 200.

    S3_LIKE_KEEPALIVE_S=5 S3_LIKE_COMPLETE_DELAY_S=0 [S3_LIKE_IAM=1] python tests/support/s3_like.py -H 127.0.0.1 -p <port>

Amazon S3 API Reference, CompleteMultipartUpload: "Processing of a Complete Multipart Upload request
could take several minutes to complete. After Amazon S3 begins processing the request, it sends an
HTTP response header that specifies a 200 OK response. While processing is in progress, Amazon S3
periodically sends white space characters to keep the connection from timing out. A request could
fail after the initial 200 OK response has been sent. This means that a 200 OK response can contain
either a success or an error." moto 5.2.5 sends nothing until the object is assembled: a 5 GiB object
took longer than botocore's 60 s read timeout (bench/big_artifact.py), botocore retried and moto's
retry failed (the first call had completed the upload).

What this launcher changes, on CompleteMultipartUpload only (``POST /<bucket>/<key>?uploadId=...``):

* moto is asked in a thread. An answer within ``GRACE_S`` is sent unchanged, status and headers
  included: an error found before processing starts (NoSuchUpload, AccessDenied, MalformedXML)
  keeps its own status, as S3's "standard" errors do.
* Otherwise: ``200 OK`` (``Content-Type: application/xml``, chunked), the XML declaration, then one
  space every ``S3_LIKE_KEEPALIVE_S`` seconds (S3 does not document its interval; default 5) until
  moto has answered, then moto's document without its own declaration: the
  CompleteMultipartUploadResult, or moto's ``<Error>`` document (an error that is not XML becomes
  InternalError). botocore turns a 200 whose body is ``<Error>`` into a 500 (handlers.py,
  ``_handle_200_error``): retried, then raised as a ClientError with the document's code.
  The declaration goes first because XML parsers refuse white space before it (expat: "XML or text
  declaration not at start of entity"); MinIO, which does the same, sends it first for that reason
  (minio/minio#2046, and the regression reported in minio/minio#7198). On this path the response
  headers moto would have set on the result (``x-amz-version-id``, ...) are not sent.
* ``S3_LIKE_KEEPALIVE_S=0``: no white space; moto's answer is sent when it comes (as plain moto).
* ``S3_LIKE_COMPLETE_DELAY_S``: seconds to wait before asking moto (a slow assembly for the tests).

Every other request goes straight to moto's WSGI app, so bodies stream exactly as in plain moto.
``S3_LIKE_IAM=1`` also applies tests/support/moto_iam.py (IAM enforced, S3 authorized as AWS does).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

GRACE_S = 0.25  # moto's answer within this is passed through unchanged (S3_LIKE_GRACE_S)
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def is_complete_multipart_upload(environ: dict) -> bool:
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return environ.get("REQUEST_METHOD") == "POST" and "uploadId" in query


def _document(status: str, body: bytes) -> bytes:
    """moto's answer as the XML that follows the declaration inside a 200."""
    body = body.strip()
    if body.startswith(b"<?xml"):
        body = body[body.index(b"?>") + 2:].lstrip()
    if status.startswith("2") or body.startswith((b"<Error>", b"<Error ")):
        return body
    message = escape(f"{status}: {body[:200].decode('utf-8', 'replace')}")
    return f"<Error><Code>InternalError</Code><Message>{message}</Message></Error>".encode()


class CompleteLikeS3:
    """WSGI middleware in front of moto's app (see the module docstring)."""

    def __init__(self, app, keepalive_s: float = 5.0, delay_s: float = 0.0, grace_s: float = GRACE_S) -> None:
        self.app, self.keepalive_s, self.delay_s, self.grace_s = app, keepalive_s, delay_s, grace_s

    def __call__(self, environ, start_response):
        if not is_complete_multipart_upload(environ):
            return self.app(environ, start_response)
        answer: dict = {}
        done = threading.Event()
        threading.Thread(target=self._ask_moto, args=(environ, answer, done), daemon=True).start()
        if done.wait(self.grace_s) or self.keepalive_s <= 0:
            done.wait()
            start_response(answer["status"], answer["headers"])
            return [answer["body"]]
        return self._keep_alive(start_response, answer, done)

    def _ask_moto(self, environ, answer: dict, done: threading.Event) -> None:
        chunks: list[bytes] = []

        def start_response(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, headers
            return chunks.append

        try:
            time.sleep(self.delay_s)
            body = self.app(environ, start_response)
            try:
                chunks.extend(body)
            finally:
                getattr(body, "close", lambda: None)()
            answer["body"] = b"".join(chunks)
        except Exception as e:  # noqa: BLE001 - reported to the client, as S3 reports an InternalError
            answer.update(status="500 Internal Server Error", headers=[("Content-Type", "application/xml")],
                          body=DECLARATION + f"<Error><Code>InternalError</Code><Message>{escape(repr(e))}"
                                             f"</Message></Error>".encode())
        finally:
            done.set()

    def _keep_alive(self, start_response, answer: dict, done: threading.Event):
        start_response("200 OK", [("Content-Type", "application/xml")])
        yield DECLARATION  # the status line and headers go out with it, at once
        while not done.wait(self.keepalive_s):
            yield b" "
        yield _document(answer["status"], answer["body"])


def main(argv: list[str]) -> None:
    from moto import server

    if os.environ.get("S3_LIKE_IAM") == "1":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import moto_iam

        moto_iam.install()
    keepalive_s = float(os.environ.get("S3_LIKE_KEEPALIVE_S", "5"))
    delay_s = float(os.environ.get("S3_LIKE_COMPLETE_DELAY_S", "0"))
    grace_s = float(os.environ.get("S3_LIKE_GRACE_S", str(GRACE_S)))
    run_simple = server.run_simple
    server.run_simple = lambda host, port, app, **kw: run_simple(
        host, port, CompleteLikeS3(app, keepalive_s, delay_s, grace_s), **kw)
    server.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
