"""A full artifact spool is one clear error to the client, not a bare 500 that the MLflow client retries.

MLflow 3.17.2 stages every proxied artifact transfer whole in the server's ``TMPDIR`` (the image
points it at ``MLFLOW_SPOOL_DIR``, the Fargate task's ephemeral storage):

* ``PUT /api/2.0/mlflow-artifacts/artifacts/<path>`` (``mlflow/server/artifact_router.py``,
  ``upload_artifact``; S3 is not a ``StreamUploadMixin``): the body is written to a
  ``tempfile.TemporaryDirectory`` chunk by chunk, and only once it is complete is it uploaded to
  S3 (``log_artifact``). When the spool fills up, ``f.write`` raises ``OSError(ENOSPC)``; the
  route only catches ``MlflowException``, so Starlette's ``ServerErrorMiddleware`` answers
  ``500 Internal Server Error`` (text/plain) and logs a traceback. The MLflow client retries a 500
  (``mlflow/utils/request_utils.py``, ``_TRANSIENT_FAILURE_RESPONSE_CODES``: 408, 429, 500, 502,
  503, 504) with exponential backoff, sending the whole file again each time.
* ``GET`` of the same path (``download_artifact``) and the Flask ``get-artifact`` routes
  (``handlers.py``, ``_send_artifact``) download the whole object into the spool before the first
  byte goes out. In this image ``mlflow_stream_download`` streams that ``GET`` of an S3 object
  straight from S3 instead (no spool); it still spools where it hands over to MLflow's own route
  (GetObject failed) and on the ``get-artifact`` routes. There,
  ``ArtifactRepository.download_artifacts`` turns the ``OSError`` into an ``MlflowException``
  ("The following failures occurred while downloading ... [Errno 28] No space left on device"):
  a JSON 500, also retried.

The temporary directory is removed on the way out in both cases (its ``with`` block or the
handler's ``except``), and nothing reaches S3 before the spooled upload is complete, so a failed
transfer leaves no file and no object behind. What this module changes is the answer: ``507
Insufficient Storage`` (RFC 4918, section 11.5: "unable to store the representation needed to
complete the request"; not in the client's retry list) with one line of MLflow-style JSON
(``{"error_code": "RESOURCE_EXHAUSTED", "message": ...}``) naming the spool, its free space and
the stack setting that sizes it (``ephemeralStorageGib``), and one warning line in the server log
instead of a traceback. An upload whose ``Content-Length`` is larger than the spool's free space
is refused before a byte is written (the check runs when the handler first reads the body, i.e.
after authentication). The unread rest of a refused body is read and discarded by uvicorn
(httptools: ``on_body`` ignores body bytes once the response is complete), so the client reads
the 507 after sending, without a connection reset, and the connection stays usable.

Where it hooks in: ``mlflow.server.fastapi_app.create_fastapi_app`` (which both ``basic-auth``
and ``basic-auth-fastpath`` call before adding their permission middleware) is wrapped so that
every app it makes gets :class:`SpoolGuard` as an ASGI middleware (inside MLflow's permission
middleware, outside its routes). It is installed like ``mlflow_db_pool``: the ``*.dist-info``
beside this package declares a ``mlflow.default_experiment_provider`` entry point, loaded in every
MLflow process at ``import mlflow``; the provider itself is never "in context". The entrypoint
already puts this directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile

import mlflow_patch_hook  # beside this package (image/plugins): the import hook the plugins share

TARGET = "mlflow.server.fastapi_app"
STATUS = 507  # Insufficient Storage (RFC 4918, 11.5)
ERROR_CODE = "RESOURCE_EXHAUSTED"
RESERVE = 16 * 1024 * 1024  # bytes an upload may not take: the spool also holds the auth ini and HOME
UPLOAD_PREFIXES = ("/api/2.0/mlflow-artifacts/artifacts/", "/ajax-api/2.0/mlflow-artifacts/artifacts/")
# the Flask download routes (mlflow/server/__init__.py: "/get-artifact", "/model-versions/get-artifact",
# under MLflow's static prefix if one is set)
DOWNLOAD_SUFFIXES = ("/get-artifact",)
# what MLflow's download handlers put in their JSON 500 when the spool filled up (see above)
ENOSPC_TEXT = (f"[Errno {errno.ENOSPC}]", os.strerror(errno.ENOSPC), f"[Errno {errno.EDQUOT}]")
_log = logging.getLogger("mlflow_spool_guard")


class SpoolFull(OSError):
    """Raised into MLflow's upload handler when the announced body cannot fit in the spool."""

    def __init__(self, needed: int, free: int) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.needed, self.free = needed, free


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def spool_dir() -> str:
    return tempfile.gettempdir()


def free_bytes() -> int | None:
    try:
        return shutil.disk_usage(spool_dir()).free
    except OSError:
        return None


