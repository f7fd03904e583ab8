"""``train_model``: dataset artifact in, model artifact (stage ``trained``) out.

Finds (or prepares) the dataset, builds the GMF/MLP/NeuMF the config describes (optionally
initialised from pre-trained GMF and MLP artifacts), trains it here (one process or ``nproc``
DDP ranks) or as a SageMaker training job, and commits the artifact: ``model.pt``, the
training-curve PNG and a manifest with the dataset id, config, per-epoch history, test metrics
of the kept epoch next to the popularity baseline's, parameter count and file size.

Each run keeps its state under ``<workdir>/.runs/<key>/`` (:mod:`ncfctl.training.runs`); the key
hashes the dataset, model shape and optimisation settings, so ``resume=True`` finds the
interrupted run of the same command, and may also extend a finished run to more epochs.
``resume=True`` never starts from scratch silently: when no run has these settings it refuses
with one line naming what differs from the most recent run (or saying there is none).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ncfctl.artifacts import ModelInfo, ReuseKey
from ncfctl.config import Config
from ncfctl.data.dataset import InteractionData, load_dataset
from ncfctl.errors import NcfError
from ncfctl.evaluation import evaluate, popularity_score_fn, torch_score_fn
from ncfctl.model_artifacts import dataset_of
from ncfctl.model_types import MF_TYPES
from ncfctl.models import MODEL_FILE, NCF, NCFSpec, count_parameters, load_model, save_model
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.training.loop import FitSettings, fit
from ncfctl.training.plots import training_curve
from ncfctl.training.pretrain import neumf_from_pretrained
from ncfctl.training.runs import (
    CHECKPOINT,
    EpochProgress,
    check_resumable,
    run_dir,
    run_identity,
    save_initial,
    worker_job,
)
from ncfctl.workspace import Artifact, Workspace

CURVE_FILE = "training_curve.png"
LATEST_LINK = "ncf_model_latest.pt"  # the seed project's name for "the newest model file"


def fit_settings(config: Config) -> FitSettings:
    return FitSettings.from_config(config.train, seed=config.seed)


def model_spec(config: Config, data: InteractionData) -> NCFSpec:
    """The model the config describes, with embedding tables sized from the dataset's full counts."""
    return NCFSpec.from_layers(
        model_type=config.model.type,
        num_users=data.num_users,
        num_items=data.num_items,
        factors=config.model.factors,
        layers=list(config.model.layers),
        dropout=config.model.dropout,
        task=config.train.task,
    )


def resolve_dataset(
    config: Config, workspace: Workspace, dataset_ref: str | None, progress: Progress = NO_PROGRESS
) -> Artifact:
    """``dataset_ref``, else the newest dataset of the task's kind, else a freshly prepared default one."""
    if dataset_ref:
        return workspace.get(dataset_ref, "dataset")
    explicit = config.train.task == "explicit"
    found = workspace.latest("dataset", where={"explicit": explicit})
    if found is not None:
        return found
    from ncfctl.data.prepare import prepare_dataset  # the data layer, only when nothing is prepared yet

    data_config = config.data.model_copy(update={"explicit": explicit})
    return prepare_dataset(config.model_copy(update={"data": data_config}), workspace, progress=progress)


def initial_model(
    config: Config, workspace: Workspace, spec: NCFSpec, pretrain_gmf: str | None, pretrain_mlp: str | None
) -> NCF:
    """A freshly initialised model (seeded), or NeuMF from pre-trained GMF + MLP artifacts."""
    torch.manual_seed(config.seed)
    if not (pretrain_gmf or pretrain_mlp):
        return NCF(spec)
    if not (pretrain_gmf and pretrain_mlp):
        raise NcfError(
            "NeuMF pre-training needs both `pretrain_gmf` and `pretrain_mlp`", settings=("pretrain_gmf", "pretrain_mlp")
        )
    gmf = load_model(workspace.get(pretrain_gmf, "model").file(MODEL_FILE))
    mlp = load_model(workspace.get(pretrain_mlp, "model").file(MODEL_FILE))
    return neumf_from_pretrained(spec, gmf, mlp)


