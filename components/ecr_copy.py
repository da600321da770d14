"""Copy an image, by digest, from one Amazon ECR repository into another: how prod comes to own
the image dev built.

Why a copy, and why this one
----------------------------
Promotion deploys dev's digest to prod. Run from dev's repository, prod would lose its image when
dev's lifecycle policy expires it or ``pulumi destroy -s dev`` force-deletes the repository. So
the prod stack copies the digest into a repository of its own and runs it from there:

- ECR replication cannot do it: it is cross-Region or cross-account only (ECR User Guide,
  "Private image replication") and keeps the repository name, so the default single account and
  Region has no replication target.
- pulumi-docker (``RemoteImage`` + ``Tag`` + ``RegistryImage``) would need a Docker engine at
  every prod ``up``, pulls every layer, and lets the engine rewrite the manifest on push (a
  pulled image pushed again does not always keep its digest; an index loses its other platforms).
- A copy in ``deploy promote`` (Docker CLI, crane) would live outside the stack: invisible in
  previews and state, skipped by a plain ``pulumi up -s prod``, and it needs prod's repository
  before the stack that creates it.

This module uses only the ECR API (boto3, no Docker): ``BatchGetImage`` reads the manifest as
stored; its SHA-256 is checked against the digest; blobs the target lacks
(``BatchCheckLayerAvailability``: layers belong to a repository) are streamed from the source's
``GetDownloadUrlForLayer`` into ``InitiateLayerUpload``/``UploadLayerPart``/``CompleteLayerUpload``
in 10 MiB parts (ECR quotas: 5 to 10 MiB); ``PutImage`` then writes the same manifest bytes with
``imageDigest`` set, so ECR itself refuses any other digest. Same account and Region, another
Region, or another account (given a repository policy on the source) work alike. An image index
is copied with its platform images. The copy is tagged ``sha256-<hex>``: unique per content, so
it never collides with an IMMUTABLE tag, and a digest prod already holds is not written again.

As a Pulumi resource (``EcrImageCopy``, a dynamic provider): ``check`` fails the preview when the
digest is in neither repository (expired or deleted before it was promoted); ``diff`` replaces it
on a new digest or when prod's repository lost the image; ``delete`` keeps the image (ECS's
circuit breaker rolls back to the previous task definition, which must still pull); the
repository's ``force_delete`` removes them all when the stack is destroyed.

Credentials: boto3's default chain of the process running ``pulumi`` (environment, ``AWS_PROFILE``,
SSO, instance role), the same chain the AWS provider uses when the stack sets no ``aws:profile``
or keys. The provider is pickled by reference: keep this module importable as
``components.ecr_copy`` with no side effects on import, and keep the class names.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from typing import Any, BinaryIO, Optional

import boto3
import pulumi
import pulumi.dynamic as dyn
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
INDEX_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
PART_SIZE = 10 * 1024 * 1024
"""Bytes per UploadLayerPart: ECR's quota allows 5 MiB (except the last part) to 10 MiB."""
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
"""What the engine passes for a value not known yet (``pulumi.runtime.rpc.UNKNOWN``)."""

_REF = re.compile(
    r"^(?P<host>(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?)"
    r"/(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")

Client = Callable[[str], Any]
"""Region -> an ``ecr`` client (boto3's, or a stand-in in tests)."""
Fetch = Callable[[str], BinaryIO]
"""Presigned download URL -> a readable binary stream."""


class CopyError(Exception):
    """A copy that cannot be done. ``str(err)`` is one line."""


