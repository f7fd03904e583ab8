"""Cleaning rules, splits, evaluation negatives, the synthetic generator and the dataset artifact."""

from __future__ import annotations

import itertools
import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncfctl.config import load_config
from ncfctl.data import synthetic
from ncfctl.data.cleaning import clean_log
from ncfctl.data.dataset import Interactions, load_dataset
from ncfctl.data.prepare import prepare_dataset
from ncfctl.data.rawlog import RawLog
from ncfctl.data.splits import UnseenItemSampler, _distinct_ranks, leave_one_out, ratio_split
from ncfctl.data.synthetic import generate_synthetic
from ncfctl.errors import NcfError
from ncfctl.workspace import Workspace

TINY = {
    "data.synthetic.users": 60,
    "data.synthetic.items": 80,
    "data.synthetic.interactions": 3000,
    "data.synthetic.clusters": 4,
    "data.eval_negatives": 20,
}


def tiny_config(**overrides):
    return load_config(overrides={**TINY, **overrides}, environ={})


def raw(rows, has_ratings=True):
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    frame["rating"] = frame["rating"].astype(np.float32)
    return RawLog(frame, origin="log.csv", has_ratings=has_ratings)


def pairs(rows: Interactions):
    return list(zip(rows.users.tolist(), rows.items.tolist(), strict=True))


# --- cleaning ---------------------------------------------------------------------------------


def test_duplicates_keep_the_latest_and_ties_follow_file_order():
    log = raw(
        [
            ("b", "x", 5, 100),
            ("a", "x", 1, 300),  # a re-rates x later: this one stays
            ("a", "x", 4, 200),
            ("a", "y", 2, 300),  # same second as (a, x) at 300 but a later line
            ("a", "z", 3, 50),
            ("b", "y", 3, 100),
            ("b", "z", 3, 100),
        ]
    )
    clean = clean_log(log, min_rating=None, explicit=True)
    assert clean.counts["duplicates_dropped"] == 1
    assert clean.user_ids.tolist() == ["a", "b"] and clean.item_ids.tolist() == ["x", "y", "z"]
    # a's rows by time: z@50, x@300 (rating 1, the re-rating), y@300 (later line)
    assert pairs(clean.rows)[:3] == [(0, 2), (0, 0), (0, 1)]
    assert clean.rows.ratings[:3].tolist() == [3.0, 1.0, 2.0]
    split = leave_one_out(clean.rows)
    assert pairs(split.test) == [(0, 1), (1, 2)]  # latest; b's three rows share a second: last line wins
    assert pairs(split.val) == [(0, 0), (1, 1)]
    assert pairs(split.train) == [(0, 2), (1, 0)]


def test_text_ids_are_indexed_in_sorted_order():
    frame = pd.DataFrame({"user": ["u2", "u10", "u2", "u10", "u2", "u10"], "item": ["b", "a", "c", "b", "a", "c"]})
    frame["user"] = frame["user"].astype("category")  # first-appearance category order, as pyarrow reads it
    frame["rating"], frame["timestamp"] = np.float32(1), np.arange(6)
    clean = clean_log(RawLog(frame, "log.csv"), min_rating=None, explicit=False)
    assert clean.user_ids.tolist() == ["u10", "u2"] and clean.item_ids.tolist() == ["a", "b", "c"]
    assert pairs(clean.rows) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 0)]


def test_min_rating_drops_users_with_too_few_positives_and_remembers_low_ratings():
    rows = [("u1", f"i{k}", 5, k) for k in range(4)] + [("u1", "i9", 1, 9)]
    rows += [("u2", "i0", 5, 1), ("u2", "i1", 2, 2), ("u2", "i2", 2, 3)]  # one positive left: dropped
    rows += [("u3", "i0", 1, 1)]  # no positive left: dropped too
    clean = clean_log(raw(rows), min_rating=4, explicit=False)
    assert clean.user_ids.tolist() == ["u1"] and clean.item_ids.tolist() == ["i0", "i1", "i2", "i3"]
    assert clean.counts == {
        "raw_interactions": 9,
        "duplicates_dropped": 0,
        "below_min_rating": 4,
        "users_dropped": 2,
        "interactions_dropped": 1,
    }
    assert set(clean.rows.ratings.tolist()) == {1.0}  # implicit: every positive is 1.0
    # i9 (rated 1 by u1) left the catalogue: no item index, so it can never be a negative.
    assert clean.known_keys.tolist() == [0, 1, 2, 3]


