"""How fast `ncfctl data` is, and how much memory it takes, on the two sizes that matter.

* ``synthetic``: the default dataset (ML-1M shape, ~1M interactions), generated and prepared:
  what ``ncfctl train`` pays on a fresh workspace.
* ``csv-20m``: a generated 20M-row ``ratings.csv`` in the ML-20M layout (138,493 users,
  26,744 items, long-tail popularity, half-star ratings, ~10% repeated pairs), prepared with
  ``--dataset ml-20m --source FILE``: parse, dedupe, split and 99 negatives per user.

Each case runs ``prepare_dataset`` in a fresh child process, so the reported peak memory (the
child's max RSS) is that preparation alone; wall time and the service's per-stage timings come
from the same run. Usage::

    python benchmarks/bench_data.py                 # both cases
    python benchmarks/bench_data.py --rows 2000000  # a smaller CSV
    python benchmarks/bench_data.py --cases synthetic --json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ML20M_USERS, ML20M_ITEMS = 138_493, 26_744


def write_ratings_csv(path: Path, rows: int, seed: int = 0) -> None:
    """An ML-20M-like ratings.csv, generated in blocks (header ``userId,movieId,rating,timestamp``)."""
    rng = np.random.default_rng(seed)
    item_p = rng.lognormal(0, 1.8, ML20M_ITEMS)
    item_p /= item_p.sum()
    user_p = rng.lognormal(0, 1.2, ML20M_USERS)
    user_p /= user_p.sum()
    block = 2_000_000
    with pa.OSFile(str(path), "wb") as sink:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            table = pa.table(
                {
                    "userId": rng.choice(ML20M_USERS, n, p=user_p) + 1,
                    "movieId": rng.choice(ML20M_ITEMS, n, p=item_p) + 1,
                    "rating": rng.integers(1, 11, n) / 2,
                    "timestamp": rng.integers(789_652_009, 1_427_784_002, n),
                }
            )
            pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=start == 0, quoting_style="none"))


def child(case: str, source: str | None) -> None:
    """Run one preparation in this (fresh) process and print its measurements as JSON."""
    from ncfctl.config import load_config
    from ncfctl.data.prepare import prepare_dataset
    from ncfctl.workspace import Workspace

    overrides = {"data.dataset": "ml-20m", "data.source": source} if case == "csv-20m" else {}
    config = load_config(overrides=overrides, environ={})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        artifact = prepare_dataset(config, Workspace(tmp))
        seconds = time.perf_counter() - started
    metrics = artifact.manifest.metrics
    usage = resource.getrusage(resource.RUSAGE_SELF)
    peak_mib = usage.ru_maxrss / 1024  # Linux: KiB
    cpu = usage.ru_utime + usage.ru_stime  # includes imports; wall time suffers on a busy machine, CPU less
    print(json.dumps({"case": case, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mib": peak_mib, **metrics}))


def run_case(case: str, source: Path | None) -> dict:
    args = [sys.executable, __file__, "--child", case] + ([str(source)] if source else [])
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["synthetic", "csv-20m"], choices=["synthetic", "csv-20m"])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows of the generated ratings.csv")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1] if len(args.child) > 1 else None)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            source = None
            if case == "csv-20m":
                source = Path(tmp) / "ratings.csv"
                started = time.perf_counter()
                write_ratings_csv(source, args.rows)
                print(
                    f"generated {args.rows:,}-row ratings.csv ({source.stat().st_size / 2**20:,.0f} MiB) "
                    f"in {time.perf_counter() - started:.1f}s",
                    file=sys.stderr,
                )
            results.append(run_case(case, source))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'case':<10} {'rows read':>12} {'users':>8} {'items':>7} {'wall s':>7} {'CPU s':>6} {'peak RSS MiB':>13}")
    for r in results:
        print(
            f"{r['case']:<10} {r['raw_interactions']:>12,} {r['users']:>8,} {r['items']:>7,} "
            f"{r['seconds']:>7.1f} {r['cpu_seconds']:>6.1f} {r['peak_rss_mib']:>13,.0f}  stages: {r['stage_seconds']}"
        )


if __name__ == "__main__":
    main()
