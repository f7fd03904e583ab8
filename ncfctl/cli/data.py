"""`ncfctl data`: prepare a dataset artifact (synthetic, MovieLens or your own log) and show its statistics."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ncfctl.cli.context import command_context
from ncfctl.cli.options import Dataset, JsonOpt, RatioOrder, SeedOpt, Split
from ncfctl.cli.output import artifact_fields

STAT_LABELS = {
    "users": "users",
    "items": "items",
    "interactions": "interactions",
    "density": "density",
    "train": "train rows",
    "val": "validation rows (next-latest per user)",
    "test": "test rows",
    "eval_negatives": "evaluation negatives per row",
    "raw_interactions": "raw rows read",
    "duplicates_dropped": "duplicate (user, item) rows dropped (latest kept)",
    "below_min_rating": "rows below --min-rating",
    "users_dropped": "users dropped (too few interactions to split)",
    "interactions_dropped": "their interactions",
    "prepare_seconds": "seconds",
}


def _stat_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"statistic": label, "value": metrics[key]} for key, label in STAT_LABELS.items() if key in metrics]


def data(
    ctx: typer.Context,
    dataset: Annotated[
        Dataset | None, typer.Option("--dataset", help="Generated, a MovieLens release, or your csv/parquet log.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="The upstream .zip, its folder, or the ratings file (MovieLens: downloaded when omitted); "
            "csv/parquet: your file.",
        ),
    ] = None,
    min_rating: Annotated[
        float | None, typer.Option("--min-rating", help="Keep only ratings >= this as positives (default: all).")
    ] = None,
    explicit: Annotated[
        bool | None, typer.Option("--explicit/--implicit", help="Keep ratings (RMSE/MAE) or binarise (HR/NDCG).")
    ] = None,
    split: Annotated[Split | None, typer.Option("--split", help="How each user's rows are held out.")] = None,
    test_ratio: Annotated[
        float | None, typer.Option("--test-ratio", help="ratio split: share of each user's rows held out.")
    ] = None,
    ratio_order: Annotated[
        RatioOrder | None,
        typer.Option("--ratio-order", help="ratio split: random, or temporal (latest rows held out)."),
    ] = None,
    eval_negatives: Annotated[
        int | None, typer.Option("--eval-negatives", min=1, help="Sampled negatives per evaluation row.")
    ] = None,
    user_col: Annotated[str | None, typer.Option("--user-col", help="csv/parquet: user id column.")] = None,
    item_col: Annotated[str | None, typer.Option("--item-col", help="csv/parquet: item id column.")] = None,
    rating_col: Annotated[str | None, typer.Option("--rating-col", help="csv/parquet: rating column.")] = None,
    time_col: Annotated[
        str | None, typer.Option("--time-col", help="csv/parquet: time column (Unix seconds or ISO 8601).")
    ] = None,
    seed: SeedOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Prepare a dataset: read or generate interactions, clean them, split, sample evaluation negatives."""
    overrides = {
        "data.dataset": dataset,
        "data.source": source,
        "data.min_rating": min_rating,
        "data.explicit": explicit,
        "data.split": split,
        "data.test_ratio": test_ratio,
        "data.ratio_order": ratio_order,
        "data.eval_negatives": eval_negatives,
        "data.user_col": user_col,
        "data.item_col": item_col,
        "data.rating_col": rating_col,
        "data.time_col": time_col,
        "seed": seed,
    }
    c = command_context(ctx, overrides=overrides, json_output=json_output)
    from ncfctl.data.prepare import prepare_dataset  # pandas & co.: only once the flags are valid
    from ncfctl.data.splits import MIN_PER_USER

    with c.out.progress(transient=True) as progress:
        artifact = prepare_dataset(c.config, c.workspace, progress=progress)
    metrics = artifact.manifest.metrics
    if metrics.get("users_dropped"):
        c.out.warn(
            f"dropped {metrics['users_dropped']:,} users with fewer than {MIN_PER_USER} interactions "
            f"({metrics['interactions_dropped']:,} rows): a split needs one train, one validation and one test row"
        )
    if metrics.get("duplicates_dropped"):
        c.out.warn(f"{metrics['duplicates_dropped']:,} repeated (user, item) rows dropped: the latest one is kept")
    info = artifact.manifest.info
    payload = {**artifact_fields(artifact), "info": info.recorded(), "metrics": metrics}

    def render() -> None:
        title = f"{artifact.id}: {info.dataset}, {info.split}, {'explicit' if info.explicit else 'implicit'}"
        c.out.table(_stat_rows(metrics), title=title)
        c.out.success(f"dataset written to {artifact.path}")

    c.out.result(payload, render=render)


def register(app: typer.Typer) -> None:
    """Add ``ncfctl data`` to the app."""
    app.command("data")(data)
