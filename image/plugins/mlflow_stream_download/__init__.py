"""Proxied downloads from S3 go straight from S3 to the client, never through the artifact spool.

What MLflow 3.17.2 does (``mlflow/server/artifact_router.py``, ``download_artifact``, the route
``GET /api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}`` and its ``/ajax-api/2.0/...``
twin, which uvicorn serves before the Flask app mounted under it): for a repository without a
local path (S3), ``artifact_repo.download_artifacts(path, tmp_dir)`` first downloads the WHOLE
object into a ``tempfile.TemporaryDirectory`` in the server's ``TMPDIR`` (the image's spool,
``MLFLOW_SPOOL_DIR``), and only then streams that file to the client. A large download needs
its full size free in the spool, and the client sees no byte before S3 -> spool has finished:
the MLflow client's ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (120 s) runs out and it retries, so a
multi-GiB forced-proxy download (``MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD=false``) on a slow S3
never completes. This is the route the MLflow client uses for a proxied download
(``mlflow/store/artifact/http_artifact_repo.py``, ``HttpArtifactRepository._download_file``).

What this module changes: that route's endpoint is replaced by one that, when the proxied
destination is an ``S3ArtifactRepository``, opens the object with S3's GetObject (AWS, Amazon S3
API Reference, "GetObject"; boto3 ``S3.Client.get_object``, whose ``Body`` is a botocore
``StreamingBody``) through the repository's own boto3 client (``S3ArtifactRepository._get_s3_client``,
the same endpoint, credentials, addressing style and ``ExpectedBucketOwner`` as MLflow's
``_download_file``) and sends the body on in chunks of ``ARTIFACT_STREAM_CHUNK_SIZE`` (1 MiB).
The response is a Starlette ``StreamingResponse`` over an async generator whose every blocking
``StreamingBody.read`` runs in a worker thread (``anyio.to_thread.run_sync``), never on the event
loop, under this module's own ``CapacityLimiter`` (``S3_READ_THREADS`` per worker): the reads do
not take the tokens of anyio's default limiter (40 threads), which MLflow's Flask routes share, so
stalled S3 reads cannot starve the REST API. S3 is read only as fast
as the client takes the bytes (one chunk in flight), so nothing but the chunk in hand is held.
The S3 body is closed when the response ends for any reason, the client's disconnect included
(``__call__``'s ``finally``; Starlette cancels the stream on ``http.disconnect``, or turns the
send's ``OSError`` into ``ClientDisconnect`` on ASGI spec 2.4, and waits for a read in progress
to finish before the ``finally`` runs).

Kept exactly as MLflow does it:

* everything before the route: MLflow's permission middleware (``basic-auth``:
  ``add_fastapi_permission_middleware``; ``basic-auth-fastpath`` the same), the workspace
  middleware, the spool guard. Only the route's endpoint is replaced (in
  ``artifact_router.routes``, right after ``mlflow.server.artifact_router`` is imported and before
  ``create_fastapi_app`` copies its routes), so a refused request never reaches S3.
* the route's own checks, in MLflow's order and with MLflow's functions: ``--serve-artifacts``
  (``_is_serving_proxied_artifacts``), ``validate_path_is_safe``, the workspace scoping
  (``_get_workspace_scoped_path``), the destination (``_get_artifact_repo``). When any of them
  fails, MLflow's own ``download_artifact`` is called and gives its own answer.
* the headers: ``Content-Type`` from ``_guess_mime_type`` of the artifact's file name (MLflow
  calls it on the spooled file, whose name is the artifact's), ``Content-Disposition`` from
  ``_content_disposition_attachment``, ``X-Content-Type-Options: nosniff``. One header differs:
  ``Content-Length`` is the object's size from GetObject, where MLflow's spooled stream had none
  (``Transfer-Encoding: chunked``); a client can now tell a cut-off body from a complete one.
* anything that is not a plain S3 object: a destination other than S3 (a local path streams from
  disk in MLflow's ``get_local_path`` branch), a path ending in ``/`` or empty, and any error
  opening the object (a missing key, which may be a "directory" prefix, AccessDenied, a
  connection error) go to MLflow's own ``download_artifact``. Such a fallback spools as MLflow does.
  One answer differs on purpose: a key that does not exist, with nothing below it either (S3
  GetObject's ``NoSuchKey``, then ListObjectsV2 of ``<key>/`` empty), is ``404
  RESOURCE_DOES_NOT_EXIST``, where MLflow answers ``500 INTERNAL_ERROR``, which HTTP clients retry.

Not changed: the Flask routes (``handlers.py``, ``_download_artifact``, reached only under
gunicorn/waitress, which the image does not use; ``get-artifact`` and
``model-versions/get-artifact`` via ``_send_artifact``, which the web UI uses to preview a run's
artifact and to download one when presigned downloads are off) still spool; so do the logged
model routes. S3 is read at the client's pace, so a client that stalls for long stalls the S3
connection too (S3 may then close it); an error reading S3 after the first byte (that, a broken
connection, botocore's 60 s read timeout while S3 sends nothing) cuts the response short: the
client sees fewer bytes than ``Content-Length`` and fails, as it would on a broken connection.
Each download in flight holds one connection of the boto3 client (10 pooled by default; more
are opened and discarded, not waited for).

Where it hooks in: ``mlflow_patch_hook`` on ``mlflow.server.artifact_router`` (no other plugin
patches that module). It is installed like ``mlflow_spool_guard``: the ``*.dist-info`` beside
this package declares a ``mlflow.default_experiment_provider`` entry point, loaded in every
MLflow process at ``import mlflow``; the provider itself is never "in context". The entrypoint
already puts this directory on ``PYTHONPATH``. ``MLFLOW_STREAM_DOWNLOADS=false`` in the server's
environment leaves MLflow's route as it is (for comparisons; the entrypoint does not set it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import posixpath
import weakref

import mlflow_patch_hook  # beside this package (image/plugins): the import hook the plugins share

TARGET = "mlflow.server.artifact_router"
ENABLE_ENV = "MLFLOW_STREAM_DOWNLOADS"
_MARK = "_mlflow_stream_download"
_log = logging.getLogger("mlflow_stream_download")


def enabled() -> bool:
    return os.environ.get(ENABLE_ENV, "true").strip().lower() not in ("false", "0", "no", "off")


def installed(module) -> bool:
    """True when ``module`` (``mlflow.server.artifact_router`` or ``mlflow.server.fastapi_app``)
    serves downloads through this module's endpoint."""
    router = getattr(module, "artifact_router", None)
    return any(getattr(getattr(r, "endpoint", None), _MARK, False) for r in getattr(router, "routes", ()))


