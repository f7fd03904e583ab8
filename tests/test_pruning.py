"""Pruning internals: masks, magnitude and structured pruning, schedule, sizes, figures."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import separated_ncf, tiny_interaction_data

from ncfctl.masks import apply_masks, check_locked, mask_lock, prunable_weights, sparsity
from ncfctl.models import NCF, NCFSpec
from ncfctl.pruning import plots, report
from ncfctl.pruning.magnitude import magnitude_masks
from ncfctl.pruning.schedule import compose, cubic_sparsities, step_rates
from ncfctl.pruning.structured import keep_counts, plan_structured, unit_saliency
from ncfctl.training import FitSettings, fit

torch.set_num_threads(1)

SPEC = NCFSpec(num_users=30, num_items=50, factors=8, mlp_user_dim=12, mlp_item_dim=6, hidden=[10, 6])


def all_pairs(spec: NCFSpec) -> tuple[torch.Tensor, torch.Tensor]:
    users, items = torch.meshgrid(torch.arange(spec.num_users), torch.arange(spec.num_items), indexing="ij")
    return users.reshape(-1), items.reshape(-1)


def test_global_magnitude_removes_exactly_rate_of_the_smallest():
    model = separated_ncf(SPEC)
    masks = magnitude_masks(model, 0.5)
    weights = prunable_weights(model)
    total = sum(w.numel() for w in weights.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.5 * total)
    pruned = torch.cat([weights[n].detach().abs()[~m] for n, m in masks.items()])
    kept = torch.cat([weights[n].detach().abs()[m] for n, m in masks.items()])
    assert pruned.max() <= kept.min()  # one threshold across every layer
    assert set(masks) == {n for n in dict(model.named_parameters()) if n.endswith("weight")}  # biases never


def test_layer_scope_prunes_each_tensor_by_the_rate():
    masks = magnitude_masks(separated_ncf(SPEC), 0.3, scope="layer")
    for name, mask in masks.items():
        assert int((~mask).sum()) == round(0.3 * mask.numel()), name


def test_without_embeddings_tables_are_untouched_and_old_masks_are_kept():
    model = separated_ncf(SPEC)
    first = magnitude_masks(model, 0.5)
    second = magnitude_masks(model, 0.5, include_embeddings=False, masks=first)
    for name in ("gmf_user.weight", "gmf_item.weight", "mlp_user.weight", "mlp_item.weight"):
        assert torch.equal(second[name], first[name])  # not pruned further, not forgotten
    assert sparsity({"mlp.0.weight": second["mlp.0.weight"]}) > sparsity({"mlp.0.weight": first["mlp.0.weight"]})


def test_rates_compose_on_what_remains():
    model = separated_ncf(SPEC)
    first = magnitude_masks(model, 0.5)
    apply_masks(model, first)
    second = magnitude_masks(model, 0.5, masks=first)
    assert sparsity(second) == pytest.approx(compose(0.5, 0.5), abs=1e-3) == pytest.approx(0.75, abs=1e-3)
    assert all(not (second[n] & ~first[n]).any() for n in first)  # pruned stays pruned


def test_rate_outside_the_open_interval_is_refused():
    for rate in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="rate"):
            magnitude_masks(separated_ncf(SPEC), rate)
        with pytest.raises(ValueError, match="rate"):
            plan_structured(separated_ncf(SPEC), rate)


def tiny_fit(model: NCF, after_step=None, on_epoch=None, epochs: int = 2):
    data = tiny_interaction_data(users=30, items=50, per_user=10)
    settings = FitSettings(epochs=epochs, batch_size=64, lr=0.01, patience=0, full_ranking=False, device="cpu")
    return fit(model, data, settings, after_step=after_step, on_epoch=on_epoch)


def masked_nonzeros(model: NCF, masks) -> int:
    params = dict(model.named_parameters())
    return sum(int(torch.count_nonzero(params[n].detach()[~m])) for n, m in masks.items())


def test_masks_stay_exactly_zero_during_and_after_fine_tuning():
    model = separated_ncf(SPEC)
    masks = magnitude_masks(model, 0.6)
    apply_masks(model, masks)
    before = copy.deepcopy(model)
    during: list[int] = []
    tiny_fit(model, after_step=mask_lock(masks), on_epoch=lambda record: during.append(masked_nonzeros(model, masks)))
    assert during == [0, 0]
    assert masked_nonzeros(model, masks) == 0
    check_locked(model, masks, "fine-tuned")
    kept_changed = any(
        not torch.equal(p[masks[n]], dict(before.named_parameters())[n][masks[n]])
        for n, p in model.named_parameters()
        if n in masks
    )
    assert kept_changed  # it did train

    unlocked = copy.deepcopy(before).train()
    tiny_fit(unlocked, epochs=1)  # the same training without the lock revives pruned weights
    assert masked_nonzeros(unlocked, masks) > 0
    with pytest.raises(Exception, match="non-zero"):
        check_locked(unlocked, masks, "job output")


VARIANTS = [
    SPEC,
    SPEC.model_copy(update={"model_type": "gmf"}),
    SPEC.model_copy(update={"model_type": "mlp", "dropout": 0.2}),
]


# (factors, mlp_user_dim, mlp_item_dim) kept at rate 0.5 from SPEC's 8 / 12 / 6. mlp-first: rows keep
# round(0.5 * (8 + 12)) = 10 and round(0.5 * (8 + 6)) = 7 dims; the MLP floors are round(0.25 * 6) = 2 and
# max(1, round(0.25 * 3)) = 1, so GMF keeps min(8, 10 - 2, 7 - 1) = 6 and the MLP sides 4 and 1.
KEPT = {
    "uniform": {"neumf": (4, 6, 3), "gmf": (4,), "mlp": (6, 3)},
    "mlp-first": {"neumf": (6, 4, 1), "gmf": (4,), "mlp": (6, 3)},
}


@pytest.mark.parametrize("spec", VARIANTS, ids=lambda s: s.model_type)
@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("allocation", ["uniform", "mlp-first"])
def test_structured_model_is_smaller_and_scores_like_the_masked_dense_model(spec, norm, allocation):
    model = separated_ncf(spec)
    plan = plan_structured(model, 0.5, norm=norm, allocation=allocation)
    smaller = plan.build(model).eval()
    s = smaller.spec
    kept = KEPT[allocation][spec.model_type]
    if spec.has_gmf:
        assert s.factors == kept[0]
        assert smaller.gmf_user.weight.shape == (spec.num_users, kept[0])
        assert smaller.gmf_item.weight.shape == (spec.num_items, kept[0])
        # GMF factors multiply elementwise: the SAME columns survive on both sides
        assert torch.equal(smaller.gmf_user.weight, model.gmf_user.weight[:, plan.keep["gmf"]])
        assert torch.equal(smaller.gmf_item.weight, model.gmf_item.weight[:, plan.keep["gmf"]])
    if spec.has_mlp:
        assert (s.mlp_user_dim, s.mlp_item_dim, s.hidden) == (*kept[-2:], [5, 3])
        assert [tuple(layer.weight.shape) for layer in smaller.linear_layers()] == [(5, sum(kept[-2:])), (3, 5)]
    assert sum(p.numel() for p in smaller.parameters()) < sum(p.numel() for p in model.parameters())

    masked = copy.deepcopy(model).eval()
    apply_masks(masked, plan.equivalent_masks(model))
    users, items = all_pairs(spec)
    with torch.no_grad():
        torch.testing.assert_close(smaller(users, items), masked(users, items), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(masked(users, items), model.eval()(users, items))  # something was removed


def test_structured_removes_the_units_with_the_smallest_weights():
    model = separated_ncf(SPEC)
    with torch.no_grad():
        model.mlp[0].weight[3].zero_()  # neuron 3 of the first tower layer gets no input
        model.mlp[2].weight[1].mul_(1e-3)  # neuron 1 of the second, almost none
        model.gmf_item.weight[:, 2].mul_(1e-6)  # GMF factor 2 is ~0 on the item side only
        model.mlp_item.weight[:, 5].mul_(1e-3)
    saliency = unit_saliency(model)
    assert saliency["hidden.0"][3] == 0 and saliency["hidden.0"].argmin() == 3
    keep = plan_structured(model, 0.2, allocation="uniform").keep
    assert 3 not in keep["hidden.0"].tolist() and 1 not in keep["hidden.1"].tolist()
    assert 2 not in keep["gmf"].tolist() and 5 not in keep["mlp_item"].tolist()
    assert len(keep["gmf"]) == 6 and len(keep["hidden.0"]) == 8  # round(0.8 * width)


def test_mlp_first_spends_the_embedding_budget_of_uniform_and_keeps_gmf_factors_while_it_can():
    default = NCFSpec(num_users=610, num_items=9724, factors=32, mlp_user_dim=64, mlp_item_dim=64, hidden=[128, 64, 32])
    uniform = keep_counts(default, 0.5, allocation="uniform")
    first = keep_counts(default, 0.5, allocation="mlp-first")
    assert uniform == {"gmf": 16, "mlp_user": 32, "mlp_item": 32, "hidden.0": 64, "hidden.1": 32, "hidden.2": 16}
    assert first == {**uniform, "gmf": 32, "mlp_user": 16, "mlp_item": 16}  # same row width: 48 of 96
    deep = keep_counts(default, 0.75, allocation="mlp-first")  # 24 of 96: less than the GMF factors alone
    assert (deep["gmf"], deep["mlp_user"], deep["mlp_item"]) == (20, 4, 4)  # MLP floor: a quarter of uniform's 16
    assert keep_counts(default, 0.5, include_embeddings=False)["gmf"] == 32


def test_structured_keeps_embeddings_when_asked_and_slices_earlier_masks():
    model = separated_ncf(SPEC)
    masks = magnitude_masks(model, 0.5)
    apply_masks(model, masks)
    smaller, sliced = plan_structured(model, 0.5, include_embeddings=False).apply(model, masks)
    assert (smaller.spec.factors, smaller.spec.mlp_user_dim, smaller.spec.mlp_item_dim) == (8, 12, 6)
    assert smaller.spec.hidden == [5, 3]
    params = dict(smaller.named_parameters())
    for name, mask in sliced.items():
        assert mask.shape == params[name].shape
    assert masked_nonzeros(smaller, sliced) == 0


def test_cubic_schedule_reaches_the_rate_and_prunes_fastest_first():
    targets = cubic_sparsities(0.5, 4)
    assert targets[-1] == pytest.approx(0.5)
    gains = np.diff([0.0, *targets])
    assert all(a > b for a, b in zip(gains, gains[1:], strict=False))
    rates = step_rates(0.5, "gradual", 4)
    assert np.prod([1 - r for r in rates]) == pytest.approx(0.5)
    assert step_rates(0.3, "oneshot", 4) == [0.3]
    model = separated_ncf(SPEC)
    masks = None
    for rate in rates:
        masks = magnitude_masks(model, rate, masks=masks)
    assert sparsity(masks) == pytest.approx(0.5, abs=1e-3)


def test_dense_size_is_not_smaller_but_compact_is_and_decodes_losslessly():
    model = separated_ncf(SPEC.model_copy(update={"num_users": 300, "num_items": 500}))  # a file's fixed cost is small
    masks = magnitude_masks(model, 0.5)
    pruned = copy.deepcopy(model)
    apply_masks(pruned, masks)
    dense, sparse = report.sizes(model, None), report.sizes(pruned, masks)
    assert sparse["dense_bytes"] == dense["dense_bytes"]  # zeros cost 4 bytes each
    assert sparse["compact_bytes"] < 0.6 * dense["dense_bytes"]
    encoded = report.compact_state(pruned.state_dict(), masks)
    for name, tensor in pruned.state_dict().items():
        entry = encoded[name]
        if isinstance(entry, dict):
            bits = np.unpackbits(entry["bits"].numpy())[: tensor.numel()].astype(bool).reshape(entry["shape"])
            decoded = torch.zeros(entry["shape"])
            decoded[torch.from_numpy(bits)] = entry["values"]
            entry = decoded
        assert torch.equal(entry, tensor), name
    smaller = plan_structured(model, 0.5).build(model)
    assert report.sizes(smaller, None)["dense_bytes"] < 0.6 * dense["dense_bytes"]
    assert "NOT smaller" in report.size_note(True, False)
    assert "itself is smaller" in report.size_note(False, True)


def test_layer_rows_count_removed_against_the_source():
    model = separated_ncf(SPEC)
    smaller = plan_structured(model, 0.5, allocation="uniform").build(model)
    rows = report.layer_rows(smaller, model)
    total = report.totals(rows)
    assert [r["layer"] for r in rows] == ["gmf_user", "gmf_item", "mlp_user", "mlp_item", "mlp.0", "mlp.2", "predict"]
    assert total["parameters"] == sum(p.numel() for p in smaller.parameters())
    assert total["source_parameters"] == sum(p.numel() for p in model.parameters())
    assert total["removed"] == pytest.approx(1 - total["parameters"] / total["source_parameters"])
    assert rows[0]["shape"] == "30x4" and rows[0]["source_shape"] == "30x8"
    assert rows[4]["removed"] == pytest.approx(1 - (5 * 9 + 5) / (10 * 18 + 10))


def test_figures_are_pngs(tmp_path):
    model = separated_ncf(SPEC)
    pruned = copy.deepcopy(model)
    apply_masks(pruned, magnitude_masks(model, 0.5))
    plots.weight_distributions(tmp_path / "w.png", prunable_weights(model), prunable_weights(pruned), "t")
    points = [{"epoch": 0, "step": 1, "hr": 0.5}, {"epoch": 1, "step": 1, "hr": 0.6}]
    points.append({"epoch": 1, "step": 2, "hr": 0.55})
    plots.recovery_curve(tmp_path / "r.png", points, "hr", {"before": 0.7}, "t", "val HR@10", kept_epoch=1)
    for name in ("w.png", "r.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