def test_low_ratings_are_never_negatives():
    rows = [("u", f"i{k}", 5, k) for k in range(3)] + [("u", "i3", 1, 9), ("v", "i3", 5, 1)]
    rows += [("v", f"i{k}", 5, k + 2) for k in (4, 5)] + [("w", f"i{k}", 5, k) for k in range(6)]
    clean = clean_log(raw(rows), min_rating=4, explicit=False)
    sampler = UnseenItemSampler(clean.known_keys, clean.num_users, clean.num_items)
    negatives = sampler.sample(np.zeros(50, dtype=np.int64), 2, np.random.default_rng(0))
    assert all(set(row) == {4, 5} for row in negatives.tolist())  # u rated i3 low: known, never a negative


def test_nothing_left_is_an_error_naming_the_file_and_rule():
    with pytest.raises(NcfError, match=r"log\.csv: no user has 3 or more interactions rated >= 4\.5"):
        clean_log(raw([("a", "x", 4, 1), ("a", "y", 4, 2), ("a", "z", 5, 3)]), min_rating=4.5, explicit=False)


def test_ratings_needed_but_absent():
    log = raw([("a", "x", 1, 0)], has_ratings=False)
    with pytest.raises(NcfError, match=r"explicit mode needs ratings but log\.csv has no rating column"):
        clean_log(log, min_rating=None, explicit=True)
    with pytest.raises(NcfError, match=r"data.min_rating 4\.0 needs ratings"):
        clean_log(log, min_rating=4.0, explicit=False)


# --- splits -------------------------------------------------------------------------------------


def sorted_rows(counts):
    users = np.repeat(np.arange(len(counts)), counts)
    order = np.concatenate([np.arange(c) for c in counts])
    return Interactions(users, order.copy(), np.ones(len(users), np.float32), order * 10)


def test_ratio_split_temporal_and_random():
    rows = sorted_rows([10, 3, 7])
    temporal = ratio_split(rows, 0.2, "temporal", np.random.default_rng(0))
    assert pairs(temporal.test) == [(0, 8), (0, 9), (1, 2), (2, 6)]  # round(2.0), >=1, round(1.4)
    assert pairs(temporal.val) == [(0, 7), (1, 1), (2, 5)]  # next-latest remaining per user
    assert len(temporal.train) == 20 - 4 - 3

    first = ratio_split(rows, 0.5, "random", np.random.default_rng(7))
    again = ratio_split(rows, 0.5, "random", np.random.default_rng(7))
    assert pairs(first.test) == pairs(again.test)
    assert np.bincount(first.test.users).tolist() == [5, 1, 4]  # 5, capped at n-2 = 1, round(3.5) = 4
    held = set(pairs(first.test))
    assert held != {(0, k) for k in range(5, 10)} | {(1, 2)} | {(2, k) for k in range(3, 7)}  # not the latest
    everything = pairs(first.train) + pairs(first.val) + pairs(first.test)
    assert sorted(everything) == sorted(pairs(rows))  # a partition
    for user in range(3):  # validation: the latest row not held out
        remaining = [i for u, i in pairs(rows) if u == user and (u, i) not in held]
        assert (user, max(remaining)) in pairs(first.val)


# --- evaluation negatives -----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda users: st.tuples(
            st.just(users),
            st.integers(25, 60),
            st.lists(st.sets(st.integers(0, 24), min_size=1, max_size=24), min_size=users, max_size=users),
            st.integers(0, 2**32 - 1),
        )
    )
)
def test_negatives_are_distinct_unknown_items(case):
    users, num_items, known, seed = case
    keys = np.array(sorted(u * num_items + i for u, items in enumerate(known) for i in items), dtype=np.int64)
    sampler = UnseenItemSampler(keys, users, num_items)
    count = min(num_items - 24, 20)
    rows = np.repeat(np.arange(users), 3)
    negatives = sampler.sample(rows, count, np.random.default_rng(seed))
    assert negatives.shape == (len(rows), count)
    for user, row in zip(rows, negatives, strict=True):
        assert len(set(row.tolist())) == count
        assert not set(row.tolist()) & known[user]
        assert row.min() >= 0 and row.max() < num_items
    again = sampler.sample(rows, count, np.random.default_rng(seed))
    np.testing.assert_array_equal(negatives, again)