def _bucket_key(repo, artifact_path: str) -> tuple[str, str]:
    """The artifact's bucket and key, as the repository's ``_download_file`` names them."""
    bucket, root = repo.parse_s3_compliant_uri(repo.artifact_uri)
    return bucket, posixpath.join(root, artifact_path)


def _open_object(repo, artifact_path: str):
    """GetObject of the artifact's key."""
    bucket, key = _bucket_key(repo, artifact_path)
    return repo._get_s3_client().get_object(Bucket=bucket, Key=key, **repo._bucket_owner_params)


def _no_such_key(error: Exception) -> bool:
    """S3's answer for a key that does not exist (GetObject: 404 NoSuchKey, given s3:ListBucket)."""
    return getattr(error, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404")


def _nothing_below(repo, artifact_path: str) -> bool:
    """No object under ``<key>/`` either: the path is neither an artifact nor a folder of them."""
    bucket, key = _bucket_key(repo, artifact_path)
    listed = repo._get_s3_client().list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/", MaxKeys=1,
                                                    **repo._bucket_owner_params)
    return not listed.get("KeyCount")


def _not_found(artifact_path: str):
    """404 RESOURCE_DOES_NOT_EXIST in MLflow's error format. MLflow's own route answers a missing
    object with a 500 INTERNAL_ERROR (its download wraps S3's 404), which HTTP clients take for a
    server fault and retry (mlflow/utils/request_utils.py, _TRANSIENT_FAILURE_RESPONSE_CODES); a 404
    is not retried. (MLflow's own client lists a path before it downloads it, so it fails on a
    missing artifact before it asks this route.)"""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error_code": "RESOURCE_DOES_NOT_EXIST",
                         "message": f"No artifact at '{artifact_path}'"}, status_code=404)


S3_READ_THREADS = 16  # per worker: S3 reads in flight at once, apart from the request threadpool
_LIMITERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _limiter():
    """This event loop's limiter for S3 reads: they run in worker threads, but never take the tokens
    of anyio's default limiter (40), which MLflow's Flask routes and sync endpoints share; a stalled
    S3 read (up to botocore's 60 s read timeout) cannot starve the REST API."""
    import anyio

    loop = asyncio.get_running_loop()
    limiter = _LIMITERS.get(loop)
    if limiter is None:
        limiter = _LIMITERS[loop] = anyio.CapacityLimiter(S3_READ_THREADS)
    return limiter


