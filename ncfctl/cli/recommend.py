"""``ncfctl recommend --all-users``: every user's top-K as Parquet, locally or with SageMaker Batch Transform."""

from __future__ import annotations

from typing import Annotated

import typer

from ncfctl.cli.context import command_context
from ncfctl.cli.options import CompiledRefOpt, JsonOpt, RecommendBackend
from ncfctl.cli.output import artifact_fields
from ncfctl.errors import NcfError


def recommend_command(
    ctx: typer.Context,
    all_users: Annotated[
        bool, typer.Option("--all-users", help="Top-K for every user of the model (offline recommendations).")
    ] = False,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Items per user.")] = 10,
    exclude_seen: Annotated[
        bool,
        typer.Option("--exclude-seen/--include-seen", help="Leave out items the user already interacted with."),
    ] = True,
    backend: Annotated[
        RecommendBackend,
        typer.Option(
            "--backend",
            help="local (a compiled bundle, here) or sagemaker (Batch Transform of a registered model).",
        ),
    ] = "local",
    compiled: CompiledRefOpt = None,
    model_package: Annotated[
        str | None,
        typer.Option(
            "--model-package", help="sagemaker: a version number, ARN, latest or latest-approved (the default)."
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Write each user's top-K items to recommendations.parquet (user_id, rank, item_id, score)."""
    if not all_users:
        raise NcfError("give --all-users (ncfctl invoke answers one user's top-K)")
    c = command_context(ctx, json_output=json_output)
    from ncfctl.serving.recommend import FILE, recommend_all_users  # heavy: only once the flags are valid

    with c.out.progress() as progress:
        artifact = recommend_all_users(
            c.config,
            c.workspace,
            top_k=top_k,
            exclude_seen=exclude_seen,
            compiled=compiled,
            model_package=model_package,
            backend=backend,
            progress=progress,
        )
    result = {
        **artifact_fields(artifact),
        "file": str(artifact.path / FILE),
        **artifact.manifest.info.recorded(),
        **artifact.manifest.metrics,
    }

    def render() -> None:
        c.out.kv(result, title="recommend --all-users")
        c.out.success(f"{result['rows']:,} rows for {result['users']:,} users in {result['file']}")

    c.out.result(result, render)


def register(app: typer.Typer) -> None:
    """Add ``recommend`` to the app."""
    app.command("recommend")(recommend_command)