def test_distinct_ranks_are_uniform_over_subsets():
    rng = np.random.default_rng(0)
    draws = 60_000
    for candidates in (10, 5):  # 10: redraw-collisions path; 5 (< 2 x 3): exact permutation path
        ranks = np.sort(_distinct_ranks(np.full(draws, candidates), 3, rng), axis=1)
        subsets = list(itertools.combinations(range(candidates), 3))
        seen = pd.Series(map(tuple, ranks.tolist())).value_counts()
        assert set(seen.index) == set(subsets)
        expected = draws / len(subsets)
        chi2 = float((((seen - expected) ** 2) / expected).sum())
        assert chi2 < 2 * len(subsets)  # chi-square with len-1 dof: mean len-1, far below 2x


def test_too_few_candidates_is_an_error_naming_the_user():
    keys = np.array([0, 1, 2, 10 + 0], dtype=np.int64)  # user 0 knows 3 of 10 items
    sampler = UnseenItemSampler(keys, 2, 10, names=np.array(["alice", "bob"]))
    with pytest.raises(NcfError, match=r"user 'alice' interacted with 3 of 10 items, leaving 7 < .*=8"):
        sampler.sample(np.array([1, 0]), 8, np.random.default_rng(0))


# --- synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_shaped_like_its_config():
    cfg = tiny_config().data.synthetic
    first = generate_synthetic(cfg, seed=3).frame
    pd.testing.assert_frame_equal(first, generate_synthetic(cfg, seed=3).frame)
    assert not first.equals(generate_synthetic(cfg, seed=4).frame)
    per_user = first.groupby("user").size()
    assert len(per_user) == 60 and per_user.min() >= 20 and per_user.max() <= 48  # 60% of 80 items
    assert not first.duplicated(["user", "item"]).any()
    assert first["rating"].between(1, 5).all()
    assert first.groupby("user")["timestamp"].is_monotonic_increasing.all()


