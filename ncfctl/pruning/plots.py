"""The pruning artifact's figures: weight distributions before/after and the recovery curve.

Uses ``matplotlib.figure.Figure`` directly (no pyplot): no global backend or figure state,
safe in a server or a test process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ncfctl import fileio


def _flat(weights: dict[str, torch.Tensor]) -> np.ndarray:
    return torch.cat([w.detach().float().flatten().cpu() for w in weights.values()]).numpy()


def weight_distributions(
    path: str | os.PathLike, before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], title: str
) -> None:
    """Two histograms of weight values on shared bins: the source model and the pruned one.

    Exact zeros of the pruned model are left out of its histogram (they would be one bar taller
    than the rest) and stated in the panel title instead.
    """
    old, new = _flat(before), _flat(after)
    zeros = int((new == 0).sum())
    limit = float(np.quantile(np.abs(old), 0.999)) or 1.0
    bins = np.linspace(-limit, limit, 121)
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, sharex=True, sharey=True)
    left.hist(np.clip(old, -limit, limit), bins=bins, color="tab:blue")
    left.set_title(f"before: {len(old):,} weights")
    right.hist(np.clip(new[new != 0], -limit, limit), bins=bins, color="tab:orange")
    right.set_title(f"after: {len(new):,} weights, {zeros:,} exactly zero (not drawn)")
    for ax in (left, right):
        ax.set_xlabel(f"weight value (clipped at +-{limit:.3g}, the 99.9th percentile of |w| before)")
        ax.set_yscale("log")
    left.set_ylabel("count (log)")
    fig.suptitle(title)
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def recovery_curve(
    path: str | os.PathLike,
    points: Sequence[dict[str, Any]],
    metric: str,
    baselines: dict[str, float],
    title: str,
    ylabel: str,
    kept_epoch: int | None = None,
) -> None:
    """``metric`` per fine-tuning epoch (``points``: ``{"epoch", metric, "step"}``) with reference lines.

    ``baselines`` maps a label (e.g. "before pruning") to a value drawn as a dashed horizontal
    line. A change of ``step`` marks a pruning step (gradual schedule) with a red vertical line;
    ``kept_epoch`` (the epoch whose weights the artifact holds) gets a star.
    """
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    epochs = [p["epoch"] for p in points]
    values = [p[metric] for p in points]
    ax.plot(epochs, values, marker="o", label="pruned model")
    for (label, value), style in zip(baselines.items(), ("--", ":", "-."), strict=False):
        ax.axhline(value, linestyle=style, color="gray", label=f"{label} ({value:.4f})")
    for i in range(1, len(points)):
        if points[i].get("step") != points[i - 1].get("step"):
            ax.axvline(points[i]["epoch"], color="tab:red", alpha=0.3)
    if kept_epoch is not None:
        kept = [p[metric] for p in points if p["epoch"] == kept_epoch]
        if kept:
            ax.plot([kept_epoch], [kept[-1]], marker="*", markersize=14, color="tab:green", linestyle="", label="kept")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("fine-tuning epoch (0 = right after pruning; red: a pruning step)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best")
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
