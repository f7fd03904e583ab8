"""HR/NDCG (sampled and full ranking) and RMSE/MAE against hand-computed cases and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ncfctl.data.dataset import EvalSplit, InteractionData, Interactions
from ncfctl.errors import NcfError
from ncfctl.evaluation import evaluate, popularity_score_fn, torch_score_fn
from ncfctl.models import NCF, NCFSpec

torch.set_num_threads(1)


def rows(pairs, ratings=None) -> Interactions:
    users = np.array([u for u, _ in pairs], dtype=np.int64)
    items = np.array([i for _, i in pairs], dtype=np.int64)
    rated = np.ones(len(pairs), np.float32) if ratings is None else np.array(ratings, np.float32)
    return Interactions(users, items, rated, np.zeros(len(pairs), np.int64))


def make_data(num_users, num_items, train, val, test, test_negatives, val_negatives=None, explicit=False, ratings=None):
    val_negatives = test_negatives if val_negatives is None else val_negatives
    return InteractionData(
        num_users=num_users,
        num_items=num_items,
        train=rows(train),
        val=EvalSplit(rows(val), np.array(val_negatives, dtype=np.int64).reshape(len(val), -1)),
        test=EvalSplit(rows(test, ratings), np.array(test_negatives, dtype=np.int64).reshape(len(test), -1)),
        user_ids=np.array([str(u) for u in range(num_users)]),
        item_ids=np.array([str(i) for i in range(num_items)]),
        explicit=explicit,
    )


def table_fn(matrix):
    """A score function reading a fixed user x item table (no ``all_items``: the pair path)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return lambda users, items: matrix[users, items]


# user 0: train {0}, val {5}, test 1; user 1: train {3}, val {4}, test 0
SCORES = [
    [9.0, 0.5, 0.9, 0.1, 0.5, 10.0],
    [1.0, 0.2, 0.3, 5.0, 0.4, 0.0],
]
DATA = make_data(
    2, 6, train=[(0, 0), (1, 3)], val=[(0, 5), (1, 4)], test=[(0, 1), (1, 0)], test_negatives=[[2, 3, 4], [1, 2, 5]]
)


def test_sampled_metrics_hand_computed():
    # user 0: negatives 2 (0.9 > 0.5) and 4 (tie at 0.5) count -> rank 3; user 1: rank 1
    m3 = evaluate(table_fn(SCORES), DATA, k=3, full_ranking=False)
    assert m3 == {"hr": 1.0, "ndcg": pytest.approx((1 / math.log2(4) + 1.0) / 2), "k": 3}
    m2 = evaluate(table_fn(SCORES), DATA, k=2, full_ranking=False)
    assert (m2["hr"], m2["ndcg"]) == (0.5, 0.5)


def test_full_ranking_excludes_known_items_but_counts_ties():
    # user 0 competes with items 2, 3, 4 (0 is train, 5 is val): 0.9 and the 0.5 tie -> rank 3
    # user 1 competes with 1, 2, 5 (3 train, 4 val): nothing reaches 1.0 -> rank 1
    metrics = evaluate(table_fn(SCORES), DATA, k=2)
    assert (metrics["full_hr"], metrics["full_ndcg"]) == (0.5, 0.5)
    assert evaluate(table_fn(SCORES), DATA, k=3)["full_ndcg"] == pytest.approx(0.75)


def test_constant_and_nan_scores_rank_last():
    constant = evaluate(lambda u, i: np.zeros(len(u)), DATA, k=3)
    assert constant["hr"] == constant["full_hr"] == 0.0  # 3 negatives tie -> rank 4 > k
    nan = evaluate(lambda u, i: np.where(i == 1, np.nan, 0.0), DATA, k=3, full_ranking=False)
    assert nan["hr"] == 0.0  # a NaN positive ranks behind everything; a NaN negative beats the positive
    assert evaluate(lambda u, i: np.full(len(u), np.nan), DATA, k=3)["full_hr"] == 0.0


def test_other_held_out_items_of_the_user_do_not_compete():
    # user 0 has two test rows (ratio split): items 1 and 2; item 2 must not count against item 1
    data = make_data(1, 5, train=[(0, 0)], val=[(0, 4)], test=[(0, 1), (0, 2)], test_negatives=[[3], [3]])
    metrics = evaluate(table_fn([[0.0, 0.5, 0.9, 0.1, 0.0]]), data, k=1)
    assert metrics["full_hr"] == 1.0


def test_explicit_metrics():
    data = make_data(
        2, 3, train=[(0, 0), (1, 1)], val=[(0, 1), (1, 2)], test=[(0, 2), (1, 0)], test_negatives=[[1], [2]],
        explicit=True, ratings=[4.0, 2.0],
    )  # fmt: skip
    metrics = evaluate(lambda u, i: np.array([3.0, 4.0])[: len(u)], data)
    assert metrics == {"rmse": pytest.approx(math.sqrt((1 + 4) / 2)), "mae": pytest.approx(1.5)}