def test_synthetic_default_shape_and_long_tails():
    cfg = load_config(environ={}).data.synthetic
    frame = generate_synthetic(cfg, seed=42).frame
    assert 950_000 <= len(frame) <= 1_000_000
    assert frame["user"].nunique() == 6040 and frame["item"].nunique() == 3706
    per_user = frame.groupby("user").size()
    per_item = frame.groupby("item").size()
    assert per_user.min() >= 20 and per_user.max() > 5 * per_user.median()  # heavy-tailed activity
    top_share = per_item.sort_values(ascending=False).iloc[: len(per_item) // 10].sum() / len(frame)
    assert top_share > 0.25  # the 10% most popular items get well over 10% of interactions
    assert 3.3 < frame["rating"].mean() < 3.9


def synthetic_shape(users: int, items: int, interactions: int):
    shape = {"users": users, "items": items, "interactions": interactions}
    return load_config(overrides={f"data.synthetic.{k}": v for k, v in shape.items()}, environ={}).data.synthetic


@pytest.fixture
def resampling(monkeypatch):
    """Every user above the exact path's size goes through candidate resampling (the large-catalogue path)."""
    monkeypatch.setattr(synthetic, "EXACT_CELLS", 0)


def test_synthetic_resampling_is_deterministic_and_keeps_the_shape(resampling):
    cfg = tiny_config(**{"data.synthetic.items": 2000, "data.synthetic.interactions": 4000}).data.synthetic
    first = generate_synthetic(cfg, seed=3).frame
    pd.testing.assert_frame_equal(first, generate_synthetic(cfg, seed=3).frame)
    assert not first.equals(generate_synthetic(cfg, seed=4).frame)
    counts = synthetic._user_counts(cfg, np.random.default_rng(3))  # the generator's first draw
    assert first.groupby("user").size().tolist() == counts.tolist()  # every user gets exactly n_u items
    assert not first.duplicated(["user", "item"]).any()
    assert first.groupby("user")["timestamp"].is_monotonic_increasing.all()


def test_synthetic_resampling_draws_from_the_exact_distribution(monkeypatch):
    """Same world, both paths: the chosen items' taste and popularity agree within a few percent."""
    cfg = synthetic_shape(1000, 20000, 60000)

    def summary(frame):
        rng = np.random.default_rng(42)
        synthetic._user_counts(cfg, rng)
        world = synthetic._world(cfg, rng)
        users, items = frame["user"].to_numpy() - 1, frame["item"].to_numpy() - 1
        return world.taste(users, items).mean(), world.log_pop[items].mean()

    exact = summary(generate_synthetic(cfg, seed=42).frame)
    monkeypatch.setattr(synthetic, "EXACT_CELLS", 0)
    resampled = summary(generate_synthetic(cfg, seed=42).frame)
    assert resampled[0] == pytest.approx(exact[0], rel=0.05)  # measured: -3% (4,000 x 40,000)
    assert resampled[1] == pytest.approx(exact[1], rel=0.05)


def test_synthetic_cost_grows_with_interactions_not_users_x_items(resampling):
    """2,000 users x 200,000 items (4e8 cells, ~1 GB of keys for the exact path) within O(items + interactions)."""
    cfg = synthetic_shape(2000, 200_000, 50_000)
    tracemalloc.start()
    try:
        frame = generate_synthetic(cfg, seed=0).frame
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 40_000 <= len(frame) <= 50_000
    assert peak < 200e6  # the item table is ~40 MB; the per-user path held 256 x 200,000 keys several times


def test_synthetic_rejects_impossible_shapes():
    with pytest.raises(NcfError, match=r"data\.synthetic\.interactions \(100\) is below users x min_per_user"):
        generate_synthetic(tiny_config(**{"data.synthetic.interactions": 100}).data.synthetic, seed=0)


# --- the service and its artifact ---------------------------------------------------------------


def test_prepare_writes_a_loadable_reproducible_dataset(tmp_path):
    ws = Workspace(tmp_path)
    config = tiny_config(seed=5)
    artifact = prepare_dataset(config, ws)
    info, metrics = artifact.manifest.info, artifact.manifest.metrics
    assert info.dataset == "synthetic" and info.split == "leave-one-out" and info.explicit is False
    data = load_dataset(artifact)
    assert (data.num_users, data.num_items) == (info.num_users, info.num_items) == (60, metrics["items"])
    assert metrics["train"] + metrics["val"] + metrics["test"] == metrics["interactions"] == len(data.train) + 120
    assert metrics["density"] == pytest.approx(metrics["interactions"] / (60 * metrics["items"]))
    assert data.test.negatives.shape == (60, 20) and data.val.negatives.shape == (60, 20)
    known = set(pairs(data.train)) | set(pairs(data.val.rows)) | set(pairs(data.test.rows))
    for split in (data.val, data.test):
        for user, row in zip(split.rows.users.tolist(), split.negatives.tolist(), strict=True):
            assert not {(user, item) for item in row} & known
    assert data.user_ids[0] == "1" and set(data.train.ratings.tolist()) == {1.0}
    # Same seed, same everything (files are hashed in the manifest).
    again = prepare_dataset(config, ws)
    assert again.manifest.files == artifact.manifest.files
    assert json.loads((artifact.path / "manifest.json").read_text())["config"]["data"]["dataset"] == "synthetic"


def test_prepare_explicit_ratio_split_keeps_ratings(tmp_path):
    config = tiny_config(**{"data.explicit": True, "data.split": "ratio", "data.ratio_order": "temporal"})
    artifact = prepare_dataset(config, Workspace(tmp_path))
    data = load_dataset(artifact)
    assert data.explicit and artifact.manifest.info.ratio_order == "temporal"
    assert set(np.unique(data.train.ratings).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len(np.unique(data.train.ratings)) > 2
    assert len(data.test.rows) > 60  # several held-out rows per user


def test_prepare_failure_writes_nothing(tmp_path):
    source = tmp_path / "log.csv"
    source.write_text("user_id,item_id\na,x\nb\n")
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(NcfError, match=r"log\.csv line 3: expected 2 fields, found 1"):
        prepare_dataset(tiny_config(**{"data.dataset": "csv", "data.source": str(source)}), ws)
    assert ws.list("dataset") == []
    with pytest.raises(NcfError, match=r"data.dataset csv needs data.source"):
        prepare_dataset(tiny_config(**{"data.dataset": "csv"}), ws)
    with pytest.raises(NcfError, match=r"data.source .* is set but data.dataset is synthetic"):
        prepare_dataset(tiny_config(**{"data.source": str(source)}), ws)
    assert ws.list("dataset") == []
