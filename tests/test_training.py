"""``fit``: learns, selects on validation, stops early, checkpoints and resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_interaction_data

from ncfctl.errors import NcfError
from ncfctl.evaluation import evaluate, popularity_score_fn, torch_score_fn
from ncfctl.models import NCF, NCFSpec
from ncfctl.training import FitSettings, fit
from ncfctl.training.pretrain import neumf_from_pretrained
from ncfctl.training.sampling import NegativeSampler, implicit_examples, subsample

torch.set_num_threads(1)

DATA = tiny_interaction_data(users=200, items=80, per_user=15)
FAST = {"batch_size": 256, "lr": 0.01, "device": "cpu", "threads": 1}


def neumf(data=DATA, task="implicit", seed=0) -> NCF:
    torch.manual_seed(seed)
    spec = NCFSpec.from_layers(
        model_type="neumf", num_users=data.num_users, num_items=data.num_items, factors=8, layers=[16, 8], task=task
    )
    return NCF(spec)


def test_training_beats_popularity_on_both_protocols():
    result = fit(neumf(), DATA, FitSettings(epochs=6, patience=0, **FAST))
    baseline = evaluate(popularity_score_fn(DATA), DATA)
    assert result.test_metrics["hr"] > baseline["hr"] + 0.2
    assert result.test_metrics["full_hr"] > baseline["full_hr"] + 0.2
    assert [r["epoch"] for r in result.history] == list(range(1, 7))
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_kept_epoch_is_the_best_validation_epoch_and_early_stopping():
    model = neumf()
    result = fit(model, DATA, FitSettings(epochs=8, patience=1, **{**FAST, "lr": 0.05}))
    val_hr = [r["hr"] for r in result.history]
    best = result.history[result.best_epoch - 1]
    assert best["hr"] == max(val_hr)
    assert result.val_metrics == {"hr": best["hr"], "ndcg": best["ndcg"]}
    # the returned model holds the kept epoch: re-scoring validation reproduces its metrics
    rescored = evaluate(torch_score_fn(model), DATA, "val", full_ranking=False)
    assert (rescored["hr"], rescored["ndcg"]) == pytest.approx((best["hr"], best["ndcg"]))
    assert result.stopped_early  # lr 0.05 overfits this tiny set quickly
    assert len(result.history) == result.best_epoch + 1  # patience 1: one epoch without gain, then stop


def test_no_improvement_stops_after_patience():
    result = fit(neumf(), DATA, FitSettings(epochs=10, patience=2, **{**FAST, "lr": 1e-12}))
    assert result.stopped_early and result.best_epoch == 1 and len(result.history) == 3


def test_after_step_runs_after_every_optimizer_step():
    calls = []
    fit(neumf(), DATA, FitSettings(epochs=1, **FAST), after_step=lambda m: calls.append(m))
    positives = len(DATA.train)
    assert len(calls) == -(-positives * 5 // 256)  # 4 negatives + 1 positive per row, batch 256


@pytest.mark.parametrize("optimizer", ["adam", "lazy-adam"])
def test_resume_after_a_crash_mid_epoch_equals_an_uninterrupted_run(tmp_path, optimizer):
    settings = FitSettings(epochs=4, patience=0, optimizer=optimizer, **FAST)
    straight = neumf()
    expected = fit(straight, DATA, settings, checkpoint=tmp_path / "a.pt")

    class Crash(Exception):
        pass

    def crash_in_epoch_3(step, steps, seen=[0]):  # noqa: B006 (a counter across calls)
        seen[0] += 1
        if seen[0] > 2 * steps + steps // 2:
            raise Crash

    with pytest.raises(Crash):
        fit(neumf(), DATA, settings, checkpoint=tmp_path / "b.pt", on_batch=crash_in_epoch_3)
    resumed_model = neumf(seed=123)  # resuming must not depend on the fresh model's initialisation
    resumed = fit(resumed_model, DATA, settings, checkpoint=tmp_path / "b.pt", resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for before, after in zip(expected.history, resumed.history, strict=True):
        assert before["loss"] == after["loss"] and before["hr"] == after["hr"]
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[name]), name
    assert expected.test_metrics == resumed.test_metrics


def test_resume_refuses_changed_settings_but_allows_more_epochs(tmp_path):
    fit(neumf(), DATA, FitSettings(epochs=1, **FAST), checkpoint=tmp_path / "c.pt")
    with pytest.raises(NcfError, match="lr=0.01"):
        fit(neumf(), DATA, FitSettings(epochs=2, **{**FAST, "lr": 0.02}), checkpoint=tmp_path / "c.pt", resume=True)
    more = fit(neumf(), DATA, FitSettings(epochs=2, **FAST), checkpoint=tmp_path / "c.pt", resume=True)
    assert [r["epoch"] for r in more.history] == [1, 2]


def test_explicit_task_beats_item_means():
    data = tiny_interaction_data(users=200, items=80, per_user=15, explicit=True)
    result = fit(neumf(data, task="explicit"), data, FitSettings(epochs=15, task="explicit", patience=0, **FAST))
    baseline = evaluate(popularity_score_fn(data), data)
    assert set(result.test_metrics) == {"rmse", "mae"}
    assert result.test_metrics["rmse"] < baseline["rmse"]


def test_task_mismatch_is_one_line():
    with pytest.raises(NcfError, match="train.task is 'explicit' but the dataset holds implicit feedback"):
        fit(neumf(), DATA, FitSettings(epochs=1, task="explicit", **FAST))


def test_negatives_are_never_training_positives_and_epochs_differ():
    sampler = NegativeSampler(DATA.train, DATA.num_items)
    known = set(zip(DATA.train.users.tolist(), DATA.train.items.tolist(), strict=True))
    first = implicit_examples(DATA.train, sampler, 4, np.random.default_rng([0, 1]))
    second = implicit_examples(DATA.train, sampler, 4, np.random.default_rng([0, 2]))
    rows = len(DATA.train)
    assert len(first) == 5 * rows and sorted(first.order.tolist()) == list(range(5 * rows))
    assert first.items[:rows].tolist() == DATA.train.items.tolist()  # the positives, once each
    owners = first.users[np.arange(rows, 5 * rows) % rows]
    assert not any((u, i) in known for u, i in zip(owners.tolist(), first.items[rows:].tolist(), strict=True))
    assert not np.array_equal(first.items, second.items)
    assert not np.array_equal(first.order, second.order)


def test_an_epoch_is_stored_compactly_as_int32():
    """No (1 + negatives) x rows int64 copies: int32 users per row, items and order per example."""
    sampler = NegativeSampler(DATA.train, DATA.num_items)
    examples = implicit_examples(DATA.train, sampler, 4, np.random.default_rng(0))
    assert {examples.users.dtype, examples.items.dtype, examples.order.dtype} == {np.dtype(np.int32)}
    rows = len(DATA.train)
    assert examples.users.nbytes + examples.items.nbytes + examples.order.nbytes == 4 * (rows + 2 * 5 * rows)


def test_fraction_uses_a_fixed_share_of_rows():
    half = subsample(DATA.train, 0.5, seed=1)
    assert len(half) == round(len(DATA.train) * 0.5)
    assert np.array_equal(half.items, subsample(DATA.train, 0.5, seed=1).items)
    steps = []
    fit(neumf(), DATA, FitSettings(epochs=1, fraction=0.5, **FAST), on_batch=lambda s, n: steps.append(n))
    assert steps[0] == -(-len(half) * 5 // 256)


def test_neumf_from_pretrained_starts_at_the_average_of_gmf_and_mlp():
    def build(model_type):
        torch.manual_seed(len(model_type))
        spec = NCFSpec.from_layers(
            model_type=model_type, num_users=DATA.num_users, num_items=DATA.num_items, factors=8, layers=[16, 8]
        )
        return NCF(spec).eval()

    gmf, mlp = build("gmf"), build("mlp")
    combined = neumf_from_pretrained(neumf().spec, gmf, mlp).eval()
    users, items = torch.arange(50) % DATA.num_users, torch.arange(50) % DATA.num_items
    with torch.no_grad():
        expected = 0.5 * gmf(users, items) + 0.5 * mlp(users, items)
        torch.testing.assert_close(combined(users, items), expected)
    with pytest.raises(NcfError, match="`pretrain_mlp` is a gmf model"):
        neumf_from_pretrained(neumf().spec, gmf, gmf)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error a CPU-only machine gives")
def test_cuda_without_a_gpu_is_one_line():
    with pytest.raises(NcfError, match="train.device is 'cuda' but no CUDA device is available"):
        fit(neumf(), DATA, FitSettings(epochs=1, **{**FAST, "device": "cuda"}))
