"""How fast one training epoch is, with 1 vs 2 torch threads, on the datasets that matter.

* ``ml100k``: a synthetic log shaped like MovieLens-100K (943 users, 1,682 items, 100K
  interactions): the issue's bar, "one epoch on 100K interactions with 4 negatives well under
  one second on one core".
* ``default``: the default synthetic dataset (``configs/default.yaml``, ML-1M shape, ~1M
  interactions): what ``ncfctl train`` trains on a fresh workspace.

Each case is prepared with the real data layer in a temporary workspace, then one-epoch
``fit`` calls (sampling + optimizer steps + validation; no test evaluation) run for each thread
count, interleaved round-robin so a busy neighbour on a shared machine slows every variant
alike. Reported per variant: median epoch wall seconds, training samples/s (sampling + steps),
and CPU seconds per epoch (``process_time``: what the epoch costs regardless of contention).
The 2-thread / 1-thread ratio is what ``train.threads`` in ``configs/default.yaml`` is set from.
Also timed once: the sampled validation pass and the full-ranking test evaluation.

Usage::

    python benchmarks/bench_train.py                      # both cases, 3 timed epochs per variant
    python benchmarks/bench_train.py --cases ml100k --repeats 5 --json
    python benchmarks/bench_train.py --layers 64,32,16    # a smaller MLP tower
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import torch

from ncfctl.bench.latency import interleaved_timings
from ncfctl.config import load_config
from ncfctl.data.dataset import load_dataset
from ncfctl.data.prepare import prepare_dataset
from ncfctl.evaluation import evaluate, torch_score_fn
from ncfctl.models import NCF
from ncfctl.training import FitSettings, fit
from ncfctl.training.service import model_spec
from ncfctl.workspace import Workspace

CASES = {
    "ml100k": {
        "data.synthetic.users": 943,
        "data.synthetic.items": 1682,
        "data.synthetic.interactions": 100_000,
        "data.synthetic.min_per_user": 20,
    },
    "default": {},
}


def measure(case: str, overrides: dict[str, Any], thread_counts: list[int], repeats: int) -> dict[str, Any]:
    config = load_config(overrides=overrides, environ={})
    with tempfile.TemporaryDirectory() as root:
        data = load_dataset(prepare_dataset(config, Workspace(root)))
    torch.manual_seed(0)
    model = NCF(model_spec(config, data))
    records: dict[str, list[dict[str, float]]] = {f"{n} thread(s)": [] for n in thread_counts}

    def epoch_with(threads: int, name: str):
        def run(rep: int) -> None:
            settings = FitSettings.from_config(config.train, seed=rep, epochs=1, threads=threads, full_ranking=False)
            cpu = time.process_time()
            record = fit(model, data, settings).history[0]
            records[name].append({**record, "cpu_seconds": time.process_time() - cpu})

        return run

    calls = {name: epoch_with(n, name) for n, name in zip(thread_counts, records, strict=True)}
    interleaved_timings(calls, warmup=1, repeats=repeats)
    variants = {}
    for name, runs in records.items():
        timed = runs[1:]  # the first call was the untimed warm-up
        variants[name] = {
            "epoch_seconds": statistics.median(r["seconds"] for r in timed),
            "samples_per_s": statistics.median(r["samples_per_s"] for r in timed),
            "cpu_seconds_per_epoch": statistics.median(r["cpu_seconds"] for r in timed),
        }
    torch.set_num_threads(thread_counts[0])
    score = torch_score_fn(model.eval())
    start = time.perf_counter()
    evaluate(score, data, "val", k=config.train.top_k, full_ranking=False)
    val_seconds = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(score, data, "test", k=config.train.top_k, full_ranking=True)
    full_seconds = time.perf_counter() - start
    names = list(variants)
    return {
        "case": case,
        "users": data.num_users,
        "items": data.num_items,
        "train_rows": len(data.train),
        "samples_per_epoch": len(data.train) * (1 + config.train.negatives),
        "model": f"{config.model.type} factors={config.model.factors} layers={config.model.layers}",
        "batch_size": config.train.batch_size,
        "variants": variants,
        "ratio_last_vs_first_threads": variants[names[-1]]["epoch_seconds"] / variants[names[0]]["epoch_seconds"],
        "validation_eval_seconds": val_seconds,
        "full_ranking_test_eval_seconds": full_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--layers", help="MLP widths, e.g. 64,32,16 (default: config)")
    parser.add_argument("--batch-size", type=int, help="default: config train.batch_size")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    extra: dict[str, Any] = {}
    if args.layers:
        extra["model.layers"] = [int(w) for w in args.layers.split(",")]
    if args.batch_size:
        extra["train.batch_size"] = args.batch_size
    results = [measure(case, {**CASES[case], **extra}, args.threads, args.repeats) for case in args.cases]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(
            f"{r['case']}: {r['users']} users x {r['items']} items, {r['train_rows']:,} training rows, "
            f"{r['samples_per_epoch']:,} samples/epoch, {r['model']}, batch {r['batch_size']}"
        )
        for name, v in r["variants"].items():
            print(
                f"  {name:>12}: epoch {v['epoch_seconds']:.2f} s wall, {v['cpu_seconds_per_epoch']:.2f} s CPU, "
                f"{v['samples_per_s']:,.0f} samples/s"
            )
        print(
            f"  epoch time ratio {list(r['variants'])[-1]} / {list(r['variants'])[0]}: "
            f"{r['ratio_last_vs_first_threads']:.2f}"
        )
        print(
            f"  validation (sampled) {r['validation_eval_seconds']:.2f} s, "
            f"full-ranking test evaluation {r['full_ranking_test_eval_seconds']:.2f} s"
        )


if __name__ == "__main__":
    main()
