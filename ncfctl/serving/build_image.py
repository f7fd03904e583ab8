"""``ncfctl build-image``: a complete Docker build context for the serving container, then a build.

The context (``images/<id>/context/``) is the ``container/`` folder (Dockerfile, the ``ncf_serving``
server package, requirements, ``buildspec.yml``) plus the serving bundle of a compiled artifact under
``model/``, so the image bakes the model in at ``/opt/ml/model`` and the same folder is what
``ncfctl deploy --backend local`` runs. It is committed as an ``image`` artifact before any build
starts: a failed build leaves a valid context to inspect or build by hand, with ``info.built`` false.

Backends: ``docker`` (a reachable engine; ``--push`` to ECR), ``buildah`` (the same build without
a daemon; ``--push`` too), ``codebuild`` (context zip on S3 -> CodeBuild, which builds and pushes),
``none`` (context only). ``auto`` is docker when an engine answers ``docker info`` within
``image.docker_timeout`` seconds, else buildah when it is installed, runs, and (unless pushing)
already holds the base image, else none: the default never depends on reaching a registry, so
``ncfctl pipeline`` works offline wherever buildah happens to be installed. Naming
``image.backend buildah`` (or pushing) builds anyway, pulling the base image.
``image.python_image`` replaces the Dockerfile's base image (``PYTHON_IMAGE``), e.g. with one made
offline. A bundle the image cannot run (Neo output for arm64 or a GPU) is refused before anything
is written or uploaded.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ncf_serving.bundle import BundleError, load_bundle
from ncf_serving.fastpath import FastPath

from ncfctl.artifacts import ImageInfo, ReuseKey
from ncfctl.aws import codebuild, ecr, s3
from ncfctl.aws.clients import require, require_credentials
from ncfctl.config import Config
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.serving import buildah, docker_engine
from ncfctl.targets import check_serving_pair
from ncfctl.workspace import MANIFEST, Artifact, Workspace

CONTEXT_DIR = "context"
BASE_IMAGE_ARG = "PYTHON_IMAGE"  # the Dockerfile's build argument naming its base image
MODEL_DIR = "model"  # inside the context; the Dockerfile copies it to /opt/ml/model
CONTAINER_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "tests", "*.egg-info", ".DS_Store")
COMPILED_HINT = "compile a model first, or name a compiled bundle with `compiled`"


@dataclass
class ImageResult:
    artifact: Artifact
    backend: str  # docker | buildah | codebuild | none
    built: bool
    image: str | None  # local tag (docker) or None
    image_uri: str | None  # ECR URI:tag when pushed or built by CodeBuild
    notes: list[str] = field(default_factory=list)  # what to do next when nothing was built

    @property
    def context(self) -> Path:
        return self.artifact.path / CONTEXT_DIR


def container_source_dir() -> Path:
    """The ``container/`` folder holding the Dockerfile next to the ``ncf_serving`` package."""
    import ncf_serving

    root = Path(ncf_serving.__file__).resolve().parent.parent
    if not (root / "Dockerfile").is_file():
        raise NcfError(
            f"no Dockerfile beside the ncf_serving package ({root})",
            hint="run ncfctl from a source checkout (pip install -e .), where container/ holds the Dockerfile",
        )
    return root


def bundle_spec(bundle: Path) -> Any:
    """The bundle's ``serving.json`` after loading the bundle as the server does before ``/ping`` is 200.

    That is the server's own code: every file checked against ``serving.json`` ``files`` (so every
    model file is present), shapes and ids against the spec, the fast path built. Only the runtime
    model is not opened: a Neo bundle may be compiled for another machine; the server opens it.
    """
    try:
        loaded = load_bundle(bundle)
        FastPath(loaded.fastpath)
    except BundleError as exc:
        raise NcfError(f"not packing {bundle}: {exc}") from None
    return loaded.spec


def write_build_context(dest: Path, bundle: Path) -> None:
    """Copy ``container/`` and the bundle (minus its manifest) into ``dest``."""
    shutil.copytree(container_source_dir(), dest, ignore=CONTAINER_IGNORE)
    shutil.copytree(bundle, dest / MODEL_DIR, ignore=shutil.ignore_patterns(MANIFEST))


def zip_context(context: Path, target: Path) -> Path:
    """CodeBuild's S3 source format: a ZIP with ``buildspec.yml`` at its root."""
    if not (context / "buildspec.yml").is_file():
        raise NcfError(f"{context} has no buildspec.yml, which CodeBuild needs at the root of its source")
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(context.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(context).as_posix())
    return target


