"""The comparison's columns and its written forms: ``results.json``, ``results.csv`` and ``summary.md``.

One column list drives every form (and the CLI's Rich table), so a number never appears under
two names. Quality columns depend on the task: HR@K/NDCG@K sampled and full-ranking for implicit
feedback, RMSE/MAE for ratings. Speed-ups are the baseline's p50 divided by the variant's p50;
quality deltas are variant minus baseline (for RMSE/MAE, lower is better).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncfctl import fileio

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
SUMMARY_MD = "summary.md"


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: str  # format spec for tables ("" = as is)


def quality_columns(explicit: bool, k: int) -> list[Column]:
    if explicit:
        return [Column("rmse", "RMSE", ".4f"), Column("mae", "MAE", ".4f")]
    return [
        Column("hr", f"HR@{k}", ".4f"),
        Column("ndcg", f"NDCG@{k}", ".4f"),
        Column("full_hr", f"full HR@{k}", ".4f"),
        Column("full_ndcg", f"full NDCG@{k}", ".4f"),
    ]


def delta_columns(explicit: bool, k: int) -> list[Column]:
    if explicit:
        return [Column("delta_rmse", "ΔRMSE", "+.4f"), Column("delta_mae", "ΔMAE", "+.4f")]
    return [Column("delta_hr", f"ΔHR@{k}", "+.4f"), Column("delta_full_hr", f"Δfull HR@{k}", "+.4f")]


SPEED_COLUMNS = [
    Column("b1_p50_ms", "b1 p50", ".3f"),
    Column("b1_p99_ms", "b1 p99", ".3f"),
    Column("b64_p50_ms", "b64 p50", ".3f"),
    Column("b64_p99_ms", "b64 p99", ".3f"),
    Column("topk_p50_ms", "top-K p50", ".3f"),
    Column("topk_p99_ms", "top-K p99", ".3f"),
    Column("topk_recall", "top-K recall", ".3f"),
    Column("throughput", "samples/s", ",.0f"),
]
SIZE_COLUMNS = [
    Column("parameters", "params", ","),
    Column("nonzeros", "non-zeros", ","),
    Column("sparsity", "sparsity", ".1%"),
    Column("size_mb", "disk MB", ".2f"),
    Column("peak_rss_mb", "peak RSS MB", ".0f"),
]
RATIO_COLUMNS = [Column("speedup_b1", "×b1", ".2f"), Column("speedup_topk", "×top-K", ".2f")]


def columns(explicit: bool, k: int) -> list[Column]:
    """Every column of the comparison table, in display order."""
    return [
        Column("variant", "variant", ""),
        Column("runtime", "runtime", ""),
        Column("threads", "threads", ""),
        Column("workers", "workers", ""),
        *quality_columns(explicit, k),
        *SPEED_COLUMNS,
        *SIZE_COLUMNS,
        *RATIO_COLUMNS,
        *delta_columns(explicit, k),
    ]


def format_value(value: Any, fmt: str) -> str:
    if value is None:
        return ""
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def display_rows(results: dict[str, Any]) -> tuple[list[dict[str, str]], list[str]]:
    """Rows keyed by header with formatted values, and the header order (for Rich and markdown)."""
    cols = columns(results["explicit"], results["k"])
    rows = [{c.header: format_value(row.get(c.key), c.fmt) for c in cols} for row in results["rows"]]
    return rows, [c.header for c in cols]


def to_csv(results: dict[str, Any]) -> str:
    """Machine-readable rows: every column key plus the artifact id, unformatted."""
    keys = ["id", *(c.key for c in columns(results["explicit"], results["k"]))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(results["rows"])
    return buffer.getvalue()


def markdown_table(results: dict[str, Any]) -> str:
    rows, headers = display_rows(results)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row[h] for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def findings(results: dict[str, Any]) -> list[str]:
    """One sentence per non-baseline variant, built only from the measured numbers."""
    by_name = {row["variant"]: row for row in results["rows"]}
    base = by_name[results["baseline"]]
    explicit, k = results["explicit"], results["k"]
    metric, label = ("rmse", "RMSE") if explicit else ("full_hr", f"full-ranking HR@{k}")
    out = []
    for row in results["rows"]:
        if row["variant"] == results["baseline"]:
            continue
        out.append(
            f"**{row['variant']}** ({row['runtime']}): top-K {row['topk_p50_ms']:.3f} ms vs "
            f"{base['topk_p50_ms']:.3f} ms p50 ({row['speedup_topk']:.2f}x), one pair "
            f"{row['speedup_b1']:.2f}x; {label} {row[metric]:.4f} vs {base[metric]:.4f} "
            f"({row[metric] - base[metric]:+.4f}); {row['size_mb']:.2f} MB on disk vs {base['size_mb']:.2f} MB; "
            f"peak RSS {row['peak_rss_mb']:.0f} MB vs {base['peak_rss_mb']:.0f} MB."
        )
    return out


def winners(results: dict[str, Any], bold: str = "**") -> str:
    """One sentence: which variant is best on each headline metric (ties name every winner).

    ``bold`` wraps each winner's name: Markdown's ``**`` for ``summary.md``, nothing for a terminal.
    """
    explicit, k = results["explicit"], results["k"]
    quality = (
        [("rmse", "RMSE", min, ".4f"), ("mae", "MAE", min, ".4f")]
        if explicit
        else [
            ("hr", f"HR@{k}", max, ".4f"),
            ("full_hr", f"full-ranking HR@{k}", max, ".4f"),
        ]
    )
    speed_size = [
        ("topk_p50_ms", "top-K latency", min, ".3f", " ms"),
        ("b1_p50_ms", "one-pair latency", min, ".3f", " ms"),
        ("size_mb", "size on disk", min, ".2f", " MB"),
        ("peak_rss_mb", "peak memory", min, ".0f", " MB"),
    ]
    parts = []
    for key, label, best_of, fmt, *unit in [*quality, *speed_size]:
        rows = [row for row in results["rows"] if isinstance(row.get(key), int | float)]
        if not rows:
            continue
        best = best_of(row[key] for row in rows)
        names = [f"{bold}{row['variant']}{bold}" for row in rows if row[key] == best]
        names = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        parts.append(f"{label} {names} ({best:{fmt}}{unit[0] if unit else ''})")
    return "Best per metric: " + "; ".join(parts) + "."


def _popularity_line(results: dict[str, Any]) -> list[str]:
    """The non-personalised baseline of the same split, as recorded when the original was trained."""
    popularity = results.get("popularity")
    if not popularity or results["explicit"]:
        return []
    k = results["k"]
    return [
        f"Popularity ranking (no model) on the same split: HR@{k} {popularity['hr']:.4f}, "
        f"full-ranking HR@{k} {popularity['full_hr']:.4f}."
    ]


def _quality_sources(results: dict[str, Any]) -> str:
    """Which rows' quality was measured in this run and which came from the model's manifest."""
    recorded = [r["variant"] for r in results["rows"] if r.get("quality_from") == "manifest"]
    measured = [r["variant"] for r in results["rows"] if r.get("quality_from") != "manifest"]
    parts = []
    if measured:
        parts.append(f"measured in this run through each runtime: {', '.join(measured)}")
    if recorded:
        parts.append(f"the test metrics recorded in the model's manifest (same evaluation code): {', '.join(recorded)}")
    return "Quality: " + "; ".join(parts) + "."


def to_markdown(results: dict[str, Any]) -> str:
    """The short summary the README quotes: setup line, table, findings, notes, figures."""
    machine = results["machine"]
    lines = [
        f"## Benchmark {results['id']}",
        "",
        f"Dataset `{results['dataset']}` ({results['num_users']:,} users x {results['num_items']:,} items), "
        f"test split; baseline **{results['baseline']}**. Machine: {machine['cpu']}, {machine['cores']} cores "
        f"(1-min load average {machine.get('load_average_1m', '?')} at the start), "
        f"{results['threads']} thread(s) per runtime, {results['warmup']} warm-up + {results['repeats']} timed "
        f"calls per cell (fewer, at least 20, once a cell's calls total {results.get('series_seconds', '?')} s), "
        "interleaved across variants in shuffled order; latencies in ms per call, p50/p99; "
        "×b1 / ×top-K = speed-up, the baseline's p50 over the variant's. b1 = one (user, item) pair, "
        f"b64 = 64 pairs, top-K = top-{results['k']} over all {results['num_items']:,} items for one user "
        "(seen items excluded); top-K recall = share of the exact top-K of the variant's own model in its "
        "top-K, over the same test users (1 for variants that score every item); samples/s at batch 64; "
        "peak RSS of a separate process serving only that model "
        "(for a deployment: its largest worker; workers = the server's worker processes, threads = per worker).",
        "",
        _quality_sources(results),
        "",
        markdown_table(results),
        "",
        winners(results),
        "",
        *(f"- {line}" for line in [*findings(results), *_popularity_line(results)]),
    ]
    if results["notes"]:
        lines += ["", "Notes:", *(f"- {note}" for note in results["notes"])]
    if results["figures"]:
        lines += ["", *(f"![{Path(f).stem}]({f})" for f in results["figures"])]
    return "\n".join(lines) + "\n"


def write_reports(folder: Path, results: dict[str, Any]) -> None:
    """``results.json``, ``results.csv`` and ``summary.md`` into ``folder`` (atomic writes)."""
    fileio.write_json(folder / RESULTS_JSON, results)
    fileio.write_text(folder / RESULTS_CSV, to_csv(results))
    fileio.write_text(folder / SUMMARY_MD, to_markdown(results))