async def _chunks(body, size: int):
    """Each blocking ``read`` in a worker thread under this module's own limiter."""
    import anyio.to_thread

    while chunk := await anyio.to_thread.run_sync(body.read, size, limiter=_limiter()):
        yield chunk


_RESPONSE_CLASS = None


def response_class():
    """``S3ObjectResponse(body, headers)``: a StreamingResponse of a GetObject body in
    ``ARTIFACT_STREAM_CHUNK_SIZE`` chunks that closes the body however the response ends."""
    global _RESPONSE_CLASS
    if _RESPONSE_CLASS is None:
        from fastapi.responses import StreamingResponse

        from mlflow.store.artifact.artifact_repo import ARTIFACT_STREAM_CHUNK_SIZE

        class S3ObjectResponse(StreamingResponse):
            def __init__(self, body, headers) -> None:
                self.s3_body = body
                super().__init__(_chunks(body, ARTIFACT_STREAM_CHUNK_SIZE), headers=headers)

            async def __call__(self, scope, receive, send):
                try:
                    await super().__call__(scope, receive, send)
                finally:
                    self.s3_body.close()

        _RESPONSE_CLASS = S3ObjectResponse
    return _RESPONSE_CLASS


def make_endpoint(module):
    """The replacement for ``module.download_artifact`` (same signature: FastAPI reads it)."""
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository
    from mlflow.utils.mime_type_utils import _guess_mime_type
    from mlflow.utils.uri import validate_path_is_safe

    original = module.download_artifact
    S3ObjectResponse = response_class()

    async def download_artifact(artifact_path: str):
        import anyio.to_thread

        try:
            if not module._is_serving_proxied_artifacts():
                raise LookupError("not serving artifacts")
            path = validate_path_is_safe(artifact_path)
            path = module._get_workspace_scoped_path(path)
            repo = module._get_artifact_repo()
            if not isinstance(repo, S3ArtifactRepository) or not path or path.endswith("/"):
                raise LookupError("not a plain S3 object")
        except Exception:
            return await original(artifact_path)  # MLflow's own answer (and its own error)
        try:
            obj = await anyio.to_thread.run_sync(_open_object, repo, path, limiter=_limiter())
        except Exception as e:  # missing key, "directory" prefix, AccessDenied, ...
            if _no_such_key(e):
                try:
                    if await anyio.to_thread.run_sync(_nothing_below, repo, path, limiter=_limiter()):
                        return _not_found(artifact_path)
                except Exception:  # noqa: BLE001 - e.g. no s3:ListBucket: MLflow answers, as below
                    pass
            _log.debug("GetObject %s failed (%s); MLflow's own download answers", path, e)
            return await original(artifact_path)
        try:
            filename = posixpath.basename(path)
            headers = {
                "Content-Type": _guess_mime_type(filename),
                "Content-Disposition": module._content_disposition(filename),
                "X-Content-Type-Options": "nosniff",
            }
            if obj.get("ContentLength") is not None:
                headers["Content-Length"] = str(obj["ContentLength"])
            return S3ObjectResponse(obj["Body"], headers)
        except BaseException:  # the response never started: its finally will not close the body
            obj["Body"].close()
            raise

    download_artifact.__doc__ = original.__doc__
    download_artifact.__wrapped_mlflow__ = original
    setattr(download_artifact, _MARK, True)
    return download_artifact


def patch(module) -> None:
    """Replace the GET routes of ``module.artifact_router`` whose endpoint is MLflow's
    ``download_artifact`` (idempotent; in place, so the routes keep their order)."""
    if installed(module) or not enabled():
        return
    from fastapi.routing import APIRoute

    original = module.download_artifact
    endpoint = make_endpoint(module)
    router = module.artifact_router
    for i, route in enumerate(list(router.routes)):
        if isinstance(route, APIRoute) and route.endpoint is original:
            router.add_api_route(route.path, endpoint, methods=sorted(route.methods), name=route.name)
            router.routes[i] = router.routes.pop()
    mark = getattr(router, "_mark_routes_changed", None)  # FastAPI >= 0.130: apps include a router lazily
    if mark is not None:
        mark()
    module.download_artifact = endpoint


def install() -> None:
    """Patch now if MLflow's artifact router is loaded, else right after it is first imported."""
    mlflow_patch_hook.install(TARGET, patch)


class StreamHook(mlflow_patch_hook.EntryPointHook):
    """The ``mlflow.default_experiment_provider`` entry point: loading it installs the streaming endpoint."""

    target = TARGET
    patch = staticmethod(patch)
