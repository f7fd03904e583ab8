"""Side-by-side latency of scoring runtimes on NCF's two real queries, in one process.

* ``pair``: one ``(user, item)`` pair, the latency floor of a request (framework overhead dominates);
* ``all_items``: one user against every item, the top-K query (arithmetic dominates).

Timings are interleaved across runtimes (:func:`ncfctl.bench.latency.interleaved_timings`) so a
busy neighbour on a shared host slows every runtime alike and the ratios stay honest.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ncfctl.bench.latency import LatencyStats, interleaved_timings, summarize
from ncfctl.export.runners import ScoreFn

QUERIES = ("pair", "all_items")
DISTINCT_USERS = 16  # inputs prepared ahead and cycled: no allocation inside the timed call


def _inputs(query: str, num_users: int, num_items: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, num_users, DISTINCT_USERS, dtype=np.int64)
    if query == "pair":
        items = rng.integers(0, num_items, DISTINCT_USERS, dtype=np.int64)
        return [(users[k : k + 1].copy(), items[k : k + 1].copy()) for k in range(DISTINCT_USERS)]
    all_items = np.arange(num_items, dtype=np.int64)
    return [(np.full(num_items, u, dtype=np.int64), all_items) for u in users]


def compare(
    runners: Mapping[str, ScoreFn],
    num_users: int,
    num_items: int,
    *,
    repeats: Mapping[str, int],
    warmup: int,
    seed: int = 0,
    budget_s: float | None = None,
    min_calls: int = 1,
) -> dict[str, dict[str, LatencyStats]]:
    """``{query: {runner name: latency}}`` for each query in ``repeats`` (``pair``/``all_items``).

    With ``budget_s`` a runner stops timing a query once its calls total that long (after
    ``min_calls``): scoring every item of a million-item catalogue takes seconds per call.
    """
    results: dict[str, dict[str, LatencyStats]] = {}
    for query, count in repeats.items():
        inputs = _inputs(query, num_users, num_items, seed)
        calls = {
            name: (lambda rep, fn=fn, inputs=inputs: fn(*inputs[rep % DISTINCT_USERS]))  # bound per runner
            for name, fn in runners.items()
        }
        samples = interleaved_timings(calls, warmup=warmup, repeats=count, budget_s=budget_s, min_calls=min_calls)
        results[query] = {name: summarize(times) for name, times in samples.items()}
    return results


def speedup(results: dict[str, dict[str, LatencyStats]], query: str, baseline: str, candidate: str) -> float:
    """How many times faster ``candidate`` is than ``baseline`` at the median."""
    return results[query][baseline].p50_ms / results[query][candidate].p50_ms
