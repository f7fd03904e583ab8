"""``prune_model`` and ``finetune_model``: model artifact in, pruned / fine-tuned model artifact out.

Both commit a ``model`` artifact whose manifest says what was gained and lost, measured rather
than claimed: a ``stages`` table (test HR/NDCG or RMSE, parameters, non-zeros, dense and compact
bytes: before pruning, after pruning, after fine-tuning), a per-layer table against the model
that was pruned, the validation recovery curve, and the rate convention.

Rates compose: ``prune.rate`` is the fraction of the weights (magnitude) or units (structured)
still present in the input model that this run removes, so pruning a 50%-pruned model at 0.5
leaves 25% (``1 - (1 - a)(1 - b)``). A gradual run reaches the same point in ``prune.steps``
cubic steps with fine-tuning in between.

Fine-tuning is :func:`ncfctl.training.fit` with the masks locked after every optimizer step, here
or as a SageMaker training job (the training module's job path, masks shipped alongside).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ncfctl.artifacts import ModelInfo, ReuseKey
from ncfctl.config import Config
from ncfctl.data.dataset import InteractionData
from ncfctl.errors import NcfError
from ncfctl.evaluation import evaluate, torch_score_fn
from ncfctl.masks import (
    MASKS_FILE,
    Masks,
    check_locked,
    load_masks,
    mask_lock,
    prunable_weights,
    save_masks,
    sparsity,
)
from ncfctl.model_artifacts import dataset_of
from ncfctl.model_types import NCF_TYPES
from ncfctl.models import MODEL_FILE, NCF, count_parameters, load_model, save_model
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.pruning import plots, report
from ncfctl.pruning.once import prune_once
from ncfctl.pruning.schedule import RATE_CONVENTION, compose, step_rates
from ncfctl.threads import torch_threads
from ncfctl.training.loop import FitSettings, fit
from ncfctl.training.runs import RUNS_DIR, EpochProgress, worker_job
from ncfctl.workspace import Artifact, Workspace

WEIGHTS_PNG = "weights.png"
RECOVERY_PNG = "recovery.png"


@dataclass
class Source:
    """A model artifact loaded for pruning or fine-tuning, with its masks and its dataset."""

    artifact: Artifact
    model: NCF
    masks: Masks | None
    dataset: Artifact
    data: InteractionData


@dataclass
class PruneOutcome:
    pruned: Artifact
    finetuned: Artifact | None


def load_source(workspace: Workspace, ref: str | None, hint: str, where: dict[str, Any] | None) -> Source:
    """``ref`` (or the latest model matching ``where``), its ``masks.pt`` if any, and its dataset."""
    artifact = workspace.resolve(ref, "model", hint, where, settings=("model_ref",))
    model = load_model(artifact.file(MODEL_FILE))
    if model.spec.is_mf:
        raise NcfError(
            f"model {artifact.id} is of type {model.spec.model_type} (matrix factorisation fitted by implicit): "
            f"pruning and fine-tuning support {', '.join(NCF_TYPES)}",
            hint=f"a {model.spec.model_type} model can be evaluated, compiled, served and benchmarked; "
            "name a gmf, mlp or neumf model instead",
        )
    masks = load_masks(artifact.file(MASKS_FILE), model) if artifact.has(MASKS_FILE) else None
    dataset, data = dataset_of(workspace, artifact, model)
    return Source(artifact, model, masks, dataset, data)


def finetune_settings(config: Config, model: NCF) -> FitSettings:
    """``fit`` settings: the training section, with the fine-tuning epochs, lr and data fraction.

    The task is the model's own (a rating model stays one whatever ``train.task`` says now).
    """
    ft = config.finetune
    return FitSettings.from_config(
        config.train, config.seed, epochs=ft.epochs, lr=ft.lr, fraction=ft.fraction, task=model.spec.task
    )


class Tracker:
    """Progress for the non-epoch steps, and the validation curve every step appends to."""

    def __init__(self, progress: Progress, data: InteractionData, k: int, curve: list[dict[str, Any]] | None = None):
        self.progress, self.data, self.k = progress, data, k
        self.metric = "rmse" if data.explicit else "hr"
        self.curve: list[dict[str, Any]] = list(curve or [])

    @contextmanager
    def step(self, description: str) -> Iterator[None]:
        task = self.progress.task(description, total=1)
        yield
        task.finish()

    def test_metrics(self, model: NCF, label: str) -> dict[str, Any]:
        with self.step(f"evaluate {label} (test)"), torch.inference_mode():
            return evaluate(torch_score_fn(model), self.data, "test", k=self.k, full_ranking=True)

    def val_metric(self, model: NCF) -> float:
        with torch.inference_mode():
            return float(evaluate(torch_score_fn(model), self.data, "val", k=self.k, full_ranking=False)[self.metric])

    @property
    def last_epoch(self) -> int:
        return self.curve[-1]["epoch"] if self.curve else 0

    def point(self, value: float, step: int, epoch: int | None = None) -> None:
        self.curve.append({"epoch": self.last_epoch if epoch is None else epoch, "step": step, self.metric: value})


def _finetune_here(
    model: NCF,
    masks: Masks | None,
    data: InteractionData,
    settings: FitSettings,
    tracker: Tracker,
    step: int,
    label: str,
) -> dict[str, Any]:
    """``fit`` in this process with the masks locked; epochs go on the tracker's curve."""
    bars = EpochProgress(tracker.progress, label, settings.epochs, settings.top_k)
    start = tracker.last_epoch

    def on_epoch(record: dict[str, Any]) -> None:
        bars.on_epoch(record)
        tracker.point(record[tracker.metric], step, epoch=start + record["epoch"])

    result = fit(
        model,
        data,
        settings,
        on_epoch=on_epoch,
        on_batch=bars.on_batch,
        after_step=mask_lock(masks) if masks else None,
    )
    bars.close()
    model.cpu()
    return asdict(result)