@dataclass(frozen=True)
class EcrLocation:
    """``<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag][@sha256:...]``, parsed."""

    host: str
    account: str
    region: str
    repository: str
    digest: Optional[str]

    @classmethod
    def parse(cls, ref: str) -> Optional["EcrLocation"]:
        m = _REF.match(ref)
        return cls(m["host"], m["account"], m["region"], m["repo"], m["digest"]) if m else None

    @property
    def url(self) -> str:
        return f"{self.host}/{self.repository}"

    @property
    def partition(self) -> str:
        return "aws-cn" if self.host.endswith(".cn") else "aws"

    @property
    def arn(self) -> str:
        return f"arn:{self.partition}:ecr:{self.region}:{self.account}:repository/{self.repository}"

    def where(self) -> str:
        return f"repository '{self.repository}' (account {self.account}, {self.region})"


def boto_client(region: str) -> Any:
    """boto3's ECR client for ``region``, with bounded timeouts and standard retries."""
    return boto3.client("ecr", region_name=region, config=Config(
        connect_timeout=20, read_timeout=120, retries={"max_attempts": 5, "mode": "standard"}))


def fetch_url(url: str) -> BinaryIO:
    """Open a presigned layer download URL (S3) for streaming."""
    return urllib.request.urlopen(url, timeout=120)  # noqa: S310 - an https URL from ECR


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def image_present(client: Any, repo: EcrLocation, digest: str) -> bool:
    """Whether ``repo`` holds ``digest`` (a missing repository holds nothing)."""
    try:
        client.describe_images(registryId=repo.account, repositoryName=repo.repository,
                               imageIds=[{"imageDigest": digest}])
        return True
    except ClientError as e:
        if _code(e) in ("ImageNotFoundException", "RepositoryNotFoundException"):
            return False
        raise


def copy_image(source_ref: str, repository_url: str, *, client: Client = boto_client,
               fetch: Fetch = fetch_url) -> str:
    """Copy ``source_ref`` (an ECR digest reference) into ``repository_url``; returns
    ``<repository_url>@<digest>``. Does nothing when the target already holds the digest.

    :raises CopyError: the reference is not ECR's, the image is missing or does not hash to its
        digest, or ECR refused (one line, naming the repository and the AWS error code).
    """
    src, dst = _locations(source_ref, repository_url)
    digest = src.digest
    assert digest is not None
    target = client(dst.region)
    try:
        if image_present(target, dst, digest):
            return f"{dst.url}@{digest}"
        source = target if src.region == dst.region else client(src.region)
        _Copier(source, target, src, dst, fetch).manifest(digest, tag=copy_tag(digest))
    except ClientError as e:
        raise CopyError(f"cannot copy {source_ref}: {_code(e)}: {' '.join(str(e).split())}") from e
    except BotoCoreError as e:
        raise CopyError(f"cannot copy {source_ref}: {type(e).__name__}: {e}") from e
    return f"{dst.url}@{digest}"


def copy_tag(digest: str) -> str:
    """The tag of a copied image: ``sha256-<64 hex>``, unique per content."""
    return digest.replace(":", "-")


def _locations(source_ref: str, repository_url: str) -> tuple[EcrLocation, EcrLocation]:
    src = EcrLocation.parse(source_ref)
    if src is None or src.digest is None:
        raise CopyError(f"cannot copy {source_ref}: not an Amazon ECR image reference "
                        "(<account>.dkr.ecr.<region>.amazonaws.com/<repository>@sha256:<64 hex>)")
    dst = EcrLocation.parse(repository_url)
    if dst is None or dst.digest is not None:
        raise CopyError(f"cannot copy {source_ref}: {repository_url!r} is not an ECR repository URL")
    return src, dst


