"""``python -m ncfctl.bench.probe SPEC_JSON``: load one variant, serve the benchmark's queries, print peak RSS.

Run by :mod:`ncfctl.bench.memory` in a fresh interpreter so the number is what a process serving
only that model needs: the runtime library it imports, the weights it holds and the buffers its
queries allocate, and nothing the benchmark process itself has loaded. The spec is the runner
description of :func:`ncfctl.bench.runners.build_runner` plus ``num_users``, ``num_items``,
``rounds`` and ``k``. Prints one JSON object: ``{"peak_rss_mb": ..., "start_rss_mb": ...}``.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ncfctl.bench.memory import process_peak_rss_mb
from ncfctl.bench.runners import build_runner

BATCH = 64


def _peak_rss_mb() -> float:
    """``VmHWM``, not ``ru_maxrss``: the latter survives ``exec`` and can report the forking parent's peak."""
    peak = process_peak_rss_mb(os.getpid())
    if peak is None:
        raise RuntimeError("cannot read /proc/self/status (peak RSS needs Linux procfs)")
    return peak


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    start = _peak_rss_mb()
    runner = build_runner(spec)
    rng = np.random.default_rng(0)
    users = rng.integers(0, spec["num_users"], size=BATCH, dtype=np.int64)
    items = rng.integers(0, spec["num_items"], size=BATCH, dtype=np.int64)
    for rep in range(int(spec["rounds"])):
        runner.score(users[rep % BATCH : rep % BATCH + 1], items[rep % BATCH : rep % BATCH + 1])
        runner.score(users, items)
        runner.top_k(int(users[rep % BATCH]), int(spec["k"]))
    runner.close()
    print(json.dumps({"peak_rss_mb": _peak_rss_mb(), "start_rss_mb": start}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
