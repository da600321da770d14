"""ContainerImage: the server image, by digest, from a repository the stack owns.

Either builds ``image/`` with pulumi-docker for the stack's CPU architecture and pushes it to an
ECR repository of its own (scan on push, lifecycle policy keeping the last N images), or, when
``image_ref`` is given (promotion: prod runs the digest dev built), builds nothing and copies that
digest into an ECR repository of its own (:mod:`components.ecr_copy`, which explains why a copy
and why this one). The promoted repository has no lifecycle policy (an image in use never
expires) and takes ``protect``; an image outside ECR cannot be copied with the ECR API and runs
as given. Either way ``image_ref`` is ``<repo>@sha256:<digest>`` and ``repository_arn`` is the
repository the task pulls from.

Tags are IMMUTABLE in both repositories: a pushed tag never points at other content. ECR then
refuses any second push of a tag, even of identical content (ImageTagAlreadyExistsException), so
the build tag (:func:`build_tag`) changes with everything that makes pulumi-docker rebuild and
push: the build context as pulumi-docker hashes it (names, file modes, bytes), the platform and
pulumi-docker's version. The copies are tagged ``sha256-<hex>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_docker as docker

from components.ecr_copy import EcrImageCopy, EcrLocation
from components.outputs import DIGEST_REF_RE

PLATFORMS = {"X86_64": "linux/amd64", "ARM64": "linux/arm64"}


def context_digest(path: str | os.PathLike[str]) -> str:
    """A short hash of a build context: every file's relative name, type and permission bits, and
    bytes (a symlink: its target), as pulumi-docker's own context hash counts them (it hashes the
    mode too). ``__pycache__`` is left out, as the image's ``.dockerignore`` leaves it out."""
    root = Path(path)
    h = hashlib.sha256()
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if "__pycache__" in rel.split("/") or rel.endswith(".pyc"):
                continue
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                body = os.readlink(p).encode()
            elif stat.S_ISREG(st.st_mode):
                body = p.read_bytes()
            else:
                continue
            h.update(rel.encode() + b"\0" + stat.filemode(st.st_mode).encode() + b"\0" + body + b"\0")
    return h.hexdigest()[:16]


def _pulumi_docker_version() -> str:
    return metadata.version("pulumi_docker")


def build_tag(path: str | os.PathLike[str], cpu_architecture: str) -> str:
    """The tag a build pushes: a hash of :func:`context_digest`, the platform and pulumi-docker's
    version (which decides its context hash). Everything that makes pulumi-docker rebuild changes
    it, so no rebuild ever pushes a tag that exists (IMMUTABLE repositories refuse that)."""
    seed = f"{context_digest(path)}\0{PLATFORMS[cpu_architecture]}\0pulumi-docker {_pulumi_docker_version()}"
    return hashlib.sha256(seed.encode()).hexdigest()[:20]


def ecr_repository_arn(image_ref: str) -> Optional[str]:
    """ARN of the ECR repository an ECR image reference points into (a ``:tag`` is not part of
    the repository name), else ``None``."""
    loc = EcrLocation.parse(image_ref)
    return loc.arn if loc is not None and loc.digest is not None else None


@dataclass(frozen=True, kw_only=True)
class ContainerImageArgs:
    image_ref: Optional[str] = None
    """A digest reference to run (nothing is built; an ECR image is copied into this component's
    repository first); ``None`` = build ``context``."""
    context: str = "image"
    """Docker build context (a directory with a Dockerfile)."""
    tag: Optional[str] = None
    """Tag pushed with the build (default: :func:`build_tag` of ``context``). With IMMUTABLE tags
    it must change whenever pulumi-docker would rebuild."""
    cpu_architecture: str = "X86_64"
    """``X86_64`` or ``ARM64``: the build platform (must match the task's)."""
    images_kept: int = 10
    """Images the ECR lifecycle policy keeps."""
    force_delete: bool = False
    """Let ``pulumi destroy`` delete the repository with its images."""
    protect: bool = False
    """Pulumi ``protect`` on the repository (prod: its copy of the promoted image)."""
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
    """This component's ECR repository, which the task pulls from (for the execution role);
    ``None`` for a promoted image outside ECR."""
    repository_url: Optional[pulumi.Output[str]]
    """URL of that repository, ``None`` likewise."""
    built: bool
    """Whether this component builds and pushes the image."""

    def __init__(self, name: str, args: ContainerImageArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__("mlflowtracking:index:ContainerImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.repository_arn = None
        self.repository_url = None
        self.built = args.image_ref is None
        if args.image_ref is not None and EcrLocation.parse(args.image_ref) is None:
            self.image_ref = pulumi.Output.from_input(args.image_ref)  # outside ECR: run as given
        else:
            repo = aws.ecr.Repository(
                f"{name}-repo",
                image_scanning_configuration={"scan_on_push": True},
                image_tag_mutability="IMMUTABLE",
                encryption_configurations=[{"encryption_type": "AES256"}],
                force_delete=args.force_delete,
                tags=dict(args.tags),
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            self.repository_arn = repo.arn
            self.repository_url = repo.repository_url
            if args.image_ref is not None:
                copy = EcrImageCopy(f"{name}-copy", args.image_ref, repo.repository_url, opts=child)
                self.image_ref = pulumi.Output.concat(copy.repository_url, "@", copy.digest)
            else:
                self.image_ref = self._build(name, args, repo, child)

        self.register_outputs({"imageRef": self.image_ref, "repositoryArn": self.repository_arn})

    def _build(self, name: str, args: ContainerImageArgs, repo: aws.ecr.Repository,
               child: pulumi.ResourceOptions) -> pulumi.Output[str]:
        """Build ``args.context`` and push it to ``repo``; the pushed digest reference."""
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
        tag = args.tag or build_tag(args.context, args.cpu_architecture)
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
        return image.repo_digest
