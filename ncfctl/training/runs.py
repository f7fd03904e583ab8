"""A training run's state and reporting, shared by ``train`` and ``finetune``.

Each run keeps its state under ``<workdir>/.runs/<key>/`` (checkpoint after every epoch, and
``run.json``, the settings the key hashes); :func:`worker_job` describes a run to the process that
trains it (here, ``nproc`` ranks or a SageMaker job), and :class:`EpochProgress` turns the training
loop's epoch and batch callbacks into progress rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ncfctl import fileio
from ncfctl.errors import NcfError
from ncfctl.models import MODEL_FILE, NCF, NCFSpec, save_model
from ncfctl.progress import Progress
from ncfctl.training.loop import FitSettings
from ncfctl.training.worker import WorkerJob
from ncfctl.workspace import Artifact, Workspace

RUNS_DIR = ".runs"
CHECKPOINT = "checkpoint.pt"
RUN_JSON = "run.json"  # the run's identity: what its folder name hashes


def run_identity(dataset: Artifact, spec: NCFSpec, settings: FitSettings, tag: str) -> dict[str, Any]:
    """What makes two runs the same run: dataset, model shape, optimisation settings, pre-training."""
    return {"dataset": dataset.id, "spec": spec.model_dump(), "fit": settings.fingerprint(), "tag": tag}


def run_dir(workspace: Workspace, identity: dict[str, Any]) -> Path:
    """The run's state folder: same identity -> same folder. Its ``run.json`` records the identity."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    folder = workspace.root / RUNS_DIR / f"train-{identity['spec']['model_type']}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / RUN_JSON).is_file():
        fileio.write_json(folder / RUN_JSON, identity)
    return folder


def _flat(identity: dict[str, Any]) -> dict[str, Any]:
    """``{"dataset": .., "model.factors": .., "lr": ..}``: the identity as the settings a user names."""
    flat = {"dataset": identity.get("dataset"), "pretrained": identity.get("tag") or None}
    flat |= {f"model.{key}": value for key, value in (identity.get("spec") or {}).items()}
    flat |= dict(identity.get("fit") or {})
    return flat


def check_resumable(workspace: Workspace, folder: Path, identity: dict[str, Any]) -> None:
    """Resuming needs a checkpoint of this very run; otherwise say what differs from the latest run."""
    if (folder / CHECKPOINT).exists():
        return
    runs = [run for run in (workspace.root / RUNS_DIR).glob("train-*") if (run / CHECKPOINT).is_file()]
    runs = [run for run in runs if (run / RUN_JSON).is_file()]
    if not runs:
        raise NcfError(
            f"`resume`: no training run with a checkpoint in {workspace.root / RUNS_DIR}",
            hint="start a fresh run without `resume`",
            settings=("resume",),
        )
    latest = max(runs, key=lambda run: (run / CHECKPOINT).stat().st_mtime)
    try:
        saved = _flat(json.loads((latest / RUN_JSON).read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError) as exc:
        raise NcfError(f"`resume`: cannot read {latest / RUN_JSON}: {exc}", settings=("resume",)) from None
    current = _flat(identity)
    changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in current.items() if saved.get(key) != value]
    raise NcfError(
        f"`resume`: no run with these settings; the latest run ({latest.name}) differs in: {', '.join(changed)}",
        hint="use that run's settings, or start a fresh run without `resume`",
        settings=("resume",),
    )


def save_initial(folder: Path, model: NCF) -> Path:
    """The initial weights as ``<run>/init/model.pt`` (the name the SageMaker model channel expects)."""
    path = folder / "init" / MODEL_FILE
    save_model(path, model)
    return path


def worker_job(dataset: Artifact, init_model: Path, folder: Path, settings: FitSettings, resume: bool) -> WorkerJob:
    info = dataset.manifest.info
    return WorkerJob(
        dataset_dir=str(dataset.path),
        num_users=int(info.num_users),
        num_items=int(info.num_items),
        explicit=info.explicit,
        init_model=str(init_model),
        output_dir=str(folder / "output"),
        settings=asdict(settings),
        checkpoint=str(folder / CHECKPOINT),
        resume=resume,
        events=str(folder / "events.jsonl"),
    )


class EpochProgress:
    """A run's progress: one row over epochs (with the latest metrics), one over the current epoch's batches."""

    def __init__(self, progress: Progress, label: str, epochs: int, k: int):
        self.progress, self.k = progress, k
        self.epochs_task = progress.task(label, total=epochs)
        self.batch_task = None

    def on_batch(self, step: int, steps: int) -> None:
        if self.batch_task is None:
            self.batch_task = self.progress.task("  batches", total=steps)
        self.batch_task.update(completed=step, total=steps)

    def on_epoch(self, record: dict[str, Any]) -> None:
        if "rmse" in record:
            metrics = f"RMSE {record['rmse']:.4f} MAE {record['mae']:.4f}"
        else:
            metrics = f"HR@{self.k} {record['hr']:.4f} NDCG@{self.k} {record['ndcg']:.4f}"
        speed = f"{record['samples_per_s']:,.0f} samples/s"
        status = f"epoch {record['epoch']}: loss {record['loss']:.4f} {metrics} {speed}"
        self.epochs_task.update(completed=record["epoch"], status=status)
        if self.batch_task is not None:
            self.batch_task.update(completed=0)

    def close(self) -> None:
        """Drop the per-batch row once training is over (the epoch row stays as the summary)."""
        if self.batch_task is not None:
            self.batch_task.remove()
            self.batch_task = None
