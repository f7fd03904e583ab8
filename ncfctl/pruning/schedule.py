"""How one pruning pass is split into steps: one-shot, or gradual (Zhu & Gupta 2017).

Zhu & Gupta ("To prune, or not to prune", 2017) raise sparsity along a cubic curve,
``s_t = s_f + (s_i - s_f) (1 - t/n)^3``, pruning fast while many redundant weights remain and
slowly near the target, with training in between so the network adapts before losing more.

Every rate here is relative to the weights (or units) still present when the pass starts, the
same convention as ``--rate``: a pass with ``rate`` r leaves ``1 - r`` of what it found, whether
in one step or ``n``, and passes compose as ``1 - (1 - a)(1 - b)``.
"""

from __future__ import annotations

from typing import Literal

Schedule = Literal["oneshot", "gradual"]
RATE_CONVENTION = (
    "rate = fraction of the weights (magnitude) or units (structured) still present in the input model; "
    "passes compose: total kept = (1 - a)(1 - b)"
)


def cubic_sparsities(final: float, steps: int, initial: float = 0.0) -> list[float]:
    """Target sparsity after each of ``steps`` steps (the last one equals ``final``)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]


def step_rates(rate: float, schedule: Schedule, steps: int) -> list[float]:
    """The fraction of the then-remaining weights each step removes; their product leaves ``1 - rate``."""
    if schedule == "oneshot":
        return [rate]
    rates, previous = [], 0.0
    for target in cubic_sparsities(rate, steps):
        rates.append(1 - (1 - target) / (1 - previous))
        previous = target
    return rates


def compose(previous_sparsity: float, rate: float) -> float:
    """Total sparsity after removing ``rate`` of what a model at ``previous_sparsity`` kept."""
    return 1 - (1 - previous_sparsity) * (1 - rate)
