"""Recommendation quality of each variant on the test split, through the path that variant serves with.

All metrics come from :mod:`ncfctl.evaluation` (same protocols, same tie rule as training):

* torch models: the test metrics their manifest recorded (:func:`recorded_quality`), measured
  by that same code when the model was made; measured here only when absent;
* bundles: :func:`~ncfctl.evaluation.evaluate` on the runner's pair scores (a
  bundle also hands over its fast path as ``all_items``, the code that answers top-K requests);
* a live deployment, and a bundle with ANN retrieval: the sampled protocol (or RMSE/MAE) through
  pair scores, and full ranking from the variant's own top-K answers (:func:`served_full_ranking`):
  scoring every (user, item) pair over HTTP would take minutes, and an ANN bundle's clients get
  the retrieved top-K, not the exact one. HR@K and NDCG@K depend only on the top K, so this is the
  same metric, computed from what clients actually receive.

:func:`topk_recall` compares each variant's top-K with the exact top-K of its own model.
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
    if (runner.runtime != "http" and runner.exact) or data.explicit:
        return evaluate(score_fn, data, "test", k=k, full_ranking=True)
    metrics = evaluate(score_fn, data, "test", k=k, full_ranking=False)
    metrics.update(served_full_ranking(runner.top_k, data.test, data.num_items, k, on_user))
    return metrics


def recall_users(data: InteractionData, count: int, seed: int) -> np.ndarray:
    """``count`` test users (all when fewer) drawn with ``seed``: the users ``topk_recall`` asks about."""
    users = np.unique(data.test.rows.users)
    if len(users) <= count:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=count, replace=False))


def topk_recall(runner: Runner, users: np.ndarray, k: int) -> float:
    """Mean share of the exact top-``k`` (same model, seen items excluded) in the variant's top-``k``.

    1.0 without asking for exact variants (they score every item); otherwise one exact ranking per
    user, e.g. ~65 ms each at 528k items, which is why ``bench.recall_users`` bounds the users.
    """
    if runner.exact:
        return 1.0
    shares = []
    for user in users.tolist():
        exact = runner.exact_top_k(user, k)
        shares.append(len(np.intersect1d(runner.top_k(user, k), exact)) / max(1, len(exact)))
    return float(np.mean(shares))
