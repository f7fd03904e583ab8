"""Recommendation quality of each variant on the test split, through the path that variant serves with.

All metrics come from :mod:`ncfctl.evaluation` (same protocols, same tie rule as training):

* torch models: the test metrics their manifest recorded (:func:`recorded_quality`), measured
  by that same code when the model was made; measured here only when absent;
* bundles: :func:`~ncfctl.evaluation.evaluate` on the runner's pair scores (a
  bundle also hands over its fast path as ``all_items``, the code that answers top-K requests);
* a live deployment: the sampled protocol (or RMSE/MAE) through ``instances`` requests, and full
  ranking from the endpoint's own top-K answers (:func:`served_full_ranking`), because scoring
  every (user, item) pair over HTTP would take minutes. HR@K and NDCG@K depend only on the top K,
  so this is the same metric, computed from what clients actually receive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ncfctl.bench.runners import Runner
from ncfctl.data.dataset import EvalSplit, InteractionData
from ncfctl.evaluation import evaluate, full_ranking_metrics, full_ranking_rows


class RunnerScoreFn:
    """A runner as an evaluation ``score_fn`` (``all_items`` too when the runner has one)."""

    def __init__(self, runner: Runner):
        self.runner = runner
        if hasattr(runner, "all_items"):
            self.all_items = runner.all_items

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.runner.score(users, items)


def served_full_ranking(
    top_k: Callable[[int, int], np.ndarray],
    split: EvalSplit,
    num_items: int,
    k: int,
    on_user: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Full-ranking metrics (:func:`~ncfctl.evaluation.full_ranking_metrics`) from top-K answers that
    already exclude each user's seen items, on the same rows (and user sample) as ``evaluate``.

    As in :func:`ncfctl.evaluation.full_ranks`, a user's other held-out items do not compete: the
    request asks for ``k`` plus that many extra items and drops them before ranking.
    """
    rows = split.rows
    row_index, ranked_users = full_ranking_rows(split, num_items)
    ranks = np.full(len(rows), k + 1, dtype=np.int64)  # anything above k is a miss for HR@k/NDCG@k
    order = row_index[np.argsort(rows.users[row_index], kind="stable")]
    users, starts = np.unique(rows.users[order], return_index=True)
    bounds = np.append(starts, len(order))
    for user, lo, hi in zip(users.tolist(), bounds[:-1], bounds[1:], strict=True):
        row_ids = order[lo:hi]
        held = rows.items[row_ids]
        answer = top_k(user, k + len(row_ids) - 1)
        for row, item in zip(row_ids, held, strict=True):
            competitors = answer[(answer == item) | ~np.isin(answer, held)]
            position = np.flatnonzero(competitors == item)
            if len(position) and position[0] < k:
                ranks[row] = position[0] + 1
        if on_user is not None:
            on_user()
    return full_ranking_metrics(ranks[row_index], ranked_users, k)


def recorded_quality(metrics: dict[str, Any], explicit: bool, k: int) -> dict[str, float] | None:
    """The test metrics a model artifact's manifest recorded, if complete and at this ``k``.

    Training, pruning and fine-tuning measure them with the same :func:`~ncfctl.evaluation.evaluate`
    on the same test split, and eager PyTorch is what the bench would run again: re-scoring every
    (user, item) pair of a full ranking three times costs minutes for identical numbers.
    """
    keys = ("rmse", "mae") if explicit else ("hr", "ndcg", "full_hr", "full_ndcg")
    if not explicit and metrics.get("k") != k:
        return None
    if not all(isinstance(metrics.get(key), int | float) for key in keys):
        return None
    return {key: float(metrics[key]) for key in keys}


def measure_quality(
    runner: Runner, data: InteractionData, k: int, on_user: Callable[[], None] | None = None
) -> dict[str, float]:
    """Test-split metrics of one variant: hr/ndcg/full_hr/full_ndcg/k, or rmse/mae (explicit)."""
    score_fn = RunnerScoreFn(runner)
    if runner.runtime != "http" or data.explicit:
        return evaluate(score_fn, data, "test", k=k, full_ranking=True)
    metrics = evaluate(score_fn, data, "test", k=k, full_ranking=False)
    metrics.update(served_full_ranking(runner.top_k, data.test, data.num_items, k, on_user))
    return metrics
