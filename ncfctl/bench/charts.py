"""PNG charts of a comparison, after the design doc's figure 4 (speed, size/memory, accuracy side by side).

* ``latency.png``: p50 per query (one pair, 64 pairs, top-K over all items) per variant, with a
  whisker up to p99; log scale, since an HTTP round trip and an in-process call differ 10-100x.
* ``throughput.png``: samples/s at batch 64.
* ``size.png``: size on disk and peak RSS of a process serving only that model.
* ``quality_vs_speed.png``: full-ranking HR@K (or RMSE) against top-K latency: up-left is better
  (down-left for RMSE).

Rendered with matplotlib's non-interactive Agg backend; files are written atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from ncfctl import fileio  # noqa: E402

QUERIES = (("b1", "one pair"), ("b64", "64 pairs"), ("topk", "top-K, all items"))
DPI = 120


def _plain_log_ticks(axis) -> None:
    """Log-scale ticks at 1-2-5 steps written 0.2, 0.5, 1 rather than matplotlib's 2x10^-1."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    plt.close(fig)


def _latency(rows: list[dict[str, Any]], path: Path) -> None:
    names = [r["variant"] for r in rows]
    x = np.arange(len(rows))
    width = 0.8 / len(QUERIES)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.2))
    for n, (key, label) in enumerate(QUERIES):
        p50 = np.array([r[f"{key}_p50_ms"] for r in rows])
        p99 = np.array([r[f"{key}_p99_ms"] for r in rows])
        offsets = x + (n - (len(QUERIES) - 1) / 2) * width
        ax.bar(offsets, p50, width, label=f"{label} (p50)")
        ax.errorbar(
            offsets,
            p50,
            yerr=[np.zeros_like(p50), np.maximum(p99 - p50, 0)],
            fmt="none",
            ecolor="black",
            capsize=3,
            linewidth=0.8,
        )
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    ax.set_ylabel("latency per call, ms (whisker: p99)")
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set_title("Latency")
    ax.legend(fontsize=8)
    _save(fig, path)


def _throughput(rows: list[dict[str, Any]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(rows) + 2), 3.8))
    values = [r["throughput"] for r in rows]
    bars = ax.bar([r["variant"] for r in rows], values, color="tab:green")
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
    ax.set_ylabel("samples/s (batch 64)")
    ax.set_title("Throughput")
    ax.tick_params(axis="x", rotation=15)
    _save(fig, path)


def _size(rows: list[dict[str, Any]], path: Path) -> None:
    fig, (disk, rss) = plt.subplots(1, 2, figsize=(max(8.0, 2.0 * len(rows) + 2), 3.8))
    names = [r["variant"] for r in rows]
    for ax, key, label, color in (
        (disk, "size_mb", "model size on disk, MB", "tab:blue"),
        (rss, "peak_rss_mb", "peak RSS serving only this model, MB", "tab:orange"),
    ):
        values = [r[key] for r in rows]
        bars = ax.bar(names, values, color=color)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.tick_params(axis="x", rotation=20)
    _save(fig, path)


def _quality_vs_speed(rows: list[dict[str, Any]], explicit: bool, k: int, path: Path) -> None:
    key, label = ("rmse", "RMSE (lower is better)") if explicit else ("full_hr", f"full-ranking HR@{k}")
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for row in rows:
        ax.scatter(row["topk_p50_ms"], row[key], s=50)
        ax.annotate(
            row["variant"], (row["topk_p50_ms"], row[key]), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    ax.set_xscale("log")
    _plain_log_ticks(ax.xaxis)
    ax.set_xlabel(f"top-{k} latency p50, ms (log)")
    ax.set_ylabel(label)
    ax.set_title("Quality vs speed")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def render_charts(folder: Path, results: dict[str, Any]) -> list[str]:
    """Write the four PNGs into ``folder``; their file names, in README order."""
    rows = results["rows"]
    _latency(rows, folder / "latency.png")
    _throughput(rows, folder / "throughput.png")
    _size(rows, folder / "size.png")
    _quality_vs_speed(rows, results["explicit"], results["k"], folder / "quality_vs_speed.png")
    return ["latency.png", "throughput.png", "size.png", "quality_vs_speed.png"]
