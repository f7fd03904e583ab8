"""One training process: load the data and the initial model from files, ``fit``, save the result.

The same function runs in every setting that needs a process of its own: each rank of
``ncfctl train --nproc N`` (started by torch's elastic launcher, the machinery behind
``torchrun``) and the SageMaker training container (``ncfctl.training.entry``). Inputs and
outputs are plain files, so nothing but paths and numbers crosses process boundaries.

Kept free of workspace/CLI/boto3 imports: the SageMaker container installs only what this path
needs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch.distributed.elastic.multiprocessing.errors import record

from ncfctl import fileio
from ncfctl.data.dataset import InteractionData
from ncfctl.errors import NcfError
from ncfctl.models import load_model, save_model
from ncfctl.training import distributed
from ncfctl.training.loop import FitSettings, fit, resolve_device

METRICS_FILE = "metrics.json"  # the fit result, written beside model.pt


@dataclass
class WorkerJob:
    dataset_dir: str
    num_users: int
    num_items: int
    explicit: bool
    init_model: str  # model.pt holding the initial weights (and the spec)
    output_dir: str  # rank 0 writes model.pt + metrics.json here
    settings: dict[str, Any]
    masks: str | None = None  # masks.pt of a pruned model: pruned weights stay zero
    checkpoint: str | None = None
    resume: bool = False
    events: str | None = None  # rank 0 appends one JSON line per epoch (progress for the launcher)
    extra: dict[str, Any] = field(default_factory=dict)  # stored in model.pt beside the weights


def _after_step(job: WorkerJob, model) -> Callable | None:
    if not job.masks:
        return None
    from ncfctl.masks import load_masks, mask_lock  # only pruned models need it

    return mask_lock(load_masks(job.masks, model))


@record  # under the elastic launcher an unexpected error reaches the parent with its message
def run_worker(job: WorkerJob, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train as this process's rank; returns the fit result (test metrics only on rank 0).

    Expected failures come back as ``{"error": message}`` rather than an exception, so the
    launcher can show the one-line message instead of a child-process traceback dump.
    """
    try:
        settings = FitSettings(**job.settings)
        created = distributed.init_from_env(resolve_device(settings.device))
        try:
            return _train(job, settings, on_epoch)
        finally:
            if created:
                import torch.distributed as dist

                dist.destroy_process_group()
    except NcfError as exc:
        return {"error": str(exc)}


def _train(job: WorkerJob, settings: FitSettings, on_epoch) -> dict[str, Any]:
    rank, _ = distributed.rank_and_world()
    data = InteractionData.load(Path(job.dataset_dir), job.num_users, job.num_items, job.explicit)
    model = load_model(job.init_model).train()
    callbacks = [cb for cb in (on_epoch, _event_writer(job.events) if rank == 0 else None) if cb is not None]
    result = fit(
        model,
        data,
        settings,
        on_epoch=(lambda record: [cb(record) for cb in callbacks]) if callbacks else None,
        after_step=_after_step(job, model),
        checkpoint=job.checkpoint,
        resume=job.resume,
    )
    outcome = asdict(result)
    if rank == 0:
        out = Path(job.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_model(out / "model.pt", model, extra=job.extra)
        fileio.write_json(out / METRICS_FILE, outcome)
    return outcome


def _event_writer(path: str | None) -> Callable[[dict[str, Any]], None] | None:
    if not path:
        return None

    def write(record: dict[str, Any]) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    return write