def train_model(
    config: Config,
    workspace: Workspace,
    *,
    dataset_ref: str | None = None,
    pretrain_gmf: str | None = None,
    pretrain_mlp: str | None = None,
    resume: bool = False,
    progress: Progress = NO_PROGRESS,
) -> Artifact:
    """Train the configured model and commit it as a ``model`` artifact (stage ``trained``)."""
    if config.model.type in MF_TYPES:
        return _train_mf_baseline(config, workspace, dataset_ref, pretrain_gmf or pretrain_mlp, resume, progress)
    dataset = resolve_dataset(config, workspace, dataset_ref, progress)
    data = load_dataset(dataset)
    spec = model_spec(config, data)
    model = initial_model(config, workspace, spec, pretrain_gmf, pretrain_mlp)
    settings = fit_settings(config)
    tag = f"{pretrain_gmf}+{pretrain_mlp}" if pretrain_gmf else ""
    identity = run_identity(dataset, spec, settings, tag)
    folder = run_dir(workspace, identity)
    if resume and config.train.backend == "local":
        check_resumable(workspace, folder, identity)
    bars = EpochProgress(progress, f"train {spec.model_type}", settings.epochs, settings.top_k)
    extra: dict[str, Any] = {}
    if config.train.backend == "sagemaker":
        from ncfctl.training.sagemaker_job import train_on_sagemaker  # boto3 only when asked for

        job = worker_job(dataset, save_initial(folder, model), folder, settings, resume=False)
        outcome = train_on_sagemaker(config, job, dataset, progress=progress)
        model = load_model(Path(outcome.model_dir) / MODEL_FILE)
        result = outcome.result
        extra = outcome.manifest_info
    elif config.train.nproc > 1:
        from ncfctl.training.launch import launch_local

        job = worker_job(dataset, save_initial(folder, model), folder, settings, resume)
        result = launch_local(config.train.nproc, job, on_epoch=bars.on_epoch)
        model = load_model(Path(job.output_dir) / MODEL_FILE)
    else:
        fitted = fit(
            model,
            data,
            settings,
            on_epoch=bars.on_epoch,
            on_batch=bars.on_batch,
            checkpoint=folder / CHECKPOINT,
            resume=resume,
        )
        result = asdict(fitted)
    bars.close()
    return register_model(
        config,
        workspace,
        model,
        data,
        dataset,
        result,
        info={"pretrain": {"gmf": pretrain_gmf, "mlp": pretrain_mlp} if pretrain_gmf else None, **extra},
    )


def _train_mf_baseline(
    config: Config, workspace: Workspace, dataset_ref, pretrained, resume: bool, progress: Progress
) -> Artifact:
    """ALS / BPR through the implicit library (ncfctl.training.baselines), which has no pre-training or resume."""
    model_type = config.model.type
    for given, what, settings in (
        (pretrained, "NeuMF pre-training (`pretrain_gmf`/`pretrain_mlp`)", ("pretrain_gmf", "pretrain_mlp")),
        (resume, "`resume`", ("resume",)),
    ):
        if given:
            raise NcfError(
                f"model type {model_type} does not support {what}: it is fitted in one call by implicit",
                settings=settings,
            )
    from ncfctl.training.baselines import train_baseline  # the optional implicit extra

    return train_baseline(config, workspace, dataset_ref=dataset_ref, progress=progress)


# What ALS / BPR read of ``train`` (the rest is NeuMF's): so a fit by ``ncfctl train --model als``
# and the pipeline's baseline step (its own epochs) are the same fit, and one is reused for the other.
MF_TRAIN_FIELDS = ("task", "threads", "top_k")