def test_popularity_baseline_counts_training_interactions():
    data = make_data(3, 4, train=[(0, 2), (1, 2), (2, 1)], val=[(0, 0)], test=[(0, 3)], test_negatives=[[0]])
    scores = popularity_score_fn(data)(np.array([0, 0, 0]), np.array([0, 1, 2]))
    assert scores.tolist() == [0.0, 1.0, 2.0]


def test_bad_requests_fail_with_one_line():
    with pytest.raises(NcfError, match="split must be"):
        evaluate(table_fn(SCORES), DATA, split="train")
    with pytest.raises(NcfError, match="returned 1 scores"):
        evaluate(lambda u, i: np.zeros(1), DATA, k=3)


@pytest.mark.parametrize("model_type", ["gmf", "mlp", "neumf"])
def test_torch_all_items_matches_pair_scoring(model_type):
    torch.manual_seed(0)
    spec = NCFSpec.from_layers(
        model_type=model_type, num_users=7, num_items=13, factors=4, layers=[8, 6, 3], dropout=0.3
    )
    model = NCF(spec).train()  # dropout on: scoring must switch to eval mode and back
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.5)
    scorer = torch_score_fn(model)
    users = np.array([0, 3, 6])
    pairs = scorer(np.repeat(users, 13), np.tile(np.arange(13), 3)).reshape(3, 13)
    np.testing.assert_allclose(scorer.all_items(users), pairs, rtol=1e-5, atol=1e-5)
    assert model.training


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_ranks_match_brute_force(draw):
    """Integer scores (many ties) on random data: vectorised ranks equal a per-row Python loop."""
    num_users, num_items, k = draw.draw(st.integers(1, 4)), draw.draw(st.integers(4, 9)), draw.draw(st.integers(1, 4))
    rng = np.random.default_rng(draw.draw(st.integers(0, 2**16)))
    scores = rng.integers(0, 4, size=(num_users, num_items)).astype(float)
    train, val, test, negatives = [], [], [], []
    for u in range(num_users):
        items = rng.permutation(num_items)
        train += [(u, int(i)) for i in items[:2]]
        val.append((u, int(items[2])))
        test.append((u, int(items[3])))
        negatives.append(rng.choice(num_items, size=4).tolist())  # 4 >= k: HR@k is not 1.0 by construction
    data = make_data(num_users, num_items, train, val, test, negatives)
    got = evaluate(table_fn(scores), data, k=k)

    def brute(rank_lists):
        ranks = [1 + sum(c >= p for c in cands) for p, cands in rank_lists]
        return np.mean([r <= k for r in ranks]), np.mean([1 / math.log2(r + 1) if r <= k else 0 for r in ranks])

    sampled = [(scores[u, i], [scores[u, n] for n in negatives[r]]) for r, (u, i) in enumerate(test)]
    known = {u: {i for uu, i in train + val if uu == u} for u in range(num_users)}
    full = [(scores[u, i], [scores[u, j] for j in range(num_items) if j not in known[u] and j != i]) for u, i in test]
    assert (got["hr"], got["ndcg"]) == pytest.approx(brute(sampled))
    assert (got["full_hr"], got["full_ndcg"]) == pytest.approx(brute(full))


def test_full_ranking_samples_users_above_the_cell_budget(monkeypatch):
    """Above ``FULL_RANKING_CELLS`` a fixed seeded user sample is ranked: same users for every model,
    the same ranks those users get in the full evaluation, and the standard error of their mean."""
    from ncfctl import evaluation

    rng = np.random.default_rng(7)
    num_users, num_items = 40, 60
    train, val, test = [], [], []
    for u in range(num_users):
        items = rng.permutation(num_items)
        train += [(u, int(i)) for i in items[:5]]
        val.append((u, int(items[5])))
        test.append((u, int(items[6])))
    data = make_data(num_users, num_items, train, val, test, [list(range(10))] * num_users)  # k=10 needs 10+
    scores = rng.normal(size=(num_users, num_items))
    everyone = evaluation.full_ranks(table_fn(scores), data, data.test, np.arange(num_users))

    monkeypatch.setattr(evaluation, "FULL_RANKING_CELLS", 10 * num_items)
    monkeypatch.setattr(evaluation, "MIN_SAMPLE_USERS", 5)
    rows, users = evaluation.full_ranking_rows(data.test, num_items)
    assert users == 10 and len(rows) == 10
    assert np.array_equal(rows, evaluation.full_ranking_rows(data.test, num_items)[0])  # seeded: always these
    got = evaluate(table_fn(scores), data, k=10)
    hits = (everyone[rows] <= 10).astype(float)
    assert got["full_users"] == 10
    assert got["full_hr"] == pytest.approx(hits.mean())
    assert got["full_hr_se"] == pytest.approx(hits.std(ddof=1) / math.sqrt(10))
    assert evaluate(popularity_score_fn(data), data, k=10)["full_users"] == 10
