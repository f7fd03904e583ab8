"""``ncfctl bench``: measure every selected variant side by side and record a ``benchmark`` artifact.

Order of work, each a progress task: open one runner per variant in this process; quality on the
test split; latency of the three queries with repetitions interleaved across all variants (see
:mod:`ncfctl.bench.latency`); parameters and size from the files; peak RSS of a separate process
serving only that model (:mod:`ncfctl.bench.memory`). The artifact folder ``comparison/<id>/``
holds ``results.json``, ``results.csv``, ``summary.md`` and the PNG charts.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from ncf_serving.bundle import BundleError
from threadpoolctl import threadpool_limits

from ncfctl.artifacts import BenchmarkInfo, ReuseKey
from ncfctl.bench import charts, report
from ncfctl.bench.footprint import MB, bundle_footprint, model_footprint
from ncfctl.bench.latency import interleaved_timings, summarize, throughput
from ncfctl.bench.memory import probe_many_peak_rss_mb, process_peak_rss_mb
from ncfctl.bench.quality import measure_quality, recall_users, recorded_quality, topk_recall
from ncfctl.bench.runners import BundleRunner, HttpRunner, Runner, TorchRunner
from ncfctl.bench.variants import Selection, Variant, select_variants
from ncfctl.config import BenchConfig, Config
from ncfctl.data.dataset import EvalSplit, InteractionData, load_dataset
from ncfctl.errors import NcfError
from ncfctl.models import MODEL_FILE
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.serving.deploy_local import our_process, server_plan
from ncfctl.threads import torch_threads
from ncfctl.workspace import Artifact, Workspace

BATCH = 64
QUERIES = ("b1", "b64", "topk")
HEADLINE = (
    "topk_p50_ms",
    "topk_recall",
    "b1_p50_ms",
    "peak_rss_mb",
    "size_mb",
)  # per-variant numbers copied to the manifest
PROBE_ROUNDS = 20  # queries of each kind the memory probe serves before reading its peak


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("torch", "onnxruntime", "numpy", "dlr"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "versions": versions,
    }


def _open_runner(variant: Variant, seen_npz: Path, config: Config) -> Runner:
    threads = config.bench.threads
    if variant.runtime == "torch":
        with np.load(seen_npz) as seen:
            return TorchRunner(variant.artifact.file(MODEL_FILE), seen["indptr"], seen["indices"], threads)
    if variant.runtime == "http":
        return HttpRunner(variant.url, variant.bundle, config.serving.max_batch)
    return BundleRunner(variant.bundle, threads)


def _probe_spec(variant: Variant, seen_npz: Path, data: InteractionData, config: Config) -> dict[str, Any]:
    common = {
        "threads": config.bench.threads,
        "num_users": data.num_users,
        "num_items": data.num_items,
        "rounds": PROBE_ROUNDS,
        "k": config.train.top_k,
    }
    if variant.runtime == "torch":
        return {"kind": "torch", "model": str(variant.artifact.file(MODEL_FILE)), "seen": str(seen_npz), **common}
    return {"kind": "bundle", "bundle": str(variant.bundle), **common}


def _batches(split: EvalSplit, size: int, count: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` batches of ``size`` evaluation pairs: each held-out item and its negatives, row after row."""
    width = 1 + split.negatives.shape[1]
    users = np.repeat(split.rows.users, width)
    items = np.concatenate([split.rows.items[:, None], split.negatives], axis=1).reshape(-1)
    tiles = -(-size * count // len(users))  # a tiny split is repeated
    users, items = np.tile(users, tiles), np.tile(items, tiles)
    return [(users[b * size : (b + 1) * size], items[b * size : (b + 1) * size]) for b in range(count)]


def _query_calls(runners: dict[str, Runner], data: InteractionData, k: int) -> dict[str, Callable[[int], object]]:
    """``"<variant>|<query>"`` -> call(rep); inputs come from the test split, a different one each rep."""
    users, items = data.test.rows.users, data.test.rows.items
    n = len(users)
    batches = _batches(data.test, BATCH)
    calls: dict[str, Callable[[int], object]] = {}
    for name, runner in runners.items():
        calls[f"{name}|b1"] = lambda rep, r=runner: r.score(users[rep % n : rep % n + 1], items[rep % n : rep % n + 1])
        calls[f"{name}|b64"] = lambda rep, r=runner: r.score(*batches[rep % len(batches)])
        calls[f"{name}|topk"] = lambda rep, r=runner: r.top_k(int(users[rep % n]), k)
    return calls


def _footprint(variant: Variant, notes: list[str]) -> dict[str, Any]:
    if variant.runtime == "torch":
        counts = model_footprint(variant.artifact.path)
    else:
        counts, note = bundle_footprint(variant.bundle, variant.model_dir)
        if note:
            notes.append(note)
    params = counts["parameters"]
    return {
        "parameters": params,
        "nonzeros": counts["nonzeros"],
        "sparsity": 1.0 - counts["nonzeros"] / params if params else 0.0,
        "size_mb": counts["file_bytes"] / MB,
    }


def _peak_rss(variants: list[Variant], seen_npz: Path, data: InteractionData, config: Config) -> dict[str, float]:
    """Peak RSS per variant name: probes in child processes; for a live server, its largest process's ``VmHWM``
    (one worker: each serves the whole model, sharing the bundle's arrays with its siblings)."""
    probed = [v for v in variants if v.runtime != "http"]
    peaks = dict(
        zip(
            [v.name for v in probed],
            probe_many_peak_rss_mb([_probe_spec(v, seen_npz, data, config) for v in probed]),
            strict=True,
        )
    )
    for variant in variants:
        if variant.runtime == "http":
            server = our_process(variant.artifact.manifest.info)  # the recorded pid, only if still that server
            processes = [server, *server.children(recursive=True)] if server is not None else []
            peak = max((process_peak_rss_mb(p.pid) or 0.0 for p in processes), default=0.0) or None
            if peak is None:
                raise NcfError(f"deployment {variant.id}: cannot read the server's peak RSS (recorded pid gone)")
            peaks[variant.name] = peak
    return peaks


def _server_plan(variant: Variant) -> dict[str, int]:
    plan = server_plan(str(variant.url))
    if plan is None:
        raise NcfError(f"deployment {variant.id}: its /metrics does not report workers and threads (an older server?)")
    return plan


def _ratios(rows: list[dict[str, Any]], baseline: str, explicit: bool) -> None:
    base = next(r for r in rows if r["variant"] == baseline)
    deltas = ("rmse", "mae") if explicit else ("hr", "full_hr")
    for row in rows:
        row["speedup_b1"] = base["b1_p50_ms"] / row["b1_p50_ms"]
        row["speedup_topk"] = base["topk_p50_ms"] / row["topk_p50_ms"]
        for key in deltas:
            row[f"delta_{key}"] = row[key] - base[key]


def _open_runners(
    selection: Selection, seen_npz: Path, config: Config, stack: ExitStack, notes: list[str], progress: Progress
) -> dict[str, tuple[Variant, Runner]]:
    """One runner per variant, closed with ``stack``; a variant that cannot load becomes a note."""
    opened = progress.task("load variants", len(selection.variants))
    runners: dict[str, tuple[Variant, Runner]] = {}
    for variant in selection.variants:
        try:
            runner = _open_runner(variant, seen_npz, config)
        except (BundleError, NcfError) as exc:
            notes.append(f"{variant.name} ({variant.id}): skipped, cannot load: {exc}")
            opened.advance(status=f"{variant.name}: skipped")
            continue
        stack.callback(runner.close)
        runners[variant.name] = (variant, runner)
        opened.advance(status=variant.name)
    if selection.baseline.name not in runners:
        raise NcfError(f"baseline {selection.baseline.id} could not be loaded: {'; '.join(notes)}")
    return runners


def _quality(
    runners: dict[str, tuple[Variant, Runner]], data: InteractionData, k: int, progress: Progress
) -> dict[str, dict[str, Any]]:
    """Test metrics per variant name (recorded ones for torch models, measured otherwise)."""
    done = progress.task("quality (test split)", len(runners))
    out: dict[str, dict[str, Any]] = {}
    for name, (variant, runner) in runners.items():
        recorded = (
            recorded_quality(variant.artifact.manifest.metrics, data.explicit, k) if runner.runtime == "torch" else None
        )
        metrics = recorded or measure_quality(runner, data, k)
        out[name] = {key: value for key, value in metrics.items() if key != "k"}
        out[name]["quality_from"] = "manifest" if recorded else "measured"
        done.advance(status=f"{name} ({out[name]['quality_from']})")
    return out


def _speed(
    runners: dict[str, Runner], data: InteractionData, k: int, settings: BenchConfig, progress: Progress
) -> dict[str, dict[str, Any]]:
    """p50/p99 of each query and batch-64 throughput per variant name, all series interleaved."""
    calls = _query_calls(runners, data, k)
    latency = progress.task(f"latency ({len(calls)} series interleaved)", settings.repeats)
    samples = interleaved_timings(
        calls,
        warmup=settings.warmup,
        repeats=settings.repeats,
        on_round=lambda _: latency.advance(),
        budget_s=settings.series_seconds,
    )
    out: dict[str, dict[str, Any]] = {name: {} for name in runners}
    for key, seconds in samples.items():
        name, query = key.split("|")
        stats = summarize(seconds)
        out[name][f"{query}_p50_ms"] = stats.p50_ms
        out[name][f"{query}_p99_ms"] = stats.p99_ms
        out[name][f"{query}_calls"] = stats.n
        if query == "b64":
            out[name]["throughput"] = throughput(BATCH, seconds)
    return out


def _recall(runners: dict[str, Runner], data: InteractionData, k: int, settings: BenchConfig, progress: Progress):
    """``topk_recall`` per variant name over the same seeded test users (1.0 for exact variants)."""
    users = recall_users(data, settings.recall_users, seed=0)
    done = progress.task(f"top-{k} recall vs exact ({len(users)} users)", len(runners))
    out = {}
    for name, runner in runners.items():
        out[name] = {"topk_recall": topk_recall(runner, users, k), "recall_users": len(users)}
        done.advance(status=f"{name}: {out[name]['topk_recall']:.3f}")
    return out


def _measure(
    selection: Selection, data: InteractionData, config: Config, notes: list[str], progress: Progress
) -> list[dict[str, Any]]:
    """Every column of every loadable variant, in selection order (ratios not yet filled)."""
    settings, k = config.bench, config.train.top_k
    with (
        tempfile.TemporaryDirectory(prefix="ncfctl-bench-") as tmp,
        ExitStack() as stack,
        torch_threads(settings.threads),
        threadpool_limits(limits=settings.threads),  # numpy's BLAS (the bundles' fast path), OpenMP
    ):
        seen_npz = Path(tmp) / "seen_items.npz"
        indptr, indices = data.seen_items(include_val=True)
        np.savez(seen_npz, indptr=indptr, indices=indices)
        runners = _open_runners(selection, seen_npz, config, stack, notes, progress)
        variants = [variant for variant, _ in runners.values()]
        quality = _quality(runners, data, k, progress)
        plain = {name: runner for name, (_, runner) in runners.items()}
        speed = _speed(plain, data, k, settings, progress)
        recall = _recall(plain, data, k, settings, progress)
        sizing = progress.task("size + peak memory (one process per model)", 2)
        sizes = {v.name: _footprint(v, notes) for v in variants}
        sizing.advance(status="sizes counted")
        peaks = _peak_rss(variants, seen_npz, data, config)
        sizing.advance(status="peak RSS measured")
        plans = {v.name: _server_plan(v) for v in variants if v.runtime == "http"}
    return [
        {
            "variant": v.name,
            "runtime": v.runtime,
            # a deployed server's own setting, as it reports it
            "threads": plans[v.name]["threads"] if v.runtime == "http" else settings.threads,
            "workers": plans[v.name]["workers"] if v.runtime == "http" else 1,  # the others run in one process
            "id": v.id,
            "role": v.role,
            "model_id": v.model_id,
            **quality[v.name],
            **speed[v.name],
            **recall[v.name],
            **sizes[v.name],
            "peak_rss_mb": peaks[v.name],
        }
        for v in variants
    ]


def bench_reuse_key(config: Config) -> ReuseKey:
    """A comparison is made with the ``bench`` settings at the models' K (and of the variants it names)."""
    return ReuseKey("benchmark", {"bench": config.bench.model_dump(), "top_k": config.train.top_k})


def run_benchmark(
    config: Config, workspace: Workspace, compare: str | None = None, progress: Progress = NO_PROGRESS
) -> Artifact:
    """Compare the variants named by ``compare`` (default ``bench.compare``); the ``benchmark`` artifact."""
    settings = config.bench
    selection = select_variants(workspace, compare or settings.compare)
    notes = list(selection.notes)
    data = load_dataset(workspace.get(selection.baseline.dataset_id, "dataset"))
    k = config.train.top_k
    started, machine = datetime.now(UTC), _machine()
    rows = _measure(selection, data, config, notes, progress)
    _ratios(rows, selection.baseline.name, data.explicit)
    dataset_id = selection.baseline.dataset_id
    with workspace.create(
        "benchmark",
        parent=selection.baseline.id,
        config=bench_reuse_key(config).config,
        info=BenchmarkInfo(dataset=dataset_id, baseline=selection.baseline.id, variants=[row["id"] for row in rows]),
    ) as writer:
        results = {
            "id": writer.id,
            "created": started.isoformat(),
            "dataset": dataset_id,
            "num_users": data.num_users,
            "num_items": data.num_items,
            "explicit": data.explicit,
            "k": k,
            "baseline": selection.baseline.name,
            "threads": settings.threads,
            "warmup": settings.warmup,
            "repeats": settings.repeats,
            "series_seconds": settings.series_seconds,
            "machine": machine,
            "columns": [c.key for c in report.columns(data.explicit, k)],
            "rows": rows,
            "notes": notes,
            "figures": [],
            "popularity": workspace.get(selection.baseline.model_id, "model").manifest.info.baseline,
        }
        results["figures"] = charts.render_charts(writer.path, results)
        report.write_reports(writer.path, results)
        writer.manifest.metrics.update({r["variant"]: {c: r[c] for c in HEADLINE} for r in rows})
    return writer.artifact
