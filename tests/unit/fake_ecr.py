"""A stand-in for the Amazon ECR API, as strict as its reference, for the image-copy tests.

It answers the calls ``components.ecr_copy`` makes, with the request shapes of boto3's ``ecr``
client and the error codes of the *Amazon ECR API Reference*:

- ``BatchGetImage``: missing images are ``failures`` (``ImageNotFound``), not an exception;
  ``RepositoryNotFoundException`` for a missing repository.
- ``DescribeImages``: ``ImageNotFoundException`` / ``RepositoryNotFoundException``.
- ``BatchCheckLayerAvailability``: at most 100 digests; a layer of another repository is
  ``UNAVAILABLE`` (layers are per repository).
- ``GetDownloadUrlForLayer``: ``LayersNotFoundException`` for a blob not in *that* repository.
- ``InitiateLayerUpload`` / ``UploadLayerPart`` / ``CompleteLayerUpload``: parts contiguous
  (``InvalidLayerPartException``), 5 MiB minimum except the last (``LayerPartTooSmallException``),
  10 MiB maximum (ECR service quotas, "Maximum layer part size"); the digest is verified
  (``InvalidLayerException``); ``LayerAlreadyExistsException`` for a layer already there.
- ``PutImage``: every blob (config and layers) and every child manifest of an index must already
  be in the *target* repository (``LayersNotFoundException``, ``ReferencedImagesNotFoundException``);
  ``imageDigest`` must match the manifest's SHA-256 (``ImageDigestDoesNotMatchException``); an
  existing tag cannot be pushed again in an IMMUTABLE repository, even with the same digest
  (``ImageTagAlreadyExistsException``, as reported in aws/containers-roadmap#2179); in a MUTABLE
  one the same manifest and tag again is ``ImageAlreadyExistsException``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Optional

from botocore.exceptions import ClientError

MIB = 1024 * 1024
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _err(code: str, message: str, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


@dataclass
class Repo:
    mutability: str = "IMMUTABLE"
    images: dict[str, tuple[str, str]] = field(default_factory=dict)  # digest -> (manifest, media type)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    blobs: dict[str, bytes] = field(default_factory=dict)


class FakeEcr:
    """Registries keyed by ``(account, region)``, repositories by name."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str, str], Repo] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (region, operation, request)
        self._urls: dict[str, bytes] = {}
        self._uploads: dict[str, tuple[tuple[str, str, str], bytearray]] = {}
        self._ids = itertools.count(1)

    # -- set-up helpers

    def repo(self, account: str, region: str, name: str, mutability: str = "IMMUTABLE") -> Repo:
        return self.repos.setdefault((account, region, name), Repo(mutability))

    def push(self, account: str, region: str, name: str, layers: list[bytes], tag: Optional[str] = None) -> str:
        """An image as ``docker push`` leaves it: blobs, then the manifest. Returns its digest."""
        repo = self.repo(account, region, name)
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": len(repo.images)}).encode()
        for blob in [config, *layers]:
            repo.blobs[digest_of(blob)] = blob
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(config), "digest": digest_of(config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(b), "digest": digest_of(b)} for b in layers],
        }, indent=3)
        return self._store(repo, manifest, DOCKER_MANIFEST, tag)

    def push_index(self, account: str, region: str, name: str, children: list[str], tag: Optional[str] = None) -> str:
        repo = self.repo(account, region, name)
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": repo.images[d][1], "digest": d, "size": len(repo.images[d][0].encode()),
             "platform": {"architecture": "amd64", "os": "linux"}} for d in children]})
        return self._store(repo, index, OCI_INDEX, tag)

    def _store(self, repo: Repo, manifest: str, media_type: str, tag: Optional[str]) -> str:
        d = digest_of(manifest.encode())
        repo.images[d] = (manifest, media_type)
        if tag:
            repo.tags[tag] = d
        return d

    def client(self, region: str) -> "FakeEcrClient":
        return FakeEcrClient(self, region)

    def fetch(self, url: str) -> io.BytesIO:
        """What a GET of a presigned download URL returns."""
        return io.BytesIO(self._urls[url])

    def ops(self, name: Optional[str] = None) -> list[tuple[str, str, dict[str, Any]]]:
        return [c for c in self.calls if name is None or c[1] == name]


