"""The local compile (`ncfctl neo compile --backend local`) against PyTorch eager, side by side in one process.

Builds the default ML-1M-shaped NeuMF (6,040 users, 3,706 items, factors 32, layers 128,64,32, from
configs/default.yaml) unless ``--model`` names an ncfctl ``model.pt``, compiles it with the real
:class:`~ncfctl.compile.onnxruntime_local.OnnxRuntimeCompiler`, then times three runtimes on the two
queries that matter, interleaved round by round so a busy shared machine slows them alike:

* ``torch_eager``: the model under ``torch.inference_mode``;
* ``onnx_exported``: the plain opset-12 export (what Neo receives), no graph rewrites;
* ``onnx_compiled``: the shipped ``model.onnx`` (ORT_ENABLE_ALL, fused), as the bundle serves it.

Queries: ``pair`` (one user-item pair: framework overhead) and ``all_items`` (one user against
every item: the top-K query). Bars (issue 5): ``pair`` >= 4x faster than eager, ``all_items`` no
slower than eager (compiled p50 <= eager p50). Exit status 1 when a bar is missed. Usage::

    python benchmarks/bench_compile.py                 # 1 thread (ml.c5.large's one physical core)
    python benchmarks/bench_compile.py --threads 2 --json
    python benchmarks/bench_compile.py --model output/models/<id>/model.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from ncfctl.compile import speed
from ncfctl.compile.base import CompileRequest
from ncfctl.compile.onnxruntime_local import MODEL_FILE, OnnxRuntimeCompiler
from ncfctl.config import load_config
from ncfctl.export.preflight import export_checked
from ncfctl.export.runners import ort_scorer, ort_session, torch_scorer
from ncfctl.models import NCF, NCFSpec, load_model
from ncfctl.targets import resolve_target
from ncfctl.threads import torch_threads

PAIR_BAR = 4.0  # compiled pair latency must be at least this many times lower than eager
ALL_ITEMS_BAR = 1.0  # compiled all-items latency must be no higher than eager


def default_model() -> NCF:
    config = load_config()
    torch.manual_seed(config.seed)
    spec = NCFSpec.from_layers(
        model_type=config.model.type,
        num_users=config.data.synthetic.users,
        num_items=config.data.synthetic.items,
        factors=config.model.factors,
        layers=config.model.layers,
    )
    return NCF(spec).eval()


def run(model: NCF, threads: int, repeats: dict[str, int], warmup: int) -> dict:
    torch.set_num_threads(threads)
    config = load_config()
    request = CompileRequest(
        name="bench",
        model=model,
        model_id="bench",
        target=resolve_target(config.compile.target),
        framework="onnx",
        batch_size=model.spec.num_items,
        threads=threads,
        opset=config.compile.opset,
        tolerance=config.compile.parity_tolerance,
        seed=config.seed,
    )
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        compiled_dir, exported_dir = Path(tmp, "compiled"), Path(tmp, "exported")
        compiled_dir.mkdir()
        output = OnnxRuntimeCompiler().compile(request, compiled_dir)
        exported = export_checked(
            model,
            exported_dir,
            framework="onnx",
            num_users=model.spec.num_users,
            num_items=model.spec.num_items,
            batch_size=None,
            opset=request.opset,
            tolerance=request.tolerance,
        )
        no_rewrites = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        runners = {
            "torch_eager": torch_scorer(model),
            "onnx_exported": ort_scorer(ort_session(exported.path, threads=threads, level=no_rewrites)),
            "onnx_compiled": ort_scorer(ort_session(compiled_dir / MODEL_FILE, threads=threads, level=no_rewrites)),
        }
        with torch_threads(threads):
            results = speed.compare(
                runners, model.spec.num_users, model.spec.num_items, repeats=repeats, warmup=warmup, seed=1
            )
    pair = speed.speedup(results, "pair", "torch_eager", "onnx_compiled")
    all_items = speed.speedup(results, "all_items", "torch_eager", "onnx_compiled")
    return {
        "shape": model.spec.model_dump(include={"model_type", "num_users", "num_items", "factors", "hidden"}),
        "threads": threads,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "parity_max_abs_diff": output.metrics["max_abs_diff"],
        "latency_ms": {q: {name: s.as_dict() for name, s in r.items()} for q, r in results.items()},
        "speedup_vs_eager": {"pair": pair, "all_items": all_items},
        "bars": {"pair_speedup>=4": pair >= PAIR_BAR, "all_items_no_slower": all_items >= ALL_ITEMS_BAR},
    }


def render(report: dict) -> None:
    print(f"NeuMF {report['shape']}  threads={report['threads']}  ort {report['onnxruntime']}  torch {report['torch']}")
    print(f"parity (compiled vs eager): max abs diff {report['parity_max_abs_diff']:.2e}")
    print(f"{'query':<10} {'runtime':<14} {'p50 ms':>9} {'p99 ms':>9} {'n':>6}")
    for query, rows in report["latency_ms"].items():
        for name, stats in rows.items():
            print(f"{query:<10} {name:<14} {stats['p50_ms']:>9.4f} {stats['p99_ms']:>9.4f} {stats['n']:>6}")
    speedups = report["speedup_vs_eager"]
    print(f"compiled vs eager (p50): pair {speedups['pair']:.2f}x, all_items {speedups['all_items']:.2f}x")
    for bar, ok in report["bars"].items():
        print(f"  {bar}: {'PASS' if ok else 'FAIL'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for every runtime (default 1)")
    parser.add_argument("--pair-repeats", type=int, default=3000)
    parser.add_argument("--all-repeats", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--model", type=Path, help="an ncfctl model.pt (default: the default NeuMF shape)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    model = load_model(args.model) if args.model else default_model()
    report = run(model, args.threads, {"pair": args.pair_repeats, "all_items": args.all_repeats}, args.warmup)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report)
    return 0 if all(report["bars"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
