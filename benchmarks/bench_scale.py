"""Every stage at three catalogue sizes: what data, training, evaluation, compile and serving cost.

Shapes (synthetic generator; ``--shapes`` picks some):

* ``1x``: the default, 6,040 users x 3,706 items x 1M interactions (ML-1M shaped);
* ``4x``, ``8x``, ``16x``: users and items times 2, ~2.8, 4 and interactions times 4, 8, 16
  (``16x`` = 96,640 users x 59,242 items x 16M interactions);
* ``1m``: the goal's shape, 20,000 users x 1,000,000 items x 2M interactions (~528k items survive
  cleaning: the rest never get an interaction).

Each shape runs the real CLI in a throwaway work directory, one subprocess per step, measuring
its wall time and peak RSS (``wait4``): ``ncfctl data``; ``ncfctl train --epochs 1`` (samples/s,
the final test evaluation's seconds); ``ncfctl neo compile --backend local`` twice, with
``serving.retrieval`` exact and ann (time, bundle size on disk); ``ncfctl bench --compare
<exact>,<ann>`` (top-10 p50 of both on one thread, the ANN bundle's recall@10 against the exact
top-10 over 500 test users); and the real server (``python -m ncf_serving serve``) on each bundle
until ``/ping`` answers, then 100 top-10 requests, for its peak RSS (``VmHWM``).

Usage::

    python benchmarks/bench_scale.py                            # 1x, 16x and 1m, every stage (~1 h here)
    python benchmarks/bench_scale.py --shapes 1x,1m --json out.json
    python benchmarks/bench_scale.py --stages train --device cuda --threads 16   # GPU: data + training only
    python benchmarks/bench_scale.py --optimizers               # ms per step of each optimizer per shape

``--stages train`` still prepares the data it needs (reported too). ``--optimizers`` times one
training step of dense Adam, ``torch.optim.SparseAdam`` and ncfctl's lazy Adam on each shape's
table sizes with random batches (no data preparation), interleaved, as in
:mod:`ncfctl.training.optim`'s table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SHAPES = {
    "1x": (6_040, 3_706, 1_000_000),
    "4x": (24_160, 14_824, 4_000_000),
    "8x": (48_320, 29_648, 8_000_000),
    "16x": (96_640, 59_242, 16_000_000),
    "1m": (20_000, 1_000_000, 2_000_000),
}
STAGES = ("data", "train", "compile", "bench", "serve")
SERVER_REQUESTS = 100
PING_TIMEOUT_S = 600


@dataclass
class Step:
    seconds: float
    peak_rss_mb: float
    output: dict[str, Any]


def run(args: list[str], env: dict[str, str]) -> Step:
    """``ncfctl ARGS --json`` as a child process: its wall time, peak RSS and JSON document."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncfctl", *args, "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"ncfctl {' '.join(args)} exited {proc.returncode}")
    return Step(time.perf_counter() - started, usage.ru_maxrss / 1024, json.loads(stdout))


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def server_peak_rss_mb(bundle: Path, env: dict[str, str]) -> dict[str, float]:
    """Serve ``bundle`` with the real server, send top-10 requests, read its peak RSS, stop it."""
    from ncf_serving.bundle import load_bundle

    from ncfctl.bench.memory import process_peak_rss_mb
    from ncfctl.serving.deploy_local import free_port, server_command, wait_ready

    port = free_port("127.0.0.1")
    log_path = bundle.parent / f"{bundle.name}-server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            server_command("127.0.0.1", port, bundle), env={**env, "NCF_THREADS": "1"}, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        ready = wait_ready(url, server, log_path, PING_TIMEOUT_S)
        users = load_bundle(bundle).user_ids[:SERVER_REQUESTS]
        with httpx.Client(base_url=url, timeout=30) as client:
            for user in users.tolist():
                client.post("/invocations", json={"user_id": user, "top_k": 10}).raise_for_status()
        return {"ready_seconds": ready, "peak_rss_mb": process_peak_rss_mb(server.pid) or float("nan")}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def measure_shape(name: str, stages: set[str], device: str, threads: int, keep: bool) -> dict[str, Any]:
    users, items, interactions = SHAPES[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"ncfctl-scale-{name}-"))
    env = {
        **os.environ,
        "NCFCTL_WORKDIR": str(workdir),
        "NCFCTL_DATA__SYNTHETIC__USERS": str(users),
        "NCFCTL_DATA__SYNTHETIC__ITEMS": str(items),
        "NCFCTL_DATA__SYNTHETIC__INTERACTIONS": str(interactions),
        "NCFCTL_TRAIN__THREADS": str(threads),
        "NCFCTL_TRAIN__DEVICE": device,
    }
    out: dict[str, Any] = {"shape": name, "users": users, "items": items, "interactions": interactions}
    try:
        data = run(["data"], env)
        out.update(data_s=data.seconds, data_rss_mb=data.peak_rss_mb, items_kept=data.output["metrics"]["items"])
        print(f"[{name}] data {data.seconds:.1f} s, {data.peak_rss_mb:.0f} MB", file=sys.stderr)
        if not stages & {"train", "compile", "bench", "serve"}:
            return out
        train = run(["train", "--epochs", "1"], env)
        record = train.output["history"][0]
        out.update(
            train_s=train.seconds,
            train_rss_mb=train.peak_rss_mb,
            samples_per_s=record["samples_per_s"],
            eval_s=train.output.get("test_seconds"),
            full_hr=train.output["metrics"].get("full_hr"),
            full_hr_se=train.output["metrics"].get("full_hr_se"),
            full_users=train.output["metrics"].get("full_users"),
            hr=train.output["metrics"].get("hr"),
            popularity_hr=train.output["baseline"].get("hr"),
        )
        print(f"[{name}] train {train.seconds:.1f} s, {record['samples_per_s']:,.0f} samples/s", file=sys.stderr)
        if not stages & {"compile", "bench", "serve"}:
            return out
        bundles = {}
        for retrieval in ("exact", "ann"):
            step = run(["neo", "compile", "--backend", "local"], {**env, "NCFCTL_SERVING__RETRIEVAL": retrieval})
            bundles[retrieval] = Path(step.output["path"])
            out[f"compile_{retrieval}_s"] = step.seconds
            out[f"bundle_{retrieval}_mb"] = folder_mb(bundles[retrieval])
            print(f"[{name}] compile {retrieval} {step.seconds:.1f} s", file=sys.stderr)
        if "bench" in stages:
            compare = ",".join(step_path.name for step_path in bundles.values())
            bench = run(["bench", "--compare", compare], env)
            rows = {("ann" if r["id"] == bundles["ann"].name else "exact"): r for r in bench.output["results"]["rows"]}
            out.update(
                bench_s=bench.seconds,
                topk_p50_exact_ms=rows["exact"]["topk_p50_ms"],
                topk_p50_ann_ms=rows["ann"]["topk_p50_ms"],
                recall_at_10=rows["ann"]["topk_recall"],
                recall_users=rows["ann"]["recall_users"],
            )
            print(f"[{name}] bench {bench.seconds:.1f} s", file=sys.stderr)
        if "serve" in stages:
            for retrieval, bundle in bundles.items():
                served = server_peak_rss_mb(bundle, env)
                out[f"server_{retrieval}_rss_mb"] = served["peak_rss_mb"]
                out[f"server_{retrieval}_ready_s"] = served["ready_seconds"]
        return out
    finally:
        if keep:
            print(f"[{name}] kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def optimizer_steps(shapes: list[str], rounds: int = 30) -> dict[str, dict[str, float]]:
    """Median ms per training step (batch 4,096, default NeuMF) per optimizer, interleaved per shape."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from ncfctl.models import NCF, NCFSpec
    from ncfctl.training.optim import make_optimizer

    torch.set_num_threads(1)
    out = {}
    for name in shapes:
        users, items, _ = SHAPES[name]
        items = min(items, 528_814)  # what survives cleaning at the 1m shape
        steps = {}
        for optimizer in ("adam", "sparse-adam", "lazy-adam"):
            torch.manual_seed(0)
            spec = NCFSpec.from_layers(
                model_type="neumf", num_users=users, num_items=items, factors=32, layers=[128, 64, 32]
            )
            model = NCF(spec)
            if optimizer == "sparse-adam":
                make_optimizer(model, "lazy-adam", 1e-3, 0.0, torch.device("cpu"))  # sparse embedding gradients
                tables = [
                    p for n, p in model.named_parameters() if n.endswith("_user.weight") or n.endswith("_item.weight")
                ]
                others = [p for p in model.parameters() if all(p is not t for t in tables)]
                pair = (torch.optim.SparseAdam(tables, lr=1e-3), torch.optim.Adam(others, lr=1e-3))
            else:
                pair = (make_optimizer(model, optimizer, 1e-3, 0.0, torch.device("cpu")),)
            steps[optimizer] = (model, pair)
        generator = torch.Generator().manual_seed(0)
        times: dict[str, list[float]] = {key: [] for key in steps}
        for round_ in range(rounds + 3):
            user = torch.randint(0, users, (4096,), generator=generator, dtype=torch.int32)
            item = torch.randint(0, items, (4096,), generator=generator, dtype=torch.int32)
            target = (torch.rand(4096, generator=generator) < 0.2).float()
            for key, (model, optimizers) in steps.items():
                started = time.perf_counter()
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                F.binary_cross_entropy_with_logits(model(user, item), target).backward()
                for optimizer in optimizers:
                    optimizer.step()
                if round_ >= 3:
                    times[key].append(time.perf_counter() - started)
        out[name] = {key: float(np.median(values) * 1e3) for key, values in times.items()}
        print(f"[{name}] ms/step " + ", ".join(f"{k} {v:.1f}" for k, v in out[name].items()), file=sys.stderr)
        del steps
    return out


COLUMNS = [
    ("data_s", "data s", ".1f"),
    ("data_rss_mb", "data RSS MB", ".0f"),
    ("items_kept", "items", ","),
    ("samples_per_s", "train samples/s", ",.0f"),
    ("train_rss_mb", "train RSS MB", ".0f"),
    ("eval_s", "test eval s", ".1f"),
    ("compile_exact_s", "compile s (exact)", ".1f"),
    ("compile_ann_s", "compile s (ann)", ".1f"),
    ("bundle_exact_mb", "bundle MB (exact)", ".0f"),
    ("bundle_ann_mb", "bundle MB (ann)", ".0f"),
    ("server_exact_rss_mb", "server RSS MB (exact)", ".0f"),
    ("server_ann_rss_mb", "server RSS MB (ann)", ".0f"),
    ("topk_p50_exact_ms", "top-10 p50 ms exact", ".3f"),
    ("topk_p50_ann_ms", "top-10 p50 ms ann", ".3f"),
    ("recall_at_10", "recall@10 (ann)", ".3f"),
]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per measurement, one column per shape."""
    lines = ["| | " + " | ".join(r["shape"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for key, label, fmt in COLUMNS:
        if any(key in r for r in rows):
            cells = [format(r[key], fmt) if r.get(key) is not None else "" for r in rows]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1x,16x,1m", help="comma list of " + ", ".join(SHAPES))  # 4x, 8x on request
    parser.add_argument("--stages", default=",".join(STAGES), help="comma list of " + ", ".join(STAGES))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="training device")
    parser.add_argument("--threads", type=int, default=1, help="training threads (train.threads)")
    parser.add_argument("--keep", action="store_true", help="keep each shape's work directory")
    parser.add_argument("--optimizers", action="store_true", help="time one step per optimizer instead")
    parser.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    args = parser.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    unknown = [s for s in shapes if s not in SHAPES] + sorted(stages - set(STAGES))
    if unknown:
        parser.error(f"unknown shape or stage: {', '.join(unknown)}")
    if args.optimizers:
        result: Any = optimizer_steps(shapes)
        print(json.dumps(result, indent=2))
    else:
        result = [measure_shape(s, stages, args.device, args.threads, args.keep) for s in shapes]
        print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
