"""ContainerImage: the server image, by digest.

Either builds ``image/`` with pulumi-docker for the stack's CPU architecture and pushes it to an
ECR repository of its own (scan on push, lifecycle policy keeping the last N images), or, when
``image_ref`` is given (promotion: prod runs the digest dev built), builds and creates nothing
and passes that reference through. Either way ``image_ref`` is ``<repo>@sha256:<digest>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from components.outputs import DIGEST_REF_RE
ECR_REF_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9\-]+)\.amazonaws\.com(?P<cn>\.cn)?/(?P<repo>[^@]+)@sha256:")
PLATFORMS = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}


def context_digest(path: str | os.PathLike[str]) -> str:
    """A short content hash of a build context (file names and bytes): the image tag, so that an
    unchanged context pushes under the same tag."""
    root = Path(path)
    h = hashlib.sha256()
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and "__pycache__" not in rel.split("/") and not rel.endswith(".pyc"):
                h.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def ecr_repository_arn(image_ref: str) -> Optional[str]:
    """ARN of the ECR repository an ECR image reference points into, else ``None``."""
    m = ECR_REF_RE.match(image_ref)
    if not m:
        return None
    partition = "aws-cn" if m["cn"] else "aws"
    return f"arn:{partition}:ecr:{m['region']}:{m['account']}:repository/{m['repo']}"


@dataclass(frozen=True, kw_only=True)
class ContainerImageArgs:
    image_ref: Optional[str] = None
    """A digest reference to run as is (nothing is built); ``None`` = build ``context``."""
    context: str = "image"
    """Docker build context (a directory with a Dockerfile)."""
    tag: Optional[str] = None
    """Tag pushed with the build (default: :func:`context_digest` of ``context``)."""
    cpu_architecture: str = "X86_64"
    """``X86_64`` or ``ARM64``: the build platform (must match the task's)."""
    images_kept: int = 10
    """Images the ECR lifecycle policy keeps."""
    force_delete: bool = False
    """Let ``pulumi destroy`` delete the repository with its images."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags on every resource."""

    def __post_init__(self) -> None:
        if self.image_ref is not None and not DIGEST_REF_RE.match(self.image_ref):
            raise ValueError(f"image_ref: <registry>/<repository>@sha256:<64 hex>, got {self.image_ref!r}")
        if self.cpu_architecture not in PLATFORMS:
            raise ValueError(f"cpu_architecture: one of {tuple(PLATFORMS)}, got {self.cpu_architecture!r}")
        if not 1 <= self.images_kept <= 1000:
            raise ValueError(f"images_kept: 1 to 1000, got {self.images_kept!r}")


class ContainerImage(pulumi.ComponentResource):
    image_ref: pulumi.Output[str]
    """Digest reference of the image (``<repo>@sha256:<64 hex>``)."""
    repository_arn: Optional[pulumi.Output[str]]
    """ECR repository the task pulls from (for the execution role), ``None`` outside ECR."""
    repository_url: Optional[pulumi.Output[str]]
    """URL of the repository this component created, ``None`` when ``image_ref`` was given."""
    built: bool
    """Whether this component builds and pushes the image."""

    def __init__(self, name: str, args: ContainerImageArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:ContainerImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        if args.image_ref is not None:
            arn = ecr_repository_arn(args.image_ref)
            self.image_ref = pulumi.Output.from_input(args.image_ref)
            self.repository_arn = pulumi.Output.from_input(arn) if arn else None
            self.repository_url = None
            self.built = False
        else:
            repo = aws.ecr.Repository(
                f"{name}-repo",
                image_scanning_configuration={"scan_on_push": True},
                image_tag_mutability="MUTABLE",
                encryption_configurations=[{"encryption_type": "AES256"}],
                force_delete=args.force_delete,
                tags=dict(args.tags),
                opts=child,
            )
            aws.ecr.LifecyclePolicy(f"{name}-lifecycle", repository=repo.name, policy=json.dumps({
                "rules": [{
                    "rulePriority": 1,
                    "description": f"keep the last {args.images_kept} images",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                  "countNumber": args.images_kept},
                    "action": {"type": "expire"},
                }],
            }), opts=child)
            # The one data-source call inside a component: credentials to push (DESIGN §2).
            token = aws.ecr.get_authorization_token_output(registry_id=repo.registry_id,
                                                          opts=pulumi.InvokeOptions(parent=self))
            tag = args.tag or context_digest(args.context)
            image = docker.Image(
                f"{name}-image",
                image_name=pulumi.Output.concat(repo.repository_url, ":", tag),
                build=docker.DockerBuildArgs(context=args.context, platform=PLATFORMS[args.cpu_architecture]),
                registry=docker.RegistryArgs(
                    server=repo.repository_url,
                    username=token.user_name,
                    password=pulumi.Output.secret(token.password),
                ),
                opts=child,
            )
            self.image_ref = image.repo_digest
            self.repository_arn = repo.arn
            self.repository_url = repo.repository_url
            self.built = True

        self.register_outputs({"imageRef": self.image_ref, "repositoryArn": self.repository_arn})