def message(method: str, needed: int | None = None) -> str:
    """One line: what did not fit, where, how much is free now, what to do."""
    spool = spool_dir()
    try:
        usage = shutil.disk_usage(spool)
        room = f"{human(usage.total)} in all, {human(usage.free)} free now"
    except OSError:
        room = "free space unknown"
    what = "upload" if method == "PUT" else "download"
    size = f" of {human(needed)}" if needed else ""
    return (f"artifact spool full: this proxied {what}{size} does not fit in the server's artifact spool "
            f"{spool} ({room}), where every proxied artifact transfer in flight is staged whole; what it had "
            f"spooled is removed. Retry when other transfers have finished, or give the server more ephemeral "
            f"storage (stack setting ephemeralStorageGib: the largest artifact times the concurrent "
            f"proxied transfers, plus headroom).")


def _is_enospc(exc: BaseException | None, _seen: set | None = None) -> bool:
    """An OSError ENOSPC/EDQUOT, or one that caused it (also inside an ExceptionGroup: Starlette's
    BaseHTTPMiddleware runs the app in a task group)."""
    seen = set() if _seen is None else _seen
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, BaseExceptionGroup) and any(_is_enospc(e, seen) for e in exc.exceptions):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _needed(exc: BaseException | None) -> int | None:
    if isinstance(exc, SpoolFull):
        return exc.needed
    if isinstance(exc, BaseExceptionGroup):
        return next((n for n in map(_needed, exc.exceptions) if n), None)
    return None


def _header(scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers") or ():
        if k.lower() == name:
            return v
    return None


class SpoolGuard:
    """ASGI middleware: a full spool is a 507 with one line of JSON (see the module docstring)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, path = scope.get("method", ""), scope.get("path", "")
        upload = method == "PUT" and path.startswith(UPLOAD_PREFIXES)
        # only a proxied download's 500 can be the spool's: a database out of space also says "No space
        # left on device" (a 503 on any route, which the client retries) and must stay what it is
        download = method == "GET" and (path.startswith(UPLOAD_PREFIXES) or path.endswith(DOWNLOAD_SUFFIXES))
        state = {"started": False, "held": None, "body": [], "checked": not upload}

        async def guarded_receive():
            if not state["checked"]:  # the handler reads the body: authenticated, about to spool
                state["checked"] = True
                try:
                    length = int(_header(scope, b"content-length") or b"")
                except ValueError:
                    length = None
                free = free_bytes()
                if length is not None and free is not None and length > free - RESERVE:
                    raise SpoolFull(length, free)
            return await receive()

        async def guarded_send(msg):
            # a download's 500 is held until its body is complete: MLflow's download handlers report a
            # full spool in a JSON 500 (small); everything else passes straight through
            if msg["type"] == "http.response.start":
                if download and msg["status"] == 500:
                    state["held"] = msg
                    return
                state["started"] = True
            elif msg["type"] == "http.response.body" and state["held"] is not None:
                state["body"].append(msg.get("body", b""))
                if msg.get("more_body"):
                    return
                held, body = state["held"], b"".join(state["body"])
                state["held"], state["body"] = None, []
                text = body[:65536].decode("utf-8", "replace")
                if any(t in text for t in ENOSPC_TEXT):
                    return await self._refuse(send, state, method, path, None)
                state["started"] = True
                await send(held)
                return await send({"type": "http.response.body", "body": body})
            return await send(msg)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception as e:
            if not _is_enospc(e) or state["started"]:
                raise
            await self._refuse(send, state, method, path, _needed(e))

    @staticmethod
    async def _refuse(send, state, method: str, path: str, needed: int | None) -> None:
        text = message(method, needed)
        _log.warning("mlflow-spool-guard: %s %s -> %d: %s", method, path, STATUS, text)
        body = json.dumps({"error_code": ERROR_CODE, "message": text}).encode()
        state["started"] = True
        state["held"] = None
        await send({"type": "http.response.start", "status": STATUS,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def installed(fastapi_app_module) -> bool:
    return getattr(getattr(fastapi_app_module, "create_fastapi_app", None), "_mlflow_spool_guard", False)


def patch(module) -> None:
    """Wrap ``module.create_fastapi_app`` (idempotent) so that every app it makes has the guard."""
    if installed(module):
        return
    create = module.create_fastapi_app

    def create_fastapi_app(*args, **kwargs):
        app = create(*args, **kwargs)
        app.add_middleware(SpoolGuard)
        return app

    create_fastapi_app.__wrapped__ = create
    create_fastapi_app.__doc__ = create.__doc__
    create_fastapi_app._mlflow_spool_guard = True
    module.create_fastapi_app = create_fastapi_app


def install() -> None:
    """Patch now if MLflow's FastAPI app module is loaded, else right after it is first imported."""
    mlflow_patch_hook.install(TARGET, patch)


class GuardHook(mlflow_patch_hook.EntryPointHook):
    """The ``mlflow.default_experiment_provider`` entry point: loading it installs the guard."""

    target = TARGET
    patch = staticmethod(patch)
