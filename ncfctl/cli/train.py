"""`ncfctl train`: train GMF / MLP / NeuMF (or fit an ALS / BPR baseline) on the latest dataset, or evaluate a model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ncfctl.cli.context import command_context
from ncfctl.cli.options import (
    BatchSizeOpt,
    DatasetRefOpt,
    Device,
    EpochsOpt,
    JsonOpt,
    LrOpt,
    ModelType,
    SeedOpt,
    Task,
    ThreadsOpt,
    TrainBackend,
)
from ncfctl.cli.output import artifact_fields
from ncfctl.errors import NcfError
from ncfctl.model_types import MF_TYPES

# what an ALS / BPR fit (ncfctl.training.baselines) takes from the NCF training flags
BASELINE_FLAGS = {"als": {"--factors": "factors", "--epochs": "iterations"}}
BASELINE_FLAGS["bpr"] = {**BASELINE_FLAGS["als"], "--lr": "learning_rate"}


def parse_layers(text: str | None) -> list[int] | None:
    """``"128,64,32"`` -> ``[128, 64, 32]``; one line naming the flag when it is not that."""
    if text is None:
        return None
    try:
        layers = [int(part) for part in text.split(",")]
    except ValueError:
        raise NcfError(f"--layers {text!r}: expected comma-separated integers such as 128,64,32") from None
    if any(width <= 0 for width in layers):
        raise NcfError(f"--layers {text!r}: widths must be positive")
    return layers


def baseline_overrides(model_type: str, flags: dict[str, Any]) -> dict[str, Any]:
    """Config overrides of an ALS / BPR run from the training flags given (``None`` = not given).

    ``--factors``, ``--epochs`` (iterations) and, for BPR, ``--lr`` go to ``baselines.<type>``; a
    flag such a model cannot honour is refused in one line rather than silently ignored.
    """
    mapped = BASELINE_FLAGS[model_type]
    for flag, value in flags.items():
        if value not in (None, False) and flag not in mapped:
            takes = ", ".join([*mapped, "--top-k", "--threads", "--seed", "--dataset-id"])
            raise NcfError(
                f"model type {model_type} is fitted by the implicit library and does not take {flag}; it takes {takes}"
            )
    return {f"baselines.{model_type}.{key}": flags.get(flag) for flag, key in mapped.items()}


def _metric_rows(metrics: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    k = metrics.get("k", "")
    names = {"hr": f"HR@{k} (sampled)", "ndcg": f"NDCG@{k} (sampled)", "full_hr": f"HR@{k} (full ranking)"}
    names |= {"full_ndcg": f"NDCG@{k} (full ranking)", "full_hr_se": f"HR@{k} (full ranking) std. error"}
    names |= {"full_users": "users ranked (full ranking)", "rmse": "RMSE", "mae": "MAE"}
    return [
        {"metric": label, "model": metrics[key], baseline.get("name", "baseline"): baseline.get(key)}
        for key, label in names.items()
        if key in metrics
    ]


def train(
    ctx: typer.Context,
    model_type: Annotated[
        ModelType | None, typer.Option("--model", help="Model family; als / bpr are fitted by the implicit library.")
    ] = None,
    factors: Annotated[int | None, typer.Option("--factors", min=1, help="GMF embedding size.")] = None,
    layers: Annotated[
        str | None, typer.Option("--layers", help="MLP widths, e.g. 128,64,32 (embeddings are half the first).")
    ] = None,
    dropout: Annotated[float | None, typer.Option("--dropout", min=0.0, max=0.99, help="MLP dropout.")] = None,
    pretrain_gmf: Annotated[
        str | None, typer.Option("--pretrain-gmf", help="NeuMF init: a trained GMF model artifact id.")
    ] = None,
    pretrain_mlp: Annotated[
        str | None, typer.Option("--pretrain-mlp", help="NeuMF init: a trained MLP model artifact id.")
    ] = None,
    task: Annotated[Task | None, typer.Option("--task", help="implicit (BCE) or explicit (MSE on ratings).")] = None,
    epochs: EpochsOpt = None,
    negatives: Annotated[int | None, typer.Option("--negatives", min=1, help="Negatives per positive.")] = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    weight_decay: Annotated[float | None, typer.Option("--weight-decay", min=0.0, help="Adam weight decay.")] = None,
    patience: Annotated[
        int | None, typer.Option("--patience", min=0, help="Epochs without validation gain before stopping (0: off).")
    ] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="K of HR@K / NDCG@K.")] = None,
    threads: ThreadsOpt = None,
    nproc: Annotated[int | None, typer.Option("--nproc", min=1, help="DDP processes (torch.distributed).")] = None,
    device: Annotated[Device | None, typer.Option("--device", help="auto picks CUDA when present (AMP on).")] = None,
    backend: Annotated[TrainBackend | None, typer.Option("--backend", help="Train here or as a SageMaker job.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run of this command.")] = False,
    eval_only: Annotated[
        str | None, typer.Option("--eval-only", help="Only evaluate this model artifact (id or folder).")
    ] = None,
    dataset_id: DatasetRefOpt = None,
    seed: SeedOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Train NCF (GMF / MLP / NeuMF) or fit ALS / BPR; report HR@K and NDCG@K (sampled, full ranking) vs popularity."""
    overrides = {
        "model.type": model_type,
        "model.factors": factors,
        "model.layers": parse_layers(layers),
        "model.dropout": dropout,
        "train.task": task,
        "train.epochs": epochs,
        "train.negatives": negatives,
        "train.batch_size": batch_size,
        "train.lr": lr,
        "train.weight_decay": weight_decay,
        "train.patience": patience,
        "train.top_k": top_k,
        "train.threads": threads,
        "train.nproc": nproc,
        "train.device": device,
        "train.backend": backend,
        "seed": seed,
    }
    c = command_context(ctx, overrides=overrides, json_output=json_output)
    if c.config.model.type in MF_TYPES and not eval_only:
        flags = {
            "--factors": factors,
            "--epochs": epochs,
            "--lr": lr,
            "--layers": layers,
            "--dropout": dropout,
            "--negatives": negatives,
            "--batch-size": batch_size,
            "--weight-decay": weight_decay,
            "--patience": patience,
            "--nproc": nproc,
            "--device": device,
            "--backend": backend,
            "--pretrain-gmf": pretrain_gmf,
            "--pretrain-mlp": pretrain_mlp,
            "--resume": resume,
        }
        mf_overrides = baseline_overrides(c.config.model.type, flags)
        c = command_context(ctx, overrides={**overrides, **mf_overrides}, json_output=json_output)
    from ncfctl.training.service import evaluate_model, train_model  # torch & co., once the flags are valid

    if eval_only:
        with c.out.progress(transient=True) as progress:
            report = evaluate_model(c.config, c.workspace, eval_only, dataset_id, progress=progress)
        c.out.result(
            report,
            render=lambda: c.out.table(
                _metric_rows(report["metrics"], report["baseline"]), title=f"{report['model']} on {report['dataset']}"
            ),
        )
        return
    with c.out.progress() as progress:
        artifact = train_model(
            c.config,
            c.workspace,
            dataset_ref=dataset_id,
            pretrain_gmf=pretrain_gmf,
            pretrain_mlp=pretrain_mlp,
            resume=resume,
            progress=progress,
        )
    manifest = artifact.manifest
    info = manifest.info
    payload = {
        **artifact_fields(artifact),
        "dataset": info.dataset,
        "model_type": info.model_type,
        "best_epoch": info.best_epoch,
        "stopped_early": info.stopped_early,
        "metrics": manifest.metrics,
        "val_metrics": info.val_metrics,
        "baseline": info.baseline,
        "history": info.history,
        "train_seconds": info.train_seconds,
        "test_seconds": info.test_seconds,
        **({"selection": info.selection} if info.selection is not None else {}),
    }

    def render() -> None:
        c.out.table(
            [{key: record[key] for key in record if key != "kept"} for record in info.history],
            title="epochs (validation metrics)",
        )
        c.out.table(_metric_rows(manifest.metrics, info.baseline), title=f"test, kept epoch {info.best_epoch}")
        if info.selection is not None:  # ALS / BPR: the epochs above are iterations of the kept regularization
            chosen = info.selection
            grid = ", ".join(f"{row['regularization']:g}" for row in chosen["grid"])
            c.out.info(
                f"{info.model_type}: regularization {chosen['regularization']:g} chosen on validation from {grid}, "
                f"iteration {chosen['iteration']}; {chosen['library']} fitted it in {chosen['fit_seconds']:.2f} s"
            )
        c.out.success(f"model {artifact.id} ({manifest.metrics['parameters']:,} parameters) -> {artifact.path}")

    c.out.result(payload, render=render)


def register(app: typer.Typer) -> None:
    """Add ``ncfctl train`` to the app."""
    app.command("train")(train)
