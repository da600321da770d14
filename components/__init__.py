"""Components of the MLflow tracking server stack (type tokens ``mlflowtracking:index:<Type>``).

``MlflowTrackingServer`` composes ``Network``, ``Database``, ``ArtifactStore``, ``ContainerImage``
and ``Service``; each takes ``(name, args, opts)`` with a frozen keyword-only args dataclass.
"""

from components.artifact_store import ArtifactStore, ArtifactStoreArgs
from components.container_image import ContainerImage, ContainerImageArgs
from components.database import Database, DatabaseArgs
from components.network import Network, NetworkArgs
from components.service import Service, ServiceArgs
from components.tracking_server import MlflowTrackingServer, MlflowTrackingServerArgs

__all__ = [
    "ArtifactStore", "ArtifactStoreArgs", "ContainerImage", "ContainerImageArgs", "Database", "DatabaseArgs",
    "MlflowTrackingServer", "MlflowTrackingServerArgs", "Network", "NetworkArgs", "Service", "ServiceArgs",
]