def base_image(config: Config) -> str:
    """The image the Dockerfile builds from: ``image.python_image``, else the Dockerfile's own default."""
    if config.image.python_image:
        return config.image.python_image
    dockerfile = container_source_dir() / "Dockerfile"
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"ARG {BASE_IMAGE_ARG}="):
            return line.split("=", 1)[1].strip()
    raise NcfError(f"{dockerfile} declares no default for ARG {BASE_IMAGE_ARG}")


def build_args(config: Config, spec: Any) -> dict[str, str]:
    """Build arguments: the runtime decides which inference library the image installs."""
    args = {"RUNTIME": spec.runtime}
    if config.image.python_image:
        args[BASE_IMAGE_ARG] = config.image.python_image
    return args


def manual_build_notes(context: Path, image: str, reason: str) -> list[str]:
    """What to run by hand when ncfctl could not build: the honest answer to "where is my image?"."""
    return [
        f"no image was built ({reason}): only the build context was written",
        f"build it where Docker runs: docker build --platform {docker_engine.PLATFORM} -t {image} {context}",
        "or without a daemon: apt-get install buildah, then ncfctl build-image --backend buildah",
        f"run it: docker run --rm -p 8080:8080 {image} serve",
        "or build in AWS: ncfctl build-image --backend codebuild (needs aws.bucket and a CodeBuild role)",
        "or serve the context right here: ncfctl deploy --backend local",
    ]


BUILDERS = {"docker": docker_engine, "buildah": buildah}  # local builders: build(...) and push(...)


def _local_build(
    config: Config, backend: str, context: Path, spec: Any, image: str, push: bool, progress: Progress
) -> dict[str, Any]:
    builder = BUILDERS[backend]
    task = progress.task(f"{backend} build")

    def show(line: str) -> None:
        task.update(status=line[:70])

    builder.build(context, image, build_args(config, spec), show)
    info: dict[str, Any] = {"built": True, "image": image}
    if push:
        repository = ecr.ensure_repository(config.aws, config.aws.ecr_repository)
        remote = f"{repository}:{config.image.tag}"
        builder.push(image, remote, ecr.registry_login(config.aws), show)
        info["image_uri"] = remote
    task.finish("done")
    return info


def _codebuild(config: Config, artifact: Artifact, progress: Progress) -> dict[str, Any]:
    aws = config.aws
    what = "an image build on CodeBuild"
    require_credentials(aws, what)
    bucket = require(aws.bucket, "aws.bucket", what)
    role = require(aws.codebuild_role_arn, "aws.codebuild_role_arn", what)
    s3.check_bucket(aws, bucket)
    repository = ecr.ensure_repository(aws, aws.ecr_repository)
    with tempfile.TemporaryDirectory(prefix="ncfctl-context-") as tmp:
        archive = zip_context(artifact.path / CONTEXT_DIR, Path(tmp) / "context.zip")
        target = s3.uri(bucket, aws.prefix, "images", artifact.id, "context.zip")
        source_uri = s3.upload_file(aws, archive, target, progress)
    source_location = "/".join(s3.parse_uri(source_uri))
    project = codebuild.ensure_project(
        aws,
        aws.codebuild_project,
        source_location=source_location,
        role_arn=role,
        timeout_minutes=config.image.build_timeout_minutes,
    )
    build_id = codebuild.start_build(
        aws,
        aws.codebuild_project,
        source_location=source_location,
        env={
            "AWS_ACCOUNT_ID": repository.split(".", 1)[0],
            "IMAGE_REPO_NAME": aws.ecr_repository,
            "IMAGE_TAG": config.image.tag,
            "REPOSITORY_URI": repository,
            "RUNTIME": artifact.manifest.info.runtime,
            **({BASE_IMAGE_ARG: config.image.python_image} if config.image.python_image else {}),
        },
    )
    outcome = codebuild.wait_for_build(aws, build_id, progress)
    return {
        "built": True,
        "image_uri": f"{repository}:{config.image.tag}",
        "source_uri": source_uri,
        "codebuild_project": aws.codebuild_project,
        "project": project,
        "build_id": build_id,
        "build_seconds": round(outcome.seconds, 1),
        "logs_url": outcome.logs_url,
    }