class _Copier:
    def __init__(self, source: Any, target: Any, src: EcrLocation, dst: EcrLocation, fetch: Fetch):
        self.source, self.target, self.src, self.dst, self.fetch = source, target, src, dst, fetch

    def manifest(self, digest: str, tag: Optional[str]) -> None:
        text, media_type = self._read(digest)
        doc = json.loads(text)
        if media_type in INDEX_TYPES:
            for child in doc.get("manifests", []):
                if not image_present(self.target, self.dst, child["digest"]):
                    self.manifest(child["digest"], tag=None)
        else:
            blobs = [doc["config"], *doc.get("layers", [])]
            for blob in self._missing(blobs):
                self._blob(blob)
        request: dict[str, Any] = dict(registryId=self.dst.account, repositoryName=self.dst.repository,
                                       imageManifest=text, imageManifestMediaType=media_type, imageDigest=digest)
        if tag:
            request["imageTag"] = tag
        try:
            self.target.put_image(**request)
        except ClientError as e:  # written meanwhile (a concurrent up): fine if it is this digest
            if _code(e) not in ("ImageAlreadyExistsException", "ImageTagAlreadyExistsException") or \
                    not image_present(self.target, self.dst, digest):
                raise

    def _read(self, digest: str) -> tuple[str, str]:
        try:
            res = self.source.batch_get_image(registryId=self.src.account, repositoryName=self.src.repository,
                                              imageIds=[{"imageDigest": digest}],
                                              acceptedMediaTypes=[*MANIFEST_TYPES, *INDEX_TYPES])
        except ClientError as e:
            if _code(e) == "RepositoryNotFoundException":
                raise self._gone(digest, "the repository does not exist (its stack was destroyed?)") from e
            raise
        images = res.get("images") or []
        if not images:
            codes = ", ".join(f.get("failureCode", "?") for f in res.get("failures") or []) or "no image"
            raise self._gone(digest, f"{codes}: expired by its lifecycle policy or deleted")
        text, media_type = images[0]["imageManifest"], images[0].get("imageManifestMediaType", "")
        actual = "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()
        if actual != digest:
            raise CopyError(f"cannot copy {self.src.url}@{digest}: the manifest ECR returned does not hash to "
                            f"that digest ({actual}); refusing to push another image")
        if not media_type:
            media_type = json.loads(text).get("mediaType", "")
        return text, media_type

    def _gone(self, digest: str, why: str) -> CopyError:
        return CopyError(f"cannot copy {self.src.url}@{digest}: not in {self.src.where()}: {why}; "
                         f"build the image again and promote the new digest")

    def _missing(self, blobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        missing = []
        for i in range(0, len(blobs), 100):  # BatchCheckLayerAvailability takes 100 digests at most
            batch = blobs[i:i + 100]
            res = self.target.batch_check_layer_availability(
                registryId=self.dst.account, repositoryName=self.dst.repository,
                layerDigests=[b["digest"] for b in batch])
            available = {x["layerDigest"] for x in res.get("layers", []) if x.get("layerAvailability") == "AVAILABLE"}
            missing += [b for b in batch if b["digest"] not in available]
        return missing

    def _blob(self, blob: dict[str, Any]) -> None:
        digest = blob["digest"]
        url = self.source.get_download_url_for_layer(registryId=self.src.account, repositoryName=self.src.repository,
                                                     layerDigest=digest)["downloadUrl"]
        upload = self.target.initiate_layer_upload(registryId=self.dst.account, repositoryName=self.dst.repository)
        part = min(max(int(upload.get("partSize") or PART_SIZE), 5 * 1024 * 1024), PART_SIZE)
        h, first = hashlib.sha256(), 0
        with closing(self.fetch(url)) as stream:
            while chunk := _read_exactly(stream, part):
                h.update(chunk)
                self.target.upload_layer_part(registryId=self.dst.account, repositoryName=self.dst.repository,
                                              uploadId=upload["uploadId"], partFirstByte=first,
                                              partLastByte=first + len(chunk) - 1, layerPartBlob=chunk)
                first += len(chunk)
        if "sha256:" + h.hexdigest() != digest or ("size" in blob and first != int(blob["size"])):
            raise CopyError(f"cannot copy {self.src.url}: layer {digest} arrived with other content "
                            f"({first} bytes, sha256:{h.hexdigest()})")
        try:
            self.target.complete_layer_upload(registryId=self.dst.account, repositoryName=self.dst.repository,
                                              uploadId=upload["uploadId"], layerDigests=[digest])
        except ClientError as e:
            if _code(e) != "LayerAlreadyExistsException":
                raise


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at the end of the stream (HTTP reads may return short)."""
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


# --------------------------------------------------------------------------- the Pulumi resource


class EcrImageCopyProvider(dyn.ResourceProvider):
    """Dynamic provider behind :class:`EcrImageCopy` (see the module docstring)."""

    serialize_as_secret_always = False

    def __init__(self, client: Optional[Client] = None, fetch: Optional[Fetch] = None) -> None:
        super().__init__()
        self._client, self._fetch = client, fetch

    def _clients(self) -> tuple[Client, Fetch]:
        return self._client or boto_client, self._fetch or fetch_url

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dyn.CheckResult:
        ref, url = news.get("source_ref"), news.get("repository_url")
        if not isinstance(ref, str) or ref == UNKNOWN:
            return dyn.CheckResult(news, [])
        src = EcrLocation.parse(ref)
        if src is None or src.digest is None:
            return dyn.CheckResult(news, [dyn.CheckFailure("source_ref", f"{ref!r} is not an ECR digest reference")])
        client, _ = self._clients()
        dst = EcrLocation.parse(url) if isinstance(url, str) and url != UNKNOWN else None
        try:
            if dst is not None and image_present(client(dst.region), dst, src.digest):
                return dyn.CheckResult(news, [])
            if image_present(client(src.region), src, src.digest):
                return dyn.CheckResult(news, [])
        except (ClientError, BotoCoreError) as e:
            reason = f"cannot check that {ref} exists: {type(e).__name__}: {' '.join(str(e).split())}"
            return dyn.CheckResult(news, [dyn.CheckFailure("source_ref", reason)])
        return dyn.CheckResult(news, [dyn.CheckFailure("source_ref", (
            f"{src.digest} is not in {src.where()} (expired by its lifecycle policy, or the repository was "
            f"deleted) and not yet copied here: build the image again and promote the new digest"))])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dyn.DiffResult:
        changed = [k for k in ("source_ref", "repository_url", "digest") if olds.get(k) != news.get(k)]
        if not changed:
            dst = EcrLocation.parse(str(news.get("repository_url")))
            client, _ = self._clients()
            if dst is not None and not image_present(client(dst.region), dst, str(news["digest"])):
                changed = ["digest"]  # prod's repository lost the image: copy it again
        return dyn.DiffResult(changes=bool(changed), replaces=changed, delete_before_replace=False)

    def create(self, props: dict[str, Any]) -> dyn.CreateResult:
        client, fetch = self._clients()
        try:
            ref = copy_image(props["source_ref"], props["repository_url"], client=client, fetch=fetch)
        except CopyError as e:
            raise CopyError(str(e)) from None  # the engine shows the traceback: keep it to this line
        return dyn.CreateResult(ref, {**props, "image_ref": ref})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Keep the image (see the module docstring)."""


class EcrImageCopy(dyn.Resource, module="mlflowtracking", name="EcrImageCopy"):
    """The digest of ``source_ref``, copied into ``repository_url`` (type token
    ``pulumi-python:dynamic/mlflowtracking:EcrImageCopy``)."""

    image_ref: pulumi.Output[str]
    """``<repository_url>@<digest>``: the copy."""
    repository_url: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(self, name: str, source_ref: str, repository_url: pulumi.Input[str],
                 opts: Optional[pulumi.ResourceOptions] = None) -> None:
        src = EcrLocation.parse(source_ref)
        if src is None or src.digest is None:
            raise ValueError(f"source_ref: an ECR digest reference, got {source_ref!r}")
        super().__init__(EcrImageCopyProvider(), name, {
            "source_ref": source_ref, "repository_url": repository_url, "digest": src.digest, "image_ref": None,
        }, opts)
