"""Components of the MLflow tracking server stack (type tokens ``mlflowtracking:index:<Type>``).

``MlflowTrackingServer`` composes ``Network``, ``Database``, ``ArtifactStore``, ``ContainerImage``
and ``Service``; each takes ``(name, args, opts)`` with a frozen keyword-only args dataclass.

The names below are imported on first use (PEP 562), so that ``from components import outputs``
(what ``deploy`` needs to know the stack's output names) does not import the AWS and Docker SDKs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "ArtifactStore": "artifact_store", "ArtifactStoreArgs": "artifact_store",
    "ContainerImage": "container_image", "ContainerImageArgs": "container_image",
    "Database": "database", "DatabaseArgs": "database",
    "Network": "network", "NetworkArgs": "network",
    "Service": "service", "ServiceArgs": "service",
    "MlflowTrackingServer": "tracking_server", "MlflowTrackingServerArgs": "tracking_server",
}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ below imports on demand
    from components.artifact_store import ArtifactStore, ArtifactStoreArgs  # noqa: F401
    from components.container_image import ContainerImage, ContainerImageArgs  # noqa: F401
    from components.database import Database, DatabaseArgs  # noqa: F401
    from components.network import Network, NetworkArgs  # noqa: F401
    from components.service import Service, ServiceArgs  # noqa: F401
    from components.tracking_server import MlflowTrackingServer, MlflowTrackingServerArgs  # noqa: F401


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'components' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"components.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
