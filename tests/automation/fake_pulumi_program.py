"""The "program" :class:`tests.automation.fake_pulumi.RecordingPulumiCommand` deploys: a function of
the stack's name and config returning its resources and outputs.

The default is a :class:`SketchProgram` of this project's resources: with ``mlflow-tracking:imageRef``
set no ``docker:index/image:Image`` but the stack's own repository and an ``EcrImageCopy`` of that
digest. A program that raises :class:`ProgramError` fails ``preview``/``up`` the way a resource's
failed check does: the engine's diagnostic (``<type> resource '<name>'s property '<p>' value {<v>}
has a problem: <reason>``, ``pkg/diag/errors.go``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Optional

PROJECT = "mlflow-tracking"

Resources = dict[str, dict[str, Any]]  # urn -> {"type": ..., "inputs": {...}}
COPY = "pulumi-python:dynamic/mlflowtracking:EcrImageCopy"
Program = Callable[[str, Mapping[str, str]], tuple[Resources, dict[str, tuple[Any, bool]]]]


class ProgramError(Exception):
    """A resource's check failed: ``(type, name, property, value, reason)``."""

    def __init__(self, typ: str, name: str, prop: str, value: str, reason: str):
        super().__init__(f"{typ} resource '{name}'s property '{prop}' value {{{value}}} has a problem: {reason}")
        self.name, self.typ = name, typ


class SketchProgram:
    """A sketch of this project's stack: what changes with ``imageRef`` is modelled faithfully.

    ``registry`` (a set of ``<repository url>@sha256:...`` references), when given, models ECR:
    a build adds its image, a promotion copies the digest into the stack's own repository, and
    a digest that neither the source nor the stack's repository holds fails the preview like
    ``components.ecr_copy.EcrImageCopyProvider.check`` does. ``None``: every image exists.
    """

    def __init__(self, registry: Optional[set[str]] = None):
        self.registry = registry

    def __call__(self, stack: str, config: Mapping[str, str]) -> tuple[Resources, dict[str, tuple[Any, bool]]]:
        region = config.get("aws:region", "eu-west-1")
        repo = f"123456789012.dkr.ecr.{region}.amazonaws.com/mlflow-{stack}"
        ref = config.get(f"{PROJECT}:imageRef")

        def urn(typ: str, name: str) -> str:
            return f"urn:pulumi:{stack}::{PROJECT}::{typ}::{name}"

        res: Resources = {
            urn("pulumi:pulumi:Stack", f"{PROJECT}-{stack}"): {"type": "pulumi:pulumi:Stack", "inputs": {}},
            urn("awsx:ec2:Vpc", "mlflow-vpc"): {"type": "awsx:ec2:Vpc", "inputs": {}},
            urn("aws:rds/cluster:Cluster", "mlflow-db"): {"type": "aws:rds/cluster:Cluster", "inputs": {}},
            urn("aws:s3/bucket:Bucket", "mlflow-artifacts"): {"type": "aws:s3/bucket:Bucket", "inputs": {}},
            urn("aws:ecr/repository:Repository", "mlflow-repo"): {
                "type": "aws:ecr/repository:Repository", "inputs": {"imageTagMutability": "IMMUTABLE"}},
        }
        if ref is None:
            digest = hashlib.sha256(f"build:{stack}".encode()).hexdigest()
            ref = f"{repo}@sha256:{digest}"
            res[urn("docker:index/image:Image", "mlflow-image")] = {
                "type": "docker:index/image:Image",
                "inputs": {"build": {"context": "image"}, "imageName": f"{repo}:latest"},
            }
            self._add(ref)
        elif ".dkr.ecr." in ref:  # prod owns its image: a copy of the digest in its own repository
            digest = ref.rsplit("@sha256:", 1)[1]
            own = f"{repo}@sha256:{digest}"
            source = re.sub(r":[^/]+$", "", ref.split("@", 1)[0])  # a :tag is not part of the repository
            if self.registry is not None and own not in self.registry and f"{source}@sha256:{digest}" not in self.registry:
                raise ProgramError(COPY, "mlflow-image-copy", "source_ref", ref,
                                   f"sha256:{digest} is not in repository '{source.split('/', 1)[1]}' (expired by "
                                   f"its lifecycle policy, or the repository was deleted) and not yet copied here: "
                                   f"build the image again and promote the new digest")
            res[urn(COPY, "mlflow-image-copy")] = {
                "type": COPY, "inputs": {"source_ref": ref, "repository_url": repo, "digest": f"sha256:{digest}"}}
            ref = own
            self._add(ref)
        res[urn("aws:ecs/taskDefinition:TaskDefinition", "mlflow-task")] = {
            "type": "aws:ecs/taskDefinition:TaskDefinition",
            "inputs": {"containerDefinitions": json.dumps([{"name": "mlflow", "image": ref}])},
        }
        res[urn("aws:ecs/service:Service", "mlflow-service")] = {"type": "aws:ecs/service:Service", "inputs": {}}
        dns = f"mlflow-{stack}-123.{region}.elb.amazonaws.com"
        outs = {
            "trackingUri": (f"https://{dns}", False),
            "loadBalancerDnsName": (dns, False),
            "artifactBucketName": (f"mlflow-{stack}-artifacts", False),
            "databaseEndpoint": (f"mlflow-{stack}.cluster-abc.{region}.rds.amazonaws.com", False),
            "imageRef": (ref, False),
            "adminSecretArn": (f"arn:aws:secretsmanager:{region}:123456789012:secret:mlflow-{stack}-admin", False),
        }
        return res, outs

    def _add(self, ref: str) -> None:
        if self.registry is not None:
            self.registry.add(ref)


sketch_program = SketchProgram()
"""The sketch with no registry model (every image exists)."""
