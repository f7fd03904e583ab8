"""Per-epoch training checkpoints: everything needed to continue exactly where a run stopped.

A checkpoint is written atomically after each completed epoch (temp file + rename), so killing
the process at any moment loses at most the epoch in progress and never leaves a torn file.
It holds only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``.
The ``fingerprint`` (model spec + the settings that shape the optimisation) guards against
resuming a run with different hyper-parameters, which would silently mix two experiments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ncfctl import fileio
from ncfctl.errors import NcfError


@dataclass
class TrainingState:
    """Progress of a run after ``epoch`` completed epochs."""

    epoch: int = 0
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_epoch: int = 0
    best_score: list[float] = field(default_factory=list)
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike, state: TrainingState) -> None:
    with fileio.atomic_path(path) as tmp:
        torch.save(vars(state), tmp)


def load_checkpoint(path: str | os.PathLike) -> TrainingState | None:
    """The saved state, or ``None`` when there is no checkpoint yet."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        return TrainingState(**raw)
    except Exception as exc:  # corrupt file, or one written by something else
        raise NcfError(f"cannot read training checkpoint {path}: {str(exc).splitlines()[0]}") from None


def check_fingerprint(path: str | os.PathLike, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume when the run's defining settings changed (``epochs`` may grow)."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise NcfError(
                f"checkpoint {path} was made with {key}={saved.get(key)!r}, this run has {current.get(key)!r}",
                hint="resume with the same settings, or start a fresh run without --resume",
            )