def _finetune_sagemaker(
    workspace: Workspace, config: Config, source: Source, settings: FitSettings, tracker: Tracker, step: int
) -> tuple[NCF, dict[str, Any], dict[str, Any]]:
    """The same fine-tuning as a SageMaker training job (the training module's job path, masks shipped)."""
    from ncfctl.training.sagemaker_job import run_training_job  # boto3 only when asked for

    folder = workspace.root / RUNS_DIR / f"finetune-{source.artifact.id}"
    folder.mkdir(parents=True, exist_ok=True)
    remote = dataclasses.replace(settings, threads=None)  # the container uses all of its cores
    job = worker_job(source.dataset, source.artifact.file(MODEL_FILE), folder, remote, resume=False)
    if source.masks:
        job = dataclasses.replace(job, masks=str(source.artifact.file(MASKS_FILE)))
    outcome = run_training_job(
        config, job, source.dataset, folder / "sagemaker", prefix="ncfctl-finetune", progress=tracker.progress
    )
    model = load_model(Path(outcome.model_dir) / MODEL_FILE)
    if source.masks:
        check_locked(model, source.masks, outcome.model_data)
    result = outcome.result
    start = tracker.last_epoch
    for record in result["history"]:
        tracker.point(record[tracker.metric], step, epoch=start + record["epoch"])
    return model, result, outcome.manifest_info


def _commit(
    workspace: Workspace,
    config: Config,
    *,
    stage: str,
    source: Source,
    model: NCF,
    masks: Masks | None,
    reference: NCF,
    metrics: dict[str, Any],
    tracker: Tracker,
    info: dict[str, Any],
) -> Artifact:
    """Write ``model.pt`` (+ ``masks.pt``), the figures and the manifest of one model artifact."""
    layers = report.layer_rows(model, reference)
    sizes = report.sizes(model, masks)
    total = report.totals(layers)
    recorded = ModelInfo(
        stage=stage,
        model_type=model.spec.model_type,
        task=model.spec.task,
        dataset=source.dataset.id,
        source_model=source.artifact.id,
        layers=[*layers, total],
        size={**sizes, "note": report.size_note(bool(masks), total["parameters"] < total["source_parameters"])},
        curve=tracker.curve,
        curve_metric="validation RMSE" if tracker.metric == "rmse" else f"validation HR@{tracker.k}",
        **info,
    )
    key = prune_reuse_key(config) if stage == "pruned" else finetune_reuse_key(config)
    with workspace.create("model", parent=source.artifact.id, config=key.config, info=recorded) as writer:
        model_path = writer.path / MODEL_FILE
        save_model(model_path, model)
        if masks:
            save_masks(writer.path / MASKS_FILE, masks)
        title = _title(model, stage, recorded)
        plots.weight_distributions(
            writer.path / WEIGHTS_PNG, prunable_weights(reference), prunable_weights(model), title
        )
        if len(tracker.curve) > 1:
            plots.recovery_curve(
                writer.path / RECOVERY_PNG,
                tracker.curve,
                tracker.metric,
                recorded.val_baselines or {},
                title,
                ylabel=recorded.curve_metric,
                kept_epoch=(recorded.finetune or {}).get("kept_epoch"),
            )
        writer.manifest.metrics.update(metrics)
        writer.manifest.metrics.update(count_parameters(model))
        writer.manifest.metrics.update(file_bytes=model_path.stat().st_size, **sizes)
        writer.manifest.metrics["removed"] = total["removed"]
    return writer.artifact


