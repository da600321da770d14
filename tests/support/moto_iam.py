"""moto's server with IAM enforcement made to authorize S3 requests the way AWS documents it.

    INITIAL_NO_AUTH_ACTION_COUNT=<n> MOTO_IAM_AUDIT_LOG=<file> python tests/support/moto_iam.py -H 127.0.0.1 -p <port>

moto enforces IAM identity policies once `INITIAL_NO_AUTH_ACTION_COUNT` requests have been served
(moto's docs, "IAM-like Access Control"). Read from moto 5.2.5 (moto/iam/access_control.py,
moto/s3/responses.py), three of its S3 authorizations differ from AWS's documents in ways that
would make a correct policy fail; this launcher changes exactly those three and nothing else:

1. HeadBucket: moto asks for ``s3:HeadBucket``, an action that does not exist in IAM. AWS (S3 API
   Reference, HeadBucket, "Permissions"): "you must have permissions to perform the s3:ListBucket
   action". Here: ``s3:ListBucket`` on the bucket ARN.
2. Presigned URLs (SigV4 query-string authentication): moto reads the ``Authorization`` header
   unconditionally and answers 500 (KeyError 'HTTP_AUTHORIZATION'). AWS (S3 User Guide, "Sharing
   objects with presigned URLs"): the request is authorized as the principal that signed the URL,
   with that principal's permissions, until ``X-Amz-Date + X-Amz-Expires``. Here: the signature is
   recomputed with the signer's secret (botocore's S3 query signer), an expired URL is refused,
   and the request is authorized against the signer's identity policies like a header-signed one.
3. DeleteObjects: moto authorizes ``s3:DeleteObject`` on the *bucket* ARN and, when refused,
   reports every key as AccessDenied inside a 200 response. AWS (S3 API Reference,
   DeleteObjects): ``s3:DeleteObject`` is needed for each object deleted. Here: each key is
   authorized as ``s3:DeleteObject`` on ``arn:aws:s3:::<bucket>/<key>``.

Left as moto does it (see tests/server/test_iam_s3.py): policy *conditions*. moto passes no request
context to identity policies and implements only ``StringEquals``; any other operator (StringLike,
Bool, ...) is ignored, so a condition on ``s3:prefix`` never refuses anything here. To make that
gap checkable, every authorization decision is appended to ``MOTO_IAM_AUDIT_LOG`` as one JSON line
``{"principal", "action", "resource", "context", "presigned", "moto"}``, where ``context`` holds
``s3:prefix`` when the request carries a ``prefix`` parameter (the key AWS puts in the request
context of ListBucket, Service Authorization Reference for S3): the test re-evaluates each one
with AWS's condition rules (tests/support/iam.py).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import threading
from urllib.parse import parse_qs, urlparse, urlsplit, urlunsplit

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam.access_control import IAMRequestBase, S3IAMRequest
from moto.s3 import responses as s3_responses

AUDIT_LOG = os.environ.get("MOTO_IAM_AUDIT_LOG", "")
LIST_ACTIONS = ("s3:ListBucket", "s3:ListBucketVersions")  # the actions whose context has s3:prefix
_audit_lock = threading.Lock()


def _audit(entry: dict) -> None:
    if not AUDIT_LOG:
        return
    with _audit_lock, open(AUDIT_LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


def _query(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query, keep_blank_values=True)


class PresignedS3IAMRequest(S3IAMRequest):
    """An S3 request authenticated by SigV4 query parameters (a presigned URL)."""

    def __init__(self, *args, expires: int, amz_date: str, **kwargs) -> None:
        self._expires = expires
        self._amz_date = amz_date
        super().__init__(*args, **kwargs)

    def _create_auth(self, credentials):
        return S3SigV4QueryAuth(credentials, self._service, self._region, expires=self._expires)

    def _create_aws_request(self) -> AWSRequest:
        """The request as signed: every query parameter but X-Amz-Signature, the signed headers."""
        split = urlsplit(self._path)
        query = "&".join(p for p in split.query.split("&") if not p.startswith("X-Amz-Signature="))
        signed = self._get_string_between("SignedHeaders=", ",", self._headers["Authorization"]).split(";")
        request = AWSRequest(method=self._method, url=urlunsplit(("", "", split.path, query, "")),
                             headers=self._create_headers_for_aws_request(signed, self._headers))
        request.context["timestamp"] = self._amz_date
        return request

    def check_expiry(self) -> None:
        signed_at = datetime.datetime.strptime(self._amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        if datetime.datetime.now(datetime.UTC) > signed_at + datetime.timedelta(seconds=self._expires):
            self._raise_access_denied()


def _authorize_presigned(response, resource: str) -> None:
    """Authenticate a presigned URL as its signer, then authorize the action on `resource`."""
    parsed = urlparse(response.uri)
    q = parse_qs(parsed.query, keep_blank_values=True)
    one = {k: v[0] for k, v in q.items()}
    headers = {k: v for k, v in response.headers.items()}
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={one.get('X-Amz-Credential', '')}, "
                                f"SignedHeaders={one.get('X-Amz-SignedHeaders', 'host')}, "
                                f"Signature={one['X-Amz-Signature']}")
    if "X-Amz-Security-Token" in one:
        headers["X-Amz-Security-Token"] = one["X-Amz-Security-Token"]
    request = PresignedS3IAMRequest(
        account_id=response.current_account, method=response.method,
        path=response.raw_path + ("?" + parsed.query if parsed.query else ""), data=response.data, body=b"",
        headers=headers, action=response._get_action(), expires=int(one.get("X-Amz-Expires", "0")),
        amz_date=one.get("X-Amz-Date", ""))
    request.check_signature()
    request.check_expiry()
    request.check_action_permitted(resource)


def _deleted_keys(body: bytes) -> list[str]:
    import xmltodict

    objects = (xmltodict.parse(body or b"<Delete/>").get("Delete") or {}).get("Object", [])
    return [o["Key"] for o in (objects if isinstance(objects, list) else [objects])]


_original_authorize = ActionAuthenticatorMixin._authenticate_and_authorize_action


def _authenticate_and_authorize_action(self, iam_request_cls: type, resource: str = "*") -> None:
    enforcing = ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT
    if enforcing and iam_request_cls is S3IAMRequest:
        q = _query(self.uri)
        if "Authorization" not in self.headers and "X-Amz-Signature" in q:
            return _authorize_presigned(self, resource)
        if self.data.get("Action") == "DeleteObject" and "delete" in q and "/" not in resource.split(":::", 1)[-1]:
            for key in _deleted_keys(self.raw_body):
                _original_authorize(self, iam_request_cls, f"{resource}/{key}")
            return None
    return _original_authorize(self, iam_request_cls, resource)


_original_check = IAMRequestBase.check_action_permitted


def _check_action_permitted(self, resource: str) -> None:
    context = {}
    if self._action in LIST_ACTIONS and "prefix" in (q := _query(self._path)):
        context["s3:prefix"] = q["prefix"][0]
    entry = {"principal": self._access_key.arn, "action": self._action, "resource": resource,
             "context": context, "presigned": isinstance(self, PresignedS3IAMRequest), "moto": "deny"}
    try:
        _original_check(self, resource)
        entry["moto"] = "allow"
    finally:
        _audit(entry)


def install() -> None:
    s3_responses.ACTION_MAP["BUCKET"]["HEAD"]["DEFAULT"] = "ListBucket"
    ActionAuthenticatorMixin._authenticate_and_authorize_action = _authenticate_and_authorize_action
    IAMRequestBase.check_action_permitted = _check_action_permitted


if __name__ == "__main__":
    install()
    from moto.server import main

    main(sys.argv[1:])