def train_reuse_key(config: Config) -> ReuseKey:
    """A trained model is made from the seed, ``model`` and ``train``; ALS/BPR from the seed, their type,
    their own ``baselines`` section and the few ``train`` fields they read."""
    model_type = config.model.type
    if model_type in MF_TYPES:
        sections = {
            "seed": config.seed,
            "model": {"type": model_type},
            "train": config.train.model_dump(include=set(MF_TRAIN_FIELDS)),
            "baselines": {model_type: getattr(config.baselines, model_type).model_dump()},
        }
    else:
        sections = {"seed": config.seed, "model": config.model.model_dump(), "train": config.train.model_dump()}
    return ReuseKey("model", sections, where={"stage": "trained"})


def register_model(
    config: Config,
    workspace: Workspace,
    model: NCF,
    data: InteractionData,
    dataset: Artifact,
    result: dict[str, Any],
    info: dict[str, Any],
) -> Artifact:
    """Commit a trained model with its metrics, history and curve; point ``ncf_model_latest.pt`` at it."""
    k = config.train.top_k
    baseline = baseline_metrics(data, k)
    spec = model.spec
    run_info = ModelInfo(
        stage="trained",
        model_type=spec.model_type,
        task=spec.task,
        dataset=dataset.id,
        best_epoch=result["best_epoch"],
        stopped_early=result["stopped_early"],
        val_metrics=result["val_metrics"],
        baseline=baseline,
        history=result["history"],
        train_seconds=round(result["seconds"], 3),
        test_seconds=round(result.get("test_seconds", 0.0), 3),
        threads=config.train.threads,
        nproc=config.train.nproc,
        device=config.train.device,
        backend=config.train.backend,
        **{key: value for key, value in info.items() if value is not None},
    )
    key = train_reuse_key(config)
    with workspace.create("model", parent=dataset.id, config=key.config, info=run_info) as writer:
        model_path = writer.path / MODEL_FILE
        save_model(model_path, model)
        training_curve(
            writer.path / CURVE_FILE,
            result["history"],
            result["best_epoch"],
            k,
            title=f"{spec.model_type} on {dataset.manifest.info.dataset or dataset.id}",
            loss_label=result.get("loss_label"),
        )
        writer.manifest.metrics.update(result["test_metrics"])
        writer.manifest.metrics.update(count_parameters(model))
        writer.manifest.metrics["file_bytes"] = model_path.stat().st_size
    artifact = writer.artifact
    link_latest_model(workspace, artifact)
    return artifact


def baseline_metrics(data: InteractionData, k: int) -> dict[str, Any]:
    """The non-personalised baseline on the test split, named: popularity, or item mean for ratings."""
    name = "item mean" if data.explicit else "popularity"
    return {"name": name, **evaluate(popularity_score_fn(data), data, "test", k=k)}


def link_latest_model(workspace: Workspace, artifact: Artifact) -> Path:
    """``models/ncf_model_latest.pt`` -> the artifact's ``model.pt`` (relative symlink, swapped atomically)."""
    link = workspace.kind_dir("model") / LATEST_LINK
    target = Path(artifact.id) / MODEL_FILE
    tmp = link.with_name(f".{LATEST_LINK}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link


def evaluate_model(
    config: Config,
    workspace: Workspace,
    model_ref: str,
    dataset_ref: str | None = None,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """Metrics of a saved model on its dataset's test split, beside the popularity baseline's."""
    artifact = workspace.get(model_ref, "model")
    model = load_model(artifact.file(MODEL_FILE))
    dataset, data = dataset_of(workspace, artifact, model, dataset_ref)
    task = progress.task(f"evaluate {artifact.id}")
    torch.set_num_threads(config.train.threads)
    k = config.train.top_k
    metrics = evaluate(torch_score_fn(model), data, "test", k=k)
    baseline = baseline_metrics(data, k)
    task.finish()
    return {"model": artifact.id, "dataset": dataset.id, "metrics": metrics, "baseline": baseline}