def _title(model: NCF, stage: str, info: ModelInfo) -> str:
    """E.g. "neumf, structured (mlp-first) 50% oneshot, fine-tuned (lr 0.001, 3 epochs, 100% data)"."""
    parts = [model.spec.model_type]
    pruning = info.pruning
    if pruning:
        method = f"{pruning['method']} ({pruning['allocation']})" if pruning.get("allocation") else pruning["method"]
        parts.append(f"{method} {pruning['rate']:.0%} {pruning['schedule']}")
    finetune = info.finetune
    if finetune:
        parts.append(
            f"fine-tuned (lr {finetune['lr']:g}, {finetune['epochs']} epoch{'s' * (finetune['epochs'] != 1)}, "
            f"{finetune['fraction']:.0%} data)"
        )
    return ", ".join(parts) if len(parts) > 1 else f"{parts[0]} {stage}"


def _model_sections(config: Config) -> dict[str, Any]:
    """What a pruned or fine-tuned model records: both sections, as either may shape it."""
    return {"seed": config.seed, "prune": config.prune.model_dump(), "finetune": config.finetune.model_dump()}


def prune_reuse_key(config: Config) -> ReuseKey:
    """A pruned model is reusable for the same ``prune`` settings (and seed) from the same model."""
    return ReuseKey("model", _model_sections(config), compared=("seed", "prune"), where={"stage": "pruned"})


def finetune_reuse_key(config: Config) -> ReuseKey:
    """A fine-tuned model is reusable for the same ``finetune`` settings (and seed) from the same pruned model."""
    return ReuseKey("model", _model_sections(config), compared=("seed", "finetune"), where={"stage": "finetuned"})


def prune_model(
    config: Config,
    workspace: Workspace,
    model_ref: str | None = None,
    *,
    finetune: bool = False,
    progress: Progress = NO_PROGRESS,
) -> PruneOutcome:
    """Prune ``model_ref`` (default: the latest trained model); with ``finetune``, fine-tune the result too."""
    p = config.prune
    if p.schedule == "gradual" and config.finetune.backend == "sagemaker":
        raise NcfError(
            "prune.schedule 'gradual' fine-tunes between steps in this process; finetune.backend 'sagemaker' "
            "is supported for one-shot pruning and for ncfctl finetune"
        )
    source = load_source(workspace, model_ref, "train one first, or name one with `model_ref`", {"stage": "trained"})
    settings = finetune_settings(config, source.model)
    with torch_threads(config.train.threads):
        tracker = Tracker(progress, source.data, config.train.top_k)
        before = tracker.test_metrics(source.model, "source model")
        val_before = tracker.val_metric(source.model)
        rates = step_rates(p.rate, p.schedule, p.steps)
        model, masks = source.model, source.masks
        between: list[dict[str, Any]] = []
        for step, rate in enumerate(rates, start=1):
            with tracker.step(f"{p.method} prune step {step}/{len(rates)}: {rate:.1%} of the remaining"):
                model, masks = prune_once(model, masks, rate, config.prune)
            tracker.point(tracker.val_metric(model), step)
            if step < len(rates):
                step_settings = dataclasses.replace(settings, seed=settings.seed + step)
                label = f"fine-tune after step {step}"
                result = _finetune_here(model, masks, source.data, step_settings, tracker, step, label)
                between.append({"step": step, "best_epoch": result["best_epoch"], "history": result["history"]})
        after = tracker.test_metrics(model, "pruned model")
        val_after = tracker.val_metric(model)
    pruning = {
        "method": p.method,
        "rate": p.rate,
        "rate_convention": RATE_CONVENTION,
        "scope": p.scope if p.method == "magnitude" else None,
        "include_embeddings": p.include_embeddings,
        "norm": p.norm if p.method == "structured" else None,
        "allocation": p.allocation if p.method == "structured" else None,
        "schedule": p.schedule,
        "step_rates": rates,
        "source_stage": source.artifact.manifest.info.stage,
    }
    if p.method == "magnitude":
        prior = sparsity(source.masks) if source.masks else 0.0
        pruning.update(
            prunable_sparsity_before=prior,
            prunable_sparsity_after=sparsity(masks or {}),
            prunable_sparsity_target=compose(prior, p.rate),
        )
    else:
        pruning.update(spec_before=source.model.spec.model_dump(), spec_after=model.spec.model_dump())
    stages = [
        report.stage_row("before pruning", source.artifact.id, source.model, source.masks, before),
        report.stage_row("after pruning", "(this artifact)", model, masks, after),
    ]
    info = {
        "pruning": pruning,
        "stages": stages,
        "val_baselines": {"before pruning": val_before, "right after pruning": val_after},
        "finetune_between_steps": between,
    }
    pruned = _commit(
        workspace,
        config,
        stage="pruned",
        source=source,
        model=model,
        masks=masks,
        reference=source.model,
        metrics=after,
        tracker=tracker,
        info=info,
    )
    finetuned = finetune_model(config, workspace, pruned.id, progress=progress) if finetune else None
    return PruneOutcome(pruned, finetuned)


