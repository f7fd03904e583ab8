"""The training-curve figure of a model artifact: loss and the validation metric per epoch.

Uses ``matplotlib.figure.Figure`` directly (no pyplot): no global backend or figure state, safe
in any process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ncfctl import fileio


def training_curve(
    path: str | os.PathLike,
    history: Sequence[dict[str, Any]],
    best_epoch: int,
    k: int,
    title: str,
    loss_label: str | None = None,
) -> None:
    """Two panels: training loss, and validation HR@k / NDCG@k (RMSE / MAE for ratings).

    The kept epoch (best validation score) is marked, since that is the model the artifact holds.
    ``loss_label`` names a loss other than ncfctl's own (BCE, or MSE for ratings).
    """
    epochs = [record["epoch"] for record in history]
    explicit = "rmse" in history[0]
    metrics = ("rmse", "mae") if explicit else ("hr", "ndcg")
    labels = ("RMSE", "MAE") if explicit else (f"HR@{k}", f"NDCG@{k}")
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2, sharex=True)
    loss_ax.plot(epochs, [record["loss"] for record in history], marker="o", color="tab:blue")
    loss_ax.set_ylabel(loss_label or ("MSE" if explicit else "binary cross-entropy"))
    loss_ax.set_title("training loss")
    for metric, label in zip(metrics, labels, strict=True):
        metric_ax.plot(epochs, [record[metric] for record in history], marker="o", label=f"validation {label}")
    metric_ax.set_title(f"validation {labels[0]} and {labels[1]}")
    for ax in (loss_ax, metric_ax):
        ax.axvline(best_epoch, color="tab:green", linestyle="--", alpha=0.6, label=f"kept epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    metric_ax.legend(loc="best")
    fig.suptitle(title)
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
