"""Top-10 for one user: the server's exact numpy fast path vs scoring every item with a runtime.

All contenders run side by side in one process, interleaved round by round (so a busy shared
machine slows them alike), on the default ML-1M-shaped NeuMF (6,040 users, 3,706 items,
factors 32, layers 128,64,32) unless ``--model`` names an ncfctl ``model.pt``:

* ``torch_eager``: ``model(user repeated, all items)`` + ``topk`` (what a naive server does);
* ``onnxruntime``: the exported ONNX model on all items + ``argpartition``;
* ``fastpath``: ``ncf_serving`` ``Predictor.top_k`` internals (``FastPath.top_k``) excluding the
  user's seen items: exactly what ``POST /invocations {"user_id": u, "top_k": 10}`` runs, minus
  HTTP and JSON.

It also checks exactness: for ``--check-users`` users the fast path's top-10 must equal torch's
full ranking (ties broken by lower index) and scores must agree to float rounding. Usage::

    python benchmarks/bench_topk.py                  # 1 thread everywhere (the serving setting)
    python benchmarks/bench_topk.py --threads 2 --json
    python benchmarks/bench_topk.py --model output/models/<id>/model.pt
"""

from __future__ import annotations

import argparse
import os
import sys


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, onnxruntime and BLAS")
    parser.add_argument("--rounds", type=int, default=2000, help="timed calls per contender")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seen", type=int, default=165, help="seen items excluded per user (ML-1M mean: ~165)")
    parser.add_argument("--check-users", type=int, default=500)
    parser.add_argument("--model", help="an ncfctl model.pt (default: the ML-1M-shaped NeuMF, N(0, 0.1) weights)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args()


ARGS = parse_args()
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(ARGS.threads)  # before numpy/torch load their thread pools

import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from ncf_serving.fastpath import FastPath  # noqa: E402

from ncfctl.models import NCF, NCFSpec, load_model  # noqa: E402
from ncfctl.serving.bundle import fastpath_arrays  # noqa: E402


def build_model() -> NCF:
    if ARGS.model:
        return load_model(ARGS.model)
    spec = NCFSpec.from_layers(model_type="neumf", num_users=6040, num_items=3706, factors=32, layers=[128, 64, 32])
    torch.manual_seed(0)
    model = NCF(spec).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model


def export_onnx(model: NCF, path: Path) -> Path:
    pair = (torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    dynamic = {"user": {0: "n"}, "item": {0: "n"}, "score": {0: "n"}}
    torch.onnx.export(
        model, pair, str(path), dynamo=False, opset_version=12, input_names=["user", "item"],
        output_names=["score"], dynamic_axes=dynamic,
    )  # fmt: skip
    return path


def summary(seconds: list[float]) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6
    return {
        "median_us": float(np.median(us)),
        "p10_us": float(np.percentile(us, 10)),
        "p90_us": float(np.percentile(us, 90)),
    }


def main() -> int:
    torch.set_num_threads(ARGS.threads)
    model = build_model()
    num_users, num_items = model.spec.num_users, model.spec.num_items
    fast = FastPath(fastpath_arrays(model))
    rng = np.random.default_rng(0)
    seen = {u: np.sort(rng.choice(num_items, min(ARGS.seen, num_items - ARGS.k), replace=False)) for u in range(64)}
    all_items = torch.arange(num_items)
    all_items_np = np.arange(num_items, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = ARGS.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(export_onnx(model, Path(tmp) / "m.onnx")), options)

    def torch_eager(user: int) -> np.ndarray:
        with torch.inference_mode():
            scores = model(torch.full((num_items,), user, dtype=torch.long), all_items)
            scores[torch.from_numpy(seen[user % 64])] = -torch.inf
            return torch.topk(scores, ARGS.k).indices.numpy()

    def onnxruntime_all(user: int) -> np.ndarray:
        scores = session.run(None, {"user": np.full(num_items, user, dtype=np.int64), "item": all_items_np})[0]
        scores[seen[user % 64]] = -np.inf
        top = np.argpartition(scores, num_items - ARGS.k)[num_items - ARGS.k :]
        return top[np.argsort(-scores[top])]

    def fastpath(user: int) -> np.ndarray:
        return fast.top_k(user, ARGS.k, seen[user % 64])[0]

    contenders = {"torch_eager": torch_eager, "onnxruntime": onnxruntime_all, "fastpath": fastpath}
    timings: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(ARGS.warmup + ARGS.rounds):
        user = int(rng.integers(num_users))
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn(user)
            if round_ >= ARGS.warmup:
                timings[name].append(time.perf_counter() - start)

    identical, worst_gap = 0, 0.0
    check_users = rng.choice(num_users, min(ARGS.check_users, num_users), replace=False)
    for user in check_users:
        with torch.inference_mode():
            reference = model(torch.full((num_items,), int(user)), all_items).numpy()
        expected = np.lexsort((np.arange(num_items), -reference))[: ARGS.k]
        identical += fast.top_k(int(user), ARGS.k)[0].tolist() == expected.tolist()
        worst_gap = max(worst_gap, float(np.max(np.abs(fast.score_all(int(user)) - reference))))

    results = {name: summary(values) for name, values in timings.items()}
    torch_median = results["torch_eager"]["median_us"]
    for values in results.values():
        values["vs_torch_eager"] = round(values["median_us"] / torch_median, 3)
    report = {
        "model": ARGS.model or "ml-1m-shaped neumf (6040x3706, factors 32, layers 128,64,32)",
        "threads": ARGS.threads,
        "rounds": ARGS.rounds,
        "k": ARGS.k,
        "timings": results,
        "exactness": {
            "users_checked": int(len(check_users)),
            "identical_top_k": identical,
            "max_abs_score_diff": worst_gap,
        },
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }
    if ARGS.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"top-{ARGS.k} for one user, {report['model']}, {ARGS.threads} thread(s), {ARGS.rounds} rounds")
        for name, values in results.items():
            print(
                f"  {name:12s} median {values['median_us']:8.1f} us  p10 {values['p10_us']:8.1f}  "
                f"p90 {values['p90_us']:8.1f}  x{values['vs_torch_eager']:.3f} of torch eager"
            )
        exact = report["exactness"]
        print(
            f"  exactness: {exact['identical_top_k']}/{exact['users_checked']} users with identical top-{ARGS.k}, "
            f"max |score diff| {exact['max_abs_score_diff']:.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
