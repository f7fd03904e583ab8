"""``ncfctl build-image``: the serving container's build context, built with Docker or CodeBuild."""

from __future__ import annotations

from typing import Annotated

import typer

from ncfctl.cli.context import command_context
from ncfctl.cli.options import CompiledRefOpt, ImageBackend, JsonOpt
from ncfctl.cli.output import artifact_fields


def build_image_command(
    ctx: typer.Context,
    compiled: CompiledRefOpt = None,
    backend: Annotated[
        ImageBackend | None,
        typer.Option(
            "--backend",
            help="docker (local engine), buildah (no daemon), codebuild (AWS CodeBuild -> ECR), none (context "
            "only); auto = docker if an engine answers, else buildah if it runs, else none.",
        ),
    ] = None,
    push: Annotated[
        bool | None,
        typer.Option("--push/--no-push", help="docker/buildah backend: push to ECR (aws.ecr_repository)."),
    ] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Image tag (default: config image.tag).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Write the Docker build context (server + model bundle) and build the serving image."""
    c = command_context(
        ctx, overrides={"image.backend": backend, "image.push": push, "image.tag": tag}, json_output=json_output
    )
    from ncfctl.serving.build_image import build_image  # heavy: only once the flags are valid

    with c.out.progress() as progress:
        result = build_image(c.config, c.workspace, compiled, progress=progress)
    info = result.artifact.manifest.info
    payload = {
        **artifact_fields(result.artifact),
        "context": str(result.context),
        "compiled": info.compiled,
        "runtime": info.runtime,
        "backend": result.backend,
        "built": result.built,
        "image": result.image,
        "image_uri": result.image_uri,
        "build_id": info.build_id,
        "notes": result.notes,
    }

    def render() -> None:
        c.out.kv({k: v for k, v in payload.items() if k != "notes" and v is not None}, title="build-image")
        for note in result.notes[1:]:
            c.out.info(f"  {note}")
        if result.built:
            c.out.success(f"image {result.image_uri or result.image} built from {result.artifact.id}")

    if result.notes:
        c.out.warn(result.notes[0])
    c.out.result(payload, render)


def register(app: typer.Typer) -> None:
    """Add ``build-image`` to the app."""
    app.command("build-image")(build_image_command)
