"""Pruning's bars on real data: quality after fine-tuning, and what structured pruning buys in speed.

Runs the real services end to end on a MovieLens archive (default: ml-latest-small) with the
default NeuMF (factors 32, layers 128,64,32) and the default fine-tuning settings:

1. per seed (``--seeds``; each in its own workspace ``<workdir>/seed-<n>``): ``data`` + ``train``
   (skipped when that workspace already holds a trained model), then
   ``prune --method magnitude --rate 0.5 --finetune`` and ``prune --method structured --rate 0.5 --finetune``;
2. quality: test HR@10 of each fine-tuned model vs its dense one (bars: within 0.005 for
   magnitude, 0.01 for structured), plus NDCG and full-ranking HR. ml-latest-small has 610 test
   users, so one seed's HR@10 has a standard error of about 0.018 and one user is 0.0016: the bars
   are judged on the mean gap over the seeds, reported with its standard error;
3. speed, on the first seed's models: scoring every item for one user with the dense, the magnitude-pruned and the
   structured-pruned model, side by side in one process, interleaved round-robin (a busy shared
   machine slows all alike), in three runtimes: torch eager, ONNX Runtime and the serving
   container's numpy fast path; with warm caches (blocks of 20 calls per model, like a server)
   and cold (models alternating call by call). Bar: structured >= 1.6x faster than dense (torch
   eager, warm).

Usage::

    python benchmarks/bench_prune.py --source /work/shared/data/ml-latest-small.zip
    python benchmarks/bench_prune.py --workdir /tmp/bench-prune --seeds 42 --repeats 500 --json
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="/work/shared/data/ml-latest-small.zip", help="MovieLens archive")
    parser.add_argument("--dataset", default="ml-latest-small", help="its data.dataset name")
    parser.add_argument("--workdir", help="folder of the per-seed workspaces to (re)use (default: a temporary one)")
    parser.add_argument(
        "--seeds", default="42,100,101,102,103,104,105,106", help="comma-separated seeds (data split, init, sampling)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, onnxruntime and BLAS")
    parser.add_argument("--repeats", type=int, default=1000, help="timed calls per model and runtime")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args()


ARGS = parse_args()
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(ARGS.threads)  # before numpy/torch load their thread pools

import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from ncf_serving.fastpath import FastPath  # noqa: E402

from ncfctl.bench.latency import interleaved_timings, summarize  # noqa: E402
from ncfctl.config import Config, load_config  # noqa: E402
from ncfctl.data.prepare import prepare_dataset  # noqa: E402
from ncfctl.export.onnx_export import export  # noqa: E402
from ncfctl.export.runners import ort_scorer, ort_session  # noqa: E402
from ncfctl.models import MODEL_FILE, NCF, load_model  # noqa: E402
from ncfctl.pruning.service import prune_model  # noqa: E402
from ncfctl.serving.bundle import fastpath_arrays  # noqa: E402
from ncfctl.training.service import train_model  # noqa: E402
from ncfctl.workspace import Artifact, Workspace  # noqa: E402

BARS = {"magnitude": 0.005, "structured": 0.01}
SPEED_BAR = 1.6
WARM_BLOCK = 20
SPEC_KEYS = {"model_type", "factors", "mlp_user_dim", "mlp_item_dim", "hidden"}


def trained_model(config: Config, workspace: Workspace) -> Artifact:
    """The workspace's latest trained model, or a fresh one on a freshly prepared dataset."""
    found = workspace.latest("model", where={"stage": "trained"})
    if found is not None:
        return found
    dataset = prepare_dataset(config, workspace)
    return train_model(config, workspace, dataset_ref=dataset.id)


def quality(dense: Artifact, tuned: Artifact) -> dict[str, float]:
    """Test metrics of ``tuned`` beside the dense model's, and the HR@10 gap (positive = worse)."""
    before, *_, after = tuned.manifest.info.stages
    keys = ("hr", "ndcg", "full_hr", "full_ndcg")
    return {
        **{f"dense_{key}": before[key] for key in keys},
        **{key: after[key] for key in keys},
        "hr_gap": before["hr"] - after["hr"],
        "dense_model": dense.id,
        "model": tuned.id,
    }


