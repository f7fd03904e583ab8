"""`ncfctl prune` and `ncfctl finetune`: smaller models, with what they cost and buy measured."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ncfctl.cli.context import CommandContext, command_context
from ncfctl.cli.options import (
    FinetuneBackend,
    JsonOpt,
    PruneAllocation,
    PruneMethod,
    PruneNorm,
    PruneSchedule,
    PruneScope,
    SeedOpt,
    ThreadsOpt,
)
from ncfctl.cli.output import artifact_fields
from ncfctl.pruning.schedule import RATE_CONVENTION
from ncfctl.workspace import Artifact

STAGE_COLUMNS = ("stage", "model", "hr", "ndcg", "full_hr", "full_ndcg", "rmse", "mae")
SIZE_COLUMNS = ("stage", "parameters", "nonzeros", "dense_bytes", "compact_bytes")
LAYER_COLUMNS = ("layer", "source_shape", "shape", "parameters", "nonzeros", "sparsity", "removed")

FtEpochsOpt = Annotated[
    int | None, typer.Option("--epochs", min=1, help="Fine-tuning epochs (config finetune.epochs).")
]
FtLrOpt = Annotated[float | None, typer.Option("--lr", help="Fine-tuning learning rate (config finetune.lr).")]
FractionOpt = Annotated[
    float | None, typer.Option("--fraction", help="Share of the training rows to fine-tune on, in (0, 1].")
]
BackendOpt = Annotated[
    FinetuneBackend | None,
    typer.Option("--backend", help="Fine-tune here (local) or as a SageMaker training job (sagemaker)."),
]


THIS_ARTIFACT = "(this artifact)"  # how the pruning service names, in ``info.stages``, the model it is saving


def _stages(artifact: Artifact) -> list[dict[str, Any]]:
    """``info.stages`` with the artifact's own row naming it by id."""
    return [
        {**row, "model": artifact.id} if row.get("model") == THIS_ARTIFACT else row
        for row in artifact.manifest.info.stages
    ]


def _summary(artifact: Artifact) -> dict[str, Any]:
    keep = {"stage", "source_model", "pruning", "size", "layers", "finetune"}
    return {
        **artifact_fields(artifact),
        "parent": artifact.manifest.parent,
        "metrics": artifact.manifest.metrics,
        **artifact.manifest.info.model_dump(mode="json", include=keep, exclude_none=True),
        "stages": _stages(artifact),
    }


def _render(cc: CommandContext, artifact: Artifact) -> None:
    """The per-layer table, the before/after table and the size note of one artifact."""
    info = artifact.manifest.info
    out = cc.out
    out.table(info.layers, title=f"{artifact.id}: per layer (vs the model it was pruned from)", columns=LAYER_COLUMNS)
    stages = _stages(artifact)
    k = artifact.manifest.metrics.get("k")
    quality = [col for col in STAGE_COLUMNS if any(col in row for row in stages)]
    out.table(stages, title=f"quality (test split{f', @{k}' if k else ''}; full_* = full ranking)", columns=quality)
    out.table(stages, title="size (bytes of torch.save)", columns=SIZE_COLUMNS)
    out.info(f"[bold]note:[/bold] {info.size['note']}")
    figures = ", ".join(name for name in ("weights.png", "recovery.png") if (artifact.path / name).exists())
    out.success(f"{info.stage} model {artifact.id} -> {artifact.path} ({figures})")


def _finetune_overrides(epochs, lr, fraction, backend, threads, seed) -> dict[str, Any]:
    """Flags shared by `prune --finetune` and `finetune`, as dotted config overrides."""
    return {
        "finetune.epochs": epochs,
        "finetune.lr": lr,
        "finetune.fraction": fraction,
        "finetune.backend": backend,
        "train.threads": threads,
        "seed": seed,
    }


def prune(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model id or folder to prune (default: the latest trained model)."),
    ] = None,
    method: Annotated[
        PruneMethod | None,
        typer.Option("--method", help="magnitude (unstructured, masks) or structured (smaller dense model)."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", help=f"Fraction to remove, in (0, 1) (config prune.rate). {RATE_CONVENTION}."),
    ] = None,
    scope: Annotated[
        PruneScope | None,
        typer.Option("--scope", help="magnitude: global (one threshold) or layer (same rate per layer)."),
    ] = None,
    include_embeddings: Annotated[
        bool | None,
        typer.Option(
            "--include-embeddings/--no-include-embeddings",
            help="Prune the embedding tables too (most of NCF's parameters).",
        ),
    ] = None,
    norm: Annotated[PruneNorm | None, typer.Option("--norm", help="structured: rank units by l1 or l2 norm.")] = None,
    allocation: Annotated[
        PruneAllocation | None,
        typer.Option(
            "--allocation",
            help="structured: mlp-first (keep GMF factors, cut MLP embeddings harder) or uniform (each group by rate).",
        ),
    ] = None,
    schedule: Annotated[
        PruneSchedule | None,
        typer.Option("--schedule", help="oneshot, or gradual (cubic schedule, fine-tuning between steps)."),
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="gradual: number of pruning steps.")] = None,
    finetune: Annotated[bool, typer.Option("--finetune", help="Fine-tune the pruned model (masks locked).")] = False,
    epochs: FtEpochsOpt = None,
    lr: FtLrOpt = None,
    fraction: FractionOpt = None,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Prune a model (default: the latest trained one); saves a model artifact of stage 'pruned'.

    Reports parameters, non-zeros and sparsity per layer, test HR/NDCG (or RMSE) before and
    after, and sizes as a dense state_dict and in compact form (an unstructured-pruned dense file
    is not smaller). With --finetune also saves the fine-tuned model (stage 'finetuned').
    """
    cc = command_context(
        ctx,
        overrides={
            "prune.method": method,
            "prune.rate": rate,
            "prune.scope": scope,
            "prune.include_embeddings": include_embeddings,
            "prune.norm": norm,
            "prune.allocation": allocation,
            "prune.schedule": schedule,
            "prune.steps": steps,
            **_finetune_overrides(epochs, lr, fraction, backend, threads, seed),
        },
        json_output=json_output,
    )
    from ncfctl.pruning.service import prune_model  # torch & co. only when a command runs, not for --help

    with cc.out.progress() as progress:
        outcome = prune_model(cc.config, cc.workspace, model, finetune=finetune, progress=progress)
    final = outcome.finetuned or outcome.pruned
    payload = {**_summary(outcome.pruned), "finetuned": _summary(outcome.finetuned) if outcome.finetuned else None}
    cc.out.result(payload, render=lambda: _render(cc, final))


def finetune(
    ctx: typer.Context,
    model_id: Annotated[
        str | None, typer.Argument(help="Model artifact id or folder (default: the latest pruned model).")
    ] = None,
    epochs: FtEpochsOpt = None,
    lr: FtLrOpt = None,
    fraction: FractionOpt = None,
    backend: BackendOpt = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Fine-tune a pruned model with its pruned weights held at exactly zero; saves stage 'finetuned'."""
    cc = command_context(
        ctx,
        overrides=_finetune_overrides(epochs, lr, fraction, backend, threads, seed),
        json_output=json_output,
    )
    from ncfctl.pruning.service import finetune_model

    with cc.out.progress() as progress:
        artifact = finetune_model(cc.config, cc.workspace, model_id, progress=progress)
    cc.out.result(_summary(artifact), render=lambda: _render(cc, artifact))


def register(app: typer.Typer) -> None:
    """Add ``prune`` and ``finetune`` to the app."""
    app.command("prune")(prune)
    app.command("finetune")(finetune)