def finetune_model(
    config: Config, workspace: Workspace, model_ref: str | None = None, *, progress: Progress = NO_PROGRESS
) -> Artifact:
    """Fine-tune ``model_ref`` (default: the latest pruned model) with its masks locked."""
    source = load_source(workspace, model_ref, "prune one first, or name one with `model_ref`", {"stage": "pruned"})
    settings = finetune_settings(config, source.model)
    source_info = source.artifact.manifest.info
    with torch_threads(config.train.threads):
        tracker = Tracker(progress, source.data, config.train.top_k, source_info.curve)
        if not tracker.curve:
            tracker.point(tracker.val_metric(source.model), step=0)
        step, start = tracker.curve[-1]["step"], tracker.last_epoch
        model = copy.deepcopy(source.model).train()
        extra: dict[str, Any] = {}
        if config.finetune.backend == "sagemaker":
            model, result, extra = _finetune_sagemaker(workspace, config, source, settings, tracker, step)
        else:
            result = _finetune_here(model, source.masks, source.data, settings, tracker, step, "fine-tune")
    after = result["test_metrics"]
    stages = source_info.stages or [
        report.stage_row(
            "before fine-tuning", source.artifact.id, source.model, source.masks, source.artifact.manifest.metrics
        )
    ]
    stages = [
        *[{**row, "model": source.artifact.id} if row["model"] == "(this artifact)" else row for row in stages],
        report.stage_row("after fine-tuning", "(this artifact)", model, source.masks, after),
    ]
    reference = _reference_model(workspace, source)
    info = {
        "pruning": source_info.pruning,
        "stages": stages,
        "val_baselines": source_info.val_baselines or {},
        "finetune": {
            **{key: getattr(config.finetune, key) for key in ("epochs", "lr", "fraction", "backend")},
            "best_epoch": result["best_epoch"],
            "kept_epoch": start + result["best_epoch"],
            "stopped_early": result["stopped_early"],
            "seconds": round(result["seconds"], 3),
            "history": result["history"],
            **extra,
        },
    }
    return _commit(
        workspace,
        config,
        stage="finetuned",
        source=source,
        model=model,
        masks=source.masks,
        reference=reference,
        metrics=after,
        tracker=tracker,
        info=info,
    )


def _reference_model(workspace: Workspace, source: Source) -> NCF:
    """What per-layer "removed" is measured against: the model the source was pruned from, when present."""
    origin = source.artifact.manifest.info.source_model
    if not origin:
        return source.model
    try:
        reference = workspace.get(origin, "model")
    except NcfError:
        return source.model  # the unpruned model was deleted: compare with the source itself
    return load_model(reference.file(MODEL_FILE))  # but a changed one is refused, not skipped
