"""Latency and throughput of several runners measured side by side in one process.

A shared 2-core machine drifts: another engineer's job can slow everything by 2-10x for a few
seconds. Timing variant A for 50 repetitions and then variant B would hand that drift to
whichever ran second, so repetitions are interleaved (rep 1 of every variant, then rep 2, ...)
in a freshly shuffled order each round: each variant sees the same mix of quiet and busy moments
and the ratios between them stay honest. Shuffling, not rotating: a rotation keeps the cyclic
order, so a call would always follow the same neighbour (measured here: the one-pair call right
after an HTTP round trip ran 2x slower than the same model after a torch call, from the cache and
scheduler state that neighbour leaves). Medians (p50) and p99 come from per-call ``perf_counter``
samples after a warm-up that is not timed.

A series may also stop early once its timed calls add up to ``budget_s`` (after at least
``MIN_TIMED_CALLS``): at a million items an exact eager top-K takes ~0.5 s, and 300 of them would
dominate the whole benchmark. The other series keep interleaving among themselves; every
summary reports how many calls it holds (``n``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

MIN_TIMED_CALLS = 20  # a series stopped by the time budget still has this many samples


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency summary in milliseconds; ``n`` timed calls."""

    p50_ms: float
    p99_ms: float
    mean_ms: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(seconds: list[float] | np.ndarray) -> LatencyStats:
    """p50/p99/mean of per-call durations given in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no latency samples")
    return LatencyStats(
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        n=int(ms.size),
    )


def interleaved_timings(
    calls: Mapping[str, Callable[[int], object]],
    *,
    warmup: int,
    repeats: int,
    on_round: Callable[[int], None] | None = None,
    seed: int = 0,
    budget_s: float | None = None,
    min_calls: int = MIN_TIMED_CALLS,
) -> dict[str, list[float]]:
    """Call every ``calls[name](rep)`` ``warmup`` times untimed, then ``repeats`` timed rounds.

    ``rep`` lets a call pick a different input each time (e.g. a different user), so a cache
    never sees the same request twice in a row. Each timed round runs every call once, in an
    order shuffled with ``seed``; with ``budget_s`` a series sits out the remaining rounds once
    its timed calls total that much (and number at least ``min_calls``). Returns per-call
    durations in seconds.
    """
    names = list(calls)
    for rep in range(warmup):
        for name in names:
            calls[name](rep)
    samples: dict[str, list[float]] = {name: [] for name in names}
    rng = np.random.default_rng(seed)
    spent = dict.fromkeys(names, 0.0)
    for rep in range(repeats):
        for index in rng.permutation(len(names)):
            name = names[index]
            if budget_s is not None and spent[name] >= budget_s and len(samples[name]) >= min_calls:
                continue
            call = calls[name]
            start = time.perf_counter()
            call(warmup + rep)
            samples[name].append(time.perf_counter() - start)
            spent[name] += samples[name][-1]
        if on_round is not None:
            on_round(rep + 1)
    return samples


def throughput(batch_size: int, seconds: list[float]) -> float:
    """Sustained samples per second over all timed calls of one batch size (total work / total time)."""
    total = float(np.sum(seconds))
    return batch_size * len(seconds) / total if total > 0 else float("nan")
