"""Full-ranking metrics from served top-K answers equal ncfctl.evaluation's, and the timing helpers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ncfctl.bench.latency import MIN_TIMED_CALLS, interleaved_timings, summarize, throughput
from ncfctl.bench.quality import served_full_ranking, topk_recall
from ncfctl.bench.runners import top_k_unseen
from ncfctl.data.dataset import EvalSplit, InteractionData, Interactions
from ncfctl.evaluation import evaluate


def _rows(users, items) -> Interactions:
    n = len(users)
    return Interactions(
        np.asarray(users, np.int64), np.asarray(items, np.int64), np.ones(n, np.float32), np.zeros(n, np.int64)
    )


def _random_data(rng, num_users=40, num_items=60, held_per_user=1) -> InteractionData:
    """Random train/val/test without overlaps; ``held_per_user`` test rows per user (ratio-split style)."""
    train_u, train_i, val_u, val_i, test_u, test_i = [], [], [], [], [], []
    for user in range(num_users):
        items = rng.permutation(num_items)[: 8 + held_per_user]
        train_u += [user] * 7
        train_i += items[:7].tolist()
        val_u.append(user)
        val_i.append(int(items[7]))
        test_u += [user] * held_per_user
        test_i += items[8 : 8 + held_per_user].tolist()
    negatives = rng.integers(0, num_items, size=(len(test_u), 5))
    return InteractionData(
        num_users=num_users,
        num_items=num_items,
        train=_rows(train_u, train_i),
        val=EvalSplit(_rows(val_u, val_i), rng.integers(0, num_items, size=(len(val_u), 5))),
        test=EvalSplit(_rows(test_u, test_i), negatives),
        user_ids=np.array([f"u{u}" for u in range(num_users)]),
        item_ids=np.array([f"i{i}" for i in range(num_items)]),
    )


@pytest.mark.parametrize("held_per_user", [1, 3])
def test_served_full_ranking_matches_evaluation(held_per_user):
    rng = np.random.default_rng(held_per_user)
    data = _random_data(rng, held_per_user=held_per_user)
    scores = rng.normal(size=(data.num_users, data.num_items))  # continuous: no ties
    indptr, indices = data.seen_items(include_val=True)

    def top_k(user: int, k: int) -> np.ndarray:
        return top_k_unseen(scores[user], k, indices[indptr[user] : indptr[user + 1]])

    expected = evaluate(lambda u, i: scores[u, i], data, "test", k=5, full_ranking=True)
    served = served_full_ranking(top_k, data.test, data.num_items, 5)
    assert served == pytest.approx({key: expected[key] for key in served})
    assert set(served) == {"full_hr", "full_ndcg", "full_hr_se", "full_ndcg_se", "full_users"}
    assert 0 < served["full_hr"] < 1  # the case is not degenerate


def test_top_k_unseen_excludes_seen_and_orders_ties_by_index():
    scores = np.array([0.5, 0.9, 0.9, 0.1, 0.9])
    assert top_k_unseen(scores, 3, np.array([1])).tolist() == [2, 4, 0]
    assert top_k_unseen(scores, 10, np.array([0, 1, 2, 3])).tolist() == [4]


def test_summarize_and_throughput():
    stats = summarize(np.arange(1, 101) / 1000.0)  # 1..100 ms
    assert stats.p50_ms == pytest.approx(50.5)
    assert stats.p99_ms == pytest.approx(99.01)
    assert stats.n == 100
    assert throughput(64, [0.5, 0.5]) == pytest.approx(128.0)


def test_interleaved_timings_shuffle_each_round_and_skip_warmup():
    calls: list[tuple[str, int]] = []
    fns = {name: (lambda rep, name=name: calls.append((name, rep))) for name in "abcd"}
    samples = interleaved_timings(fns, warmup=2, repeats=30)
    assert {k: len(v) for k, v in samples.items()} == {name: 30 for name in "abcd"}
    assert [rep for _, rep in calls[:8]] == [0] * 4 + [1] * 4  # warm-up: untimed, in order
    rounds = [calls[8 + 4 * r : 12 + 4 * r] for r in range(30)]
    assert all(
        sorted(n for n, _ in rnd) == list("abcd") and {rep for _, rep in rnd} == {r + 2} for r, rnd in enumerate(rounds)
    )
    predecessors = {rnd[i - 1][0] for rnd in rounds for i in range(1, 4) if rnd[i][0] == "a"}
    assert len(predecessors) == 3  # "a" follows every other call at some point, not always the same one


def test_topk_recall_is_the_share_of_the_exact_top_k():
    class Fake:
        exact = False

        def top_k(self, user, k):
            return np.arange(k)

        def exact_top_k(self, user, k):
            return np.arange(k // 2, k // 2 + k)

    class Exact(Fake):
        exact = True

        def top_k(self, user, k):
            raise AssertionError("an exact variant is not asked")

    assert topk_recall(Fake(), np.arange(5), 10) == 0.5
    assert topk_recall(Exact(), np.arange(5), 10) == 1.0


def test_a_series_over_its_time_budget_stops_after_the_minimum_calls():
    fns = {"slow": lambda rep: time.sleep(0.002), "fast": lambda rep: None}
    samples = interleaved_timings(fns, warmup=0, repeats=60, budget_s=0.01)
    assert len(samples["slow"]) == MIN_TIMED_CALLS and len(samples["fast"]) == 60