class FakeEcrClient:
    def __init__(self, ecr: FakeEcr, region: str):
        self.ecr, self.region = ecr, region

    def _repo(self, op: str, registryId: str, repositoryName: str) -> tuple[tuple[str, str, str], Repo]:
        key = (registryId, self.region, repositoryName)
        if key not in self.ecr.repos:
            raise _err("RepositoryNotFoundException",
                       f"The repository with name '{repositoryName}' does not exist in the registry with id "
                       f"'{registryId}'", op)
        return key, self.ecr.repos[key]

    def _log(self, op: str, req: dict[str, Any]) -> None:
        self.ecr.calls.append((self.region, op, {k: v for k, v in req.items() if k != "layerPartBlob"}))

    def describe_images(self, *, registryId: str, repositoryName: str, imageIds: list[dict[str, str]]):
        self._log("DescribeImages", dict(registryId=registryId, repositoryName=repositoryName, imageIds=imageIds))
        _, repo = self._repo("DescribeImages", registryId, repositoryName)
        details = []
        for image_id in imageIds:
            d = image_id.get("imageDigest") or repo.tags.get(image_id.get("imageTag", ""))
            if d not in repo.images:
                raise _err("ImageNotFoundException", f"The image with imageId {image_id} does not exist within the "
                           f"repository with name '{repositoryName}'", "DescribeImages")
            details.append({"imageDigest": d, "imageTags": [t for t, x in repo.tags.items() if x == d],
                            "imageManifestMediaType": repo.images[d][1]})
        return {"imageDetails": details}

    def batch_get_image(self, *, registryId: str, repositoryName: str, imageIds: list[dict[str, str]],
                        acceptedMediaTypes: list[str]):
        self._log("BatchGetImage", dict(registryId=registryId, repositoryName=repositoryName, imageIds=imageIds))
        _, repo = self._repo("BatchGetImage", registryId, repositoryName)
        images, failures = [], []
        for image_id in imageIds:
            d = image_id.get("imageDigest")
            if d in repo.images and repo.images[d][1] in acceptedMediaTypes:
                manifest, media_type = repo.images[d]
                images.append({"registryId": registryId, "repositoryName": repositoryName,
                               "imageId": {"imageDigest": d}, "imageManifest": manifest,
                               "imageManifestMediaType": media_type})
            else:
                failures.append({"imageId": image_id, "failureCode": "ImageNotFound",
                                 "failureReason": "Requested image not found"})
        return {"images": images, "failures": failures}

    def batch_check_layer_availability(self, *, registryId: str, repositoryName: str, layerDigests: list[str]):
        self._log("BatchCheckLayerAvailability", dict(registryId=registryId, repositoryName=repositoryName,
                                                      layerDigests=layerDigests))
        if not 1 <= len(layerDigests) <= 100:
            raise _err("InvalidParameterException", "layerDigests: 1 to 100 items", "BatchCheckLayerAvailability")
        _, repo = self._repo("BatchCheckLayerAvailability", registryId, repositoryName)
        return {"layers": [{"layerDigest": d, "layerAvailability": "AVAILABLE" if d in repo.blobs else "UNAVAILABLE"}
                           for d in layerDigests], "failures": []}

    def get_download_url_for_layer(self, *, registryId: str, repositoryName: str, layerDigest: str):
        self._log("GetDownloadUrlForLayer", dict(registryId=registryId, repositoryName=repositoryName,
                                                 layerDigest=layerDigest))
        _, repo = self._repo("GetDownloadUrlForLayer", registryId, repositoryName)
        if layerDigest not in repo.blobs:
            raise _err("LayersNotFoundException", "The specified layers could not be found, or the specified "
                       "layer is not valid for this repository.", "GetDownloadUrlForLayer")
        url = f"https://prod-{self.region}-starport-layer-bucket.s3.amazonaws.com/{next(self.ecr._ids)}?X-Amz-Signature=x"
        self.ecr._urls[url] = repo.blobs[layerDigest]
        return {"downloadUrl": url, "layerDigest": layerDigest}

    def initiate_layer_upload(self, *, registryId: str, repositoryName: str):
        self._log("InitiateLayerUpload", dict(registryId=registryId, repositoryName=repositoryName))
        key, _ = self._repo("InitiateLayerUpload", registryId, repositoryName)
        upload_id = f"upload-{next(self.ecr._ids)}"
        self.ecr._uploads[upload_id] = (key, bytearray())
        return {"uploadId": upload_id, "partSize": 10 * MIB}

    def upload_layer_part(self, *, registryId: str, repositoryName: str, uploadId: str, partFirstByte: int,
                          partLastByte: int, layerPartBlob: bytes):
        self._log("UploadLayerPart", dict(registryId=registryId, repositoryName=repositoryName, uploadId=uploadId,
                                          partFirstByte=partFirstByte, partLastByte=partLastByte,
                                          size=len(layerPartBlob)))
        key, _ = self._repo("UploadLayerPart", registryId, repositoryName)
        if uploadId not in self.ecr._uploads or self.ecr._uploads[uploadId][0] != key:
            raise _err("UploadNotFoundException", "The upload could not be found.", "UploadLayerPart")
        data = self.ecr._uploads[uploadId][1]
        if partFirstByte != len(data) or partLastByte != partFirstByte + len(layerPartBlob) - 1:
            raise _err("InvalidLayerPartException", f"The layer part {partFirstByte}-{partLastByte} does not "
                       f"follow byte {len(data) - 1}", "UploadLayerPart")
        if len(layerPartBlob) > 10 * MIB:
            raise _err("InvalidParameterException", "layer part larger than 10 MiB", "UploadLayerPart")
        data.extend(layerPartBlob)
        return {"uploadId": uploadId, "lastByteReceived": partLastByte}

    def complete_layer_upload(self, *, registryId: str, repositoryName: str, uploadId: str, layerDigests: list[str]):
        self._log("CompleteLayerUpload", dict(registryId=registryId, repositoryName=repositoryName,
                                              uploadId=uploadId, layerDigests=layerDigests))
        key, repo = self._repo("CompleteLayerUpload", registryId, repositoryName)
        if uploadId not in self.ecr._uploads:
            raise _err("UploadNotFoundException", "The upload could not be found.", "CompleteLayerUpload")
        parts = [c[2] for c in self.ecr.calls if c[1] == "UploadLayerPart" and c[2]["uploadId"] == uploadId]
        if any(p["size"] < 5 * MIB for p in parts[:-1]):
            raise _err("LayerPartTooSmallException", "Layer part size is less than 5 MiB", "CompleteLayerUpload")
        data = bytes(self.ecr._uploads.pop(uploadId)[1])
        if not data:
            raise _err("EmptyUploadException", "The upload contains no layer parts.", "CompleteLayerUpload")
        (expected,) = layerDigests
        if digest_of(data) != expected:
            raise _err("InvalidLayerException", "The layer digest calculation performed by Amazon ECR upon "
                       "receipt of the image layer does not match the digest specified.", "CompleteLayerUpload")
        if expected in repo.blobs:
            raise _err("LayerAlreadyExistsException", "The image layer already exists in the associated repository.",
                       "CompleteLayerUpload")
        repo.blobs[expected] = data
        return {"registryId": registryId, "repositoryName": repositoryName, "uploadId": uploadId,
                "layerDigest": expected}

    def put_image(self, *, registryId: str, repositoryName: str, imageManifest: str,
                  imageManifestMediaType: Optional[str] = None, imageDigest: Optional[str] = None,
                  imageTag: Optional[str] = None):
        self._log("PutImage", dict(registryId=registryId, repositoryName=repositoryName, imageDigest=imageDigest,
                                   imageTag=imageTag, imageManifestMediaType=imageManifestMediaType))
        _, repo = self._repo("PutImage", registryId, repositoryName)
        actual = digest_of(imageManifest.encode())
        if imageDigest is not None and imageDigest != actual:
            raise _err("ImageDigestDoesNotMatchException", "The specified image digest does not match the digest "
                       "that Amazon ECR calculated for the image.", "PutImage")
        doc = json.loads(imageManifest)
        media_type = imageManifestMediaType or doc.get("mediaType")
        if not media_type:
            raise _err("InvalidParameterException", "image manifest mediatype not provided", "PutImage")
        if "manifests" in doc:
            if any(m["digest"] not in repo.images for m in doc["manifests"]):
                raise _err("ReferencedImagesNotFoundException", "The manifest list is referencing an image that "
                           "does not exist.", "PutImage")
        elif any(b["digest"] not in repo.blobs for b in [doc["config"], *doc["layers"]]):
            raise _err("LayersNotFoundException", "The specified layers could not be found, or the specified layer "
                       "is not valid for this repository.", "PutImage")
        if imageTag is not None and imageTag in repo.tags:
            if repo.mutability == "IMMUTABLE":  # even for the same digest (aws/containers-roadmap#2179)
                raise _err("ImageTagAlreadyExistsException", f"The image tag '{imageTag}' already exists in the "
                           f"'{repositoryName}' repository and cannot be overwritten because the repository is "
                           "immutable.", "PutImage")
            if repo.tags[imageTag] == actual:
                raise _err("ImageAlreadyExistsException", "The specified image has already been pushed, and there "
                           "were no changes to the manifest or image tag after the last push.", "PutImage")
        repo.images[actual] = (imageManifest, media_type)
        if imageTag is not None:
            repo.tags[imageTag] = actual
        return {"image": {"registryId": registryId, "repositoryName": repositoryName,
                          "imageId": {"imageDigest": actual, **({"imageTag": imageTag} if imageTag else {})}}}
