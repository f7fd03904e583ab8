"""The local deployment lifecycle, timed: build context, deploy until /ping, invoke, stop.

What a user waits for around the server (the server's own throughput is ``load_test.py``): on the
default ML-1M-shaped NeuMF (6,040 users, 3,706 items, factors 32, layers 128,64,32; random
weights and ~165 seen items per user, so the served cost matches a trained model's):

* ``build_context_s``: ``build_image`` with no Docker engine (copy container/ + bundle);
* ``deploy_ready_s``: ``deploy --backend local`` from spawn to ``GET /ping`` = 200 (model load,
  warm-up and fast-path precompute included);
* ``invoke_*_ms``: client round trips through ``ncfctl.serving.invoke.invoke`` (one keep-alive
  connection, requests in sequence): ``pair`` and ``top10``; p50 and p99;
* ``cli_invoke_s``: wall time of one ``ncfctl invoke --user U --top-k 10`` subprocess (Python
  start-up + imports + one request: what a shell user feels);
* ``stop_s``: ``deploy stop`` from SIGTERM to the process gone (graceful drain).

Usage::

    python benchmarks/bench_deploy_local.py            # 500 requests per form
    python benchmarks/bench_deploy_local.py --requests 2000 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from synthetic_bundle import ITEMS, MODEL, USERS, write_synthetic_bundle

from ncfctl.config import load_config
from ncfctl.serving.build_image import build_image
from ncfctl.serving.deploy import deploy, stop
from ncfctl.serving.invoke import invoke
from ncfctl.workspace import Workspace


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="timed requests per form")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args()


def write_compiled(workspace: Workspace) -> None:
    """The default synthetic bundle as a ``compiled`` artifact (what ``ncfctl neo compile`` commits)."""
    with workspace.create("compiled", info={"runtime": "onnxruntime"}) as writer:
        write_synthetic_bundle(writer.path)


def percentiles(latencies: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(latencies, 50)), 3), "p99": round(float(np.percentile(latencies, 99)), 3)}


def main() -> None:
    args = parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp:
        workspace = Workspace(Path(tmp) / "output")
        overrides = {"workdir": str(workspace.root), "image.backend": "none", "deploy.backend": "local"}
        config = load_config(overrides=overrides)
        write_compiled(workspace)
        start = time.perf_counter()
        build_image(config, workspace)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        deployment = deploy(config, workspace)
        ready_s = time.perf_counter() - start
        try:
            users = rng.integers(1, USERS + 1, args.requests)
            items = rng.integers(1, ITEMS + 1, args.requests)
            results = {}
            for form, body in (
                ("pair", lambda n: {"user_id": int(users[n]), "item_id": int(items[n])}),
                ("top10", lambda n: {"user_id": int(users[n]), "top_k": 10}),
            ):
                _, replies = invoke(config, workspace, [body(n) for n in range(args.requests)])
                results[f"invoke_{form}_ms"] = percentiles([r.latency_ms for r in replies[10:]])  # skip connect
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "ncfctl", "--workdir", str(workspace.root), "invoke", "--user", "1", "--top-k",
                 "10", "--json"], check=True, capture_output=True,
            )  # fmt: skip
            cli_s = time.perf_counter() - start
        finally:
            start = time.perf_counter()
            stopped = stop(config, workspace, deployment.id)
            stop_s = time.perf_counter() - start
    report = {
        "model": f"{MODEL}, {USERS} users x {ITEMS} items",
        "build_context_s": round(build_s, 3),
        "deploy_ready_s": round(ready_s, 3),
        **results,
        "cli_invoke_s": round(cli_s, 3),
        "stop_s": round(stop_s, 3),
        "stop": stopped["stop"],
        "requests_per_form": args.requests,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>18}: {value}")


if __name__ == "__main__":
    main()
