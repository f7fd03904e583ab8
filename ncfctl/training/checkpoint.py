"""Per-epoch training checkpoints: everything needed to continue exactly where a run stopped.

A checkpoint is written atomically after each completed epoch (temp file + rename), so killing
the process at any moment loses at most the epoch in progress and never leaves a torn file.
It holds only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``.
The ``fingerprint`` (model spec + the settings that shape the optimisation) guards against
resuming a run with different hyper-parameters, which would silently mix two experiments.

The file also carries the sha256 of its content (every tensor's bytes, dtype and shape, and every
plain value), recomputed on load: torch reads a flipped byte in a tensor without complaint, and a
resumed run must not continue from weights that are not the ones saved. The digest lives inside
the one file, so the write stays a single atomic rename.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ncfctl import fileio
from ncfctl.errors import NcfError

FORMAT = 2  # 2: {"format", "sha256", "state"}; 1 (no checksum) is refused


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


def content_digest(value: Any) -> str:
    """sha256 of a nest of dicts, lists, tensors and JSON scalars, independent of how it was pickled."""
    digest = hashlib.sha256()

    def feed(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            flat = node.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{flat.dtype}{tuple(node.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        elif isinstance(node, dict):
            digest.update(f"D{len(node)}".encode())
            for key in sorted(node, key=repr):
                feed(key)
                feed(node[key])
        elif isinstance(node, list | tuple):
            digest.update(f"L{len(node)}".encode())
            for item in node:
                feed(item)
        else:  # int, float, str, bool, None
            digest.update(f"{type(node).__name__}:{node!r}".encode())

    feed(value)
    return digest.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: TrainingState) -> None:
    content = vars(state)
    with fileio.atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "sha256": content_digest(content), "state": content}, tmp)


def load_checkpoint(path: str | os.PathLike) -> TrainingState | None:
    """The saved state, or ``None`` when there is no checkpoint yet; refused if its content changed."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or one written by something else
        raise NcfError(f"cannot read training checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("state"), dict):
        raise NcfError(
            f"training checkpoint {path} carries no checksum (an older ncfctl, or not a checkpoint)",
            hint="start a fresh run without `resume`",
            settings=("resume",),
        )
    if content_digest(raw["state"]) != raw.get("sha256"):
        raise NcfError(
            f"training checkpoint {path} does not match its sha256: its content changed after it was written",
            hint="start a fresh run without `resume`",
            settings=("resume",),
        )
    try:
        return TrainingState(**raw["state"])
    except TypeError as exc:
        raise NcfError(f"training checkpoint {path} is not an ncfctl training state: {exc}") from None


def check_fingerprint(path: str | os.PathLike, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Refuse to resume when the run's defining settings changed (``epochs`` may grow)."""
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            raise NcfError(
                f"checkpoint {path} was made with {key}={saved.get(key)!r}, this run has {current.get(key)!r}",
                hint="continue with the same settings, or start a fresh run without `resume`",
                settings=("resume",),
            )