def all_item_scorers(model: NCF, folder: Path, num_items: int) -> dict[str, object]:
    """``fn(rep)`` scoring every item for user ``rep % num_users``, per runtime."""
    num_users = model.spec.num_users
    items_t = torch.arange(num_items)
    items_np = np.arange(num_items, dtype=np.int64)
    model.eval()
    proto = export(model, items_np[:2], items_np[:2], opset=12, dynamic_batch=True)
    onnx_path = folder / "model.onnx"
    onnx_path.write_bytes(proto.SerializeToString())
    session = ort_scorer(ort_session(onnx_path, threads=ARGS.threads))
    fast = FastPath(fastpath_arrays(model))

    def torch_eager(rep: int) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.full((num_items,), rep % num_users, dtype=torch.long), items_t).numpy()

    def onnxruntime(rep: int) -> np.ndarray:
        return session(np.full(num_items, rep % num_users, dtype=np.int64), items_np)

    def fastpath(rep: int) -> np.ndarray:
        return fast.score_all(rep % num_users)

    return {"torch_eager": torch_eager, "onnxruntime": onnxruntime, "fastpath": fastpath}


def speed(models: dict[str, NCF], scratch: Path, block: int) -> dict[str, dict[str, float]]:
    """Per-call p50/p99 (ms) per runtime and model, all interleaved in one loop, and speedups vs dense.

    Each timed unit is ``block`` consecutive calls of one contender. ``block=1`` alternates
    contenders call by call: every call finds its tables evicted by the other eight models
    (cold caches). A server scores with one model all day, so ``block=20`` (warm caches within
    a block, still interleaved across blocks against drift) is the serving-like figure.
    """
    calls = {}
    for name, model in models.items():
        folder = scratch / f"{name}-{block}"
        folder.mkdir()
        for runtime, fn in all_item_scorers(model, folder, model.spec.num_items).items():
            calls[f"{runtime}/{name}"] = lambda rep, fn=fn: [fn(rep * block + j) for j in range(block)]
    samples = interleaved_timings(calls, warmup=max(1, ARGS.warmup // block), repeats=max(1, ARGS.repeats // block))
    out: dict[str, dict[str, float]] = {}
    for key, values in samples.items():
        stats = summarize(np.asarray(values) / block)
        runtime, name = key.split("/")
        out.setdefault(runtime, {})[f"{name}_p50_ms"] = stats.p50_ms
        out[runtime][f"{name}_p99_ms"] = stats.p99_ms
    for values in out.values():
        values["structured_speedup"] = values["dense_p50_ms"] / values["structured_p50_ms"]
        values["magnitude_speedup"] = values["dense_p50_ms"] / values["magnitude_p50_ms"]
    return out


def run_seed(base: dict[str, object], workdir: Path, seed: int) -> tuple[Artifact, dict[str, Artifact]]:
    """Dense model and the fine-tuned model of each method, for one seed in its own workspace."""
    base = {**base, "workdir": str(workdir), "seed": seed}
    workspace = Workspace(workdir)
    dense = trained_model(load_config(overrides=base), workspace)
    tuned = {}
    for method in BARS:
        config = load_config(overrides={**base, "prune.method": method, "prune.rate": 0.5})
        tuned[method] = prune_model(config, workspace, dense.id, finetune=True).finetuned
    return dense, tuned


def summarize_gaps(per_seed: dict[int, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """Per method: mean HR@10 gap over seeds, its standard error, and the seeds within the bar."""
    out = {}
    for method, bar in BARS.items():
        gaps = [quality[method]["hr_gap"] for quality in per_seed.values()]
        out[method] = {
            "mean_hr_gap": statistics.fmean(gaps),
            "se": statistics.stdev(gaps) / len(gaps) ** 0.5 if len(gaps) > 1 else float("nan"),
            "min": min(gaps),
            "max": max(gaps),
            "seeds_within_bar": sum(gap <= bar for gap in gaps),
            "seeds": len(gaps),
        }
    return out


def main() -> int:
    torch.set_num_threads(ARGS.threads)
    seeds = [int(seed) for seed in ARGS.seeds.split(",")]
    base = {"data.dataset": ARGS.dataset, "data.source": ARGS.source, "train.threads": ARGS.threads}
    per_seed: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(ARGS.workdir or Path(tmp) / "workspaces")
        for seed in seeds:
            dense, tuned = run_seed(base, root / f"seed-{seed}", seed)
            per_seed[seed] = {method: quality(dense, artifact) for method, artifact in tuned.items()}
            if seed == seeds[0]:
                models = {"dense": load_model(dense.file(MODEL_FILE))}
                models |= {method: load_model(artifact.file(MODEL_FILE)) for method, artifact in tuned.items()}
                timings = {f"block_{block}": speed(models, Path(tmp), block) for block in (WARM_BLOCK, 1)}
    config = load_config(overrides=base)
    summary = summarize_gaps(per_seed)
    bars = {f"{method}_mean_hr_gap<={bar}": summary[method]["mean_hr_gap"] <= bar for method, bar in BARS.items()}
    warm = timings[f"block_{WARM_BLOCK}"]["torch_eager"]["structured_speedup"]
    bars[f"structured_speedup>={SPEED_BAR} (torch eager, warm, seed {seeds[0]})"] = warm >= SPEED_BAR
    report = {
        "dataset": ARGS.dataset,
        "workdir": str(root) if ARGS.workdir else None,
        "dense_spec": models["dense"].spec.model_dump(include=SPEC_KEYS),
        "structured_spec": models["structured"].spec.model_dump(include=SPEC_KEYS),
        "prune": config.prune.model_dump(include={"allocation", "norm", "scope", "include_embeddings"}),
        "finetune": config.finetune.model_dump(),
        "quality": summary,
        "quality_per_seed": per_seed,
        "speed_all_items_one_user": timings,
        "threads": ARGS.threads,
        "repeats": ARGS.repeats,
        "bars": bars,
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__},
    }
    if ARGS.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


def quality_line(method: str, q: dict[str, float]) -> str:
    return (
        f"  {method:10s} HR@10 {q['dense_hr']:.4f} -> {q['hr']:.4f} (gap {q['hr_gap']:+.4f})  "
        f"NDCG@10 {q['dense_ndcg']:.4f} -> {q['ndcg']:.4f}  full HR@10 {q['dense_full_hr']:.4f} -> {q['full_hr']:.4f}"
    )


def print_report(report: dict) -> None:
    print(f"{report['dataset']}, dense {report['dense_spec']}, structured {report['structured_spec']}")
    ft = report["finetune"]
    print(f"pruning: {report['prune']}")
    print(f"fine-tuning: {ft['epochs']} epochs, lr {ft['lr']}, {ft['fraction']:.0%} of the training rows")
    for seed, methods in report["quality_per_seed"].items():
        print(f"seed {seed}")
        print("\n".join(quality_line(method, q) for method, q in methods.items()))
    for method, s in report["quality"].items():
        print(
            f"{method:10s} mean HR@10 gap over {s['seeds']} seeds {s['mean_hr_gap']:+.4f} (SE {s['se']:.4f}, "
            f"range {s['min']:+.4f} .. {s['max']:+.4f}, {s['seeds_within_bar']}/{s['seeds']} seeds within the bar)"
        )
    for mode, timings in report["speed_all_items_one_user"].items():
        print(f"scoring all items for one user, p50 ms per call ({mode}, {report['threads']} thread(s))")
        for runtime, values in timings.items():
            print(
                f"  {runtime:12s} dense {values['dense_p50_ms']:.3f}  magnitude {values['magnitude_p50_ms']:.3f} "
                f"(x{values['magnitude_speedup']:.2f})  structured {values['structured_p50_ms']:.3f} "
                f"(x{values['structured_speedup']:.2f})"
            )
    for bar, ok in report["bars"].items():
        print(f"  bar {bar}: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    sys.exit(main())
