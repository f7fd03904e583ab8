"""``ncfctl bench``: compare the original, pruned, fine-tuned, compiled and deployed models and the ALS / BPR
baselines side by side."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any

import typer

from ncfctl.cli.context import command_context
from ncfctl.cli.options import JsonOpt, ThreadsOpt
from ncfctl.cli.output import Output, artifact_fields

CompareOpt = Annotated[
    str | None,
    typer.Option(
        "--compare",
        help="all (the newest trained model, everything derived from it, and the ALS / BPR baselines on its "
        "dataset), or a comma list of artifact ids and roles: original, pruned, finetuned, compiled, deployment, "
        "baseline.",
    ),
]


def _tables(out: Output, results: dict[str, Any]) -> None:
    """Three narrow tables (quality, speed, size) so the comparison stays readable in 80 columns."""
    from ncfctl.bench import report

    rows, _ = report.display_rows(results)
    explicit, k = results["explicit"], results["k"]
    quality = [c.header for c in (*report.quality_columns(explicit, k), *report.delta_columns(explicit, k))]
    speed = [c.header for c in (*report.SPEED_COLUMNS, *report.RATIO_COLUMNS)]
    size = ["runtime", "threads", "workers", *(c.header for c in report.SIZE_COLUMNS)]
    out.table(rows, title=f"Quality on the test split (Δ vs {results['baseline']})", columns=["variant", *quality])
    timing = f"up to {results['repeats']} interleaved calls per cell, p50/p99 ms; speed-up = baseline p50 / p50"
    out.table(rows, title=f"Speed ({timing})", columns=["variant", *speed])
    out.table(
        rows, title="Size and peak memory (a separate process serving only that model)", columns=["variant", *size]
    )


def benchmark_payload(artifact) -> dict[str, Any]:
    """A benchmark artifact as the ``--json`` document: its files and the full ``results.json``."""
    from ncfctl.bench.report import RESULTS_CSV, RESULTS_JSON, SUMMARY_MD

    results = jsonlib.loads(artifact.file(RESULTS_JSON).read_text(encoding="utf-8"))
    return {
        **artifact_fields(artifact),
        "results_json": str(artifact.path / RESULTS_JSON),
        "results_csv": str(artifact.path / RESULTS_CSV),
        "summary": str(artifact.path / SUMMARY_MD),
        "figures": [str(artifact.path / f) for f in results["figures"]],
        "results": results,
    }


def render_benchmark(out: Output, payload: dict[str, Any]) -> None:
    """Tables, notes and file locations of a :func:`benchmark_payload` for people."""
    from ncfctl.bench.report import winners

    results = payload["results"]
    _tables(out, results)
    out.info(winners(results, bold=""))
    for note in results["notes"]:
        out.warn(note)
    out.success(f"benchmark {payload['id']}: {payload['path']}")
    out.info(f"  summary {payload['summary']}\n  figures " + ", ".join(results["figures"]))


def bench_command(
    ctx: typer.Context,
    compare: CompareOpt = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", min=1, help="Timed repetitions per query and variant.")
    ] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", min=0, help="Untimed calls before timing.")] = None,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Measure quality, latency (batch 1, 64, top-K), throughput, size and peak memory of each variant.

    Writes comparison/<id>/ with results.json, results.csv, summary.md and PNG charts.
    """
    c = command_context(
        ctx,
        overrides={
            "bench.compare": compare,
            "bench.repeats": repeats,
            "bench.warmup": warmup,
            "bench.threads": threads,
        },
        json_output=json_output,
    )
    from ncfctl.bench.service import run_benchmark  # heavy: only once the flags are valid

    with c.out.progress() as progress:
        artifact = run_benchmark(c.config, c.workspace, progress=progress)
    payload = benchmark_payload(artifact)
    c.out.result(payload, lambda: render_benchmark(c.out, payload))


def register(app: typer.Typer) -> None:
    """Add ``ncfctl bench`` to the app."""
    app.command("bench")(bench_command)