def _choose_builder(config: Config, push: bool) -> tuple[str, docker_engine.EngineStatus]:
    """``image.backend`` resolved: auto tries docker, then buildah, then writes the context only."""
    backend = config.image.backend
    if push and backend in {"codebuild", "none"}:
        raise NcfError(
            f"image.push needs a local builder, docker or buildah (image.backend is '{backend}'; "
            "CodeBuild always pushes)",
            settings=("image.push",),
        )
    timeout = config.image.docker_timeout
    if backend == "docker" or backend == "auto":
        engine = docker_engine.engine_status(timeout)
        if engine.available or backend == "docker":
            if not engine.available:
                raise NcfError(
                    f"no Docker engine: {engine.detail}",
                    hint="start Docker, or set image.backend buildah / codebuild, or none for the context only",
                    settings=("image.backend",),
                )
            return "docker", engine
        tool = buildah.status(timeout)
        if tool.available and not push and not buildah.has_image(base := base_image(config), timeout):
            tool = docker_engine.EngineStatus(
                False, f"its storage has no {base} and auto does not pull: set image.backend buildah to pull it"
            )
        if tool.available:
            return "buildah", tool
        detail = f"no Docker engine ({engine.detail}) and no buildah ({tool.detail})"
        if push:
            raise NcfError(
                f"image.push: {detail}",
                hint="install buildah or start Docker, or set image.backend codebuild",
                settings=("image.push", "image.backend"),
            )
        return "none", docker_engine.EngineStatus(False, detail)
    if backend == "buildah":
        tool = buildah.status(timeout)
        if not tool.available:
            raise NcfError(
                tool.detail,
                hint="apt-get install buildah (Debian/Ubuntu), or set image.backend codebuild",
                settings=("image.backend",),
            )
        return "buildah", tool
    return backend, docker_engine.EngineStatus(False, f"not checked: image.backend {backend}")


def image_reuse_key(config: Config) -> ReuseKey:
    """A build context is made from the ``image`` section; the ECR repository names the image it builds."""
    return ReuseKey("image", {"image": config.image.model_dump(), "aws.ecr_repository": config.aws.ecr_repository})


def build_image(
    config: Config, workspace: Workspace, compiled: str | None = None, progress: Progress = NO_PROGRESS
) -> ImageResult:
    """Write the build context as an ``image`` artifact, then build it with ``config.image.backend``."""
    source = workspace.resolve(compiled, "compiled", COMPILED_HINT, settings=("compiled",))
    bundle = source.verify()  # ncfctl's manifest first (names the artifact), then the server's own checks
    spec = bundle_spec(bundle)
    check_serving_pair(source.id, spec.target, spec.runtime, None)
    push = config.image.push
    image = f"{config.aws.ecr_repository}:{config.image.tag}"
    backend, engine = _choose_builder(config, push)

    task = progress.task("write build context", total=1, status=source.id)
    info = ImageInfo(compiled=source.id, context=CONTEXT_DIR, model_dir=f"{CONTEXT_DIR}/{MODEL_DIR}")
    with workspace.create("image", parent=source.id, config=image_reuse_key(config).config, info=info) as writer:
        write_build_context(writer.path / CONTEXT_DIR, bundle)
        writer.manifest.info = info.updated(
            runtime=spec.runtime,
            task=spec.task,
            num_users=spec.num_users,
            num_items=spec.num_items,
            backend=backend,
            built=False,
            image=None,
            image_uri=None,
            builder=engine.detail,
        )
    artifact = writer.artifact
    task.finish(artifact.id)

    if backend == "none":
        reason = "image.backend none" if config.image.backend == "none" else engine.detail
        notes = manual_build_notes(artifact.path / CONTEXT_DIR, image, reason)
        return ImageResult(artifact, "none", False, None, None, notes)
    try:
        if backend in BUILDERS:
            built = _local_build(config, backend, artifact.path / CONTEXT_DIR, spec, image, push, progress)
        else:
            built = _codebuild(config, artifact, progress)
    except NcfError as exc:
        workspace.update(artifact, info=artifact.manifest.info.updated(build_error=str(exc)))
        raise
    artifact = workspace.update(artifact, info=artifact.manifest.info.updated(**built))
    recorded = artifact.manifest.info
    return ImageResult(artifact, backend, True, recorded.image, recorded.image_uri)
