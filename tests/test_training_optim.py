"""The optimizer choice: dense Adam for small tables, row-wise lazy Adam for large ones."""

from __future__ import annotations

import torch
from conftest import tiny_interaction_data
from torch import nn

from ncfctl.evaluation import evaluate, popularity_score_fn
from ncfctl.models import NCF, NCFSpec
from ncfctl.training import FitSettings, fit
from ncfctl.training.optim import LAZY_MIN_ROWS, LazyAdam, make_optimizer, resolve

torch.set_num_threads(1)
CPU = torch.device("cpu")


def tables(rows: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(rows, 4), nn.Linear(4, 1))


def loss(model: nn.Module, index: torch.Tensor) -> torch.Tensor:
    return model(index).square().sum()


def test_lazy_adam_equals_adam_when_every_row_is_touched():
    lazy, dense = tables(6), tables(6)
    make_optimizer(lazy, "lazy-adam", 0.01, 0.001, CPU)
    assert lazy[0].sparse  # lazy turns on sparse embedding gradients
    optimizers = [
        LazyAdam(lazy.parameters(), lr=0.01, weight_decay=0.001),
        torch.optim.Adam(dense.parameters(), lr=0.01, weight_decay=0.001, foreach=False),
    ]
    for step in range(5):
        index = torch.tensor([0, 1, 2, 3, 4, 5, step % 6])  # all rows, one twice (its gradients add up)
        for model, optimizer in zip((lazy, dense), optimizers, strict=True):
            optimizer.zero_grad()
            loss(model, index).backward()
            optimizer.step()
    for a, b in zip(lazy.parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_lazy_adam_leaves_untouched_rows_and_their_moments_alone():
    model = tables(6)
    optimizer = make_optimizer(model, "lazy-adam", 0.01, 0.0, CPU)
    before = model[0].weight.detach().clone()
    for index in ([0, 1], [1, 2]):
        optimizer.zero_grad()
        loss(model, torch.tensor(index)).backward()
        optimizer.step()
    weight, state = model[0].weight.detach(), optimizer.state[model[0].weight]
    assert torch.equal(weight[3:], before[3:]) and not torch.equal(weight[:3], before[:3])
    assert torch.count_nonzero(state["exp_avg"][3:]) == 0
    assert torch.count_nonzero(state["exp_avg"][0]) > 0  # row 0 keeps its moment while absent (lazy)


def test_auto_is_dense_for_small_tables_and_on_gpus():
    small, large = tables(100), tables(LAZY_MIN_ROWS)
    assert resolve("auto", small, CPU) == "adam"
    assert resolve("auto", large, CPU) == "lazy-adam"
    assert resolve("auto", large, torch.device("cuda")) == "adam"
    assert resolve("adam", large, CPU) == "adam"
    assert isinstance(make_optimizer(small, "auto", 0.01, 0.0, CPU), torch.optim.Adam) and not small[0].sparse


def test_training_with_lazy_adam_beats_popularity():
    data = tiny_interaction_data(users=200, items=80, per_user=15)
    torch.manual_seed(0)
    model = NCF(NCFSpec.from_layers(model_type="neumf", num_users=200, num_items=80, factors=8, layers=[16, 8]))
    settings = FitSettings(epochs=6, patience=0, batch_size=256, lr=0.01, device="cpu", optimizer="lazy-adam")
    result = fit(model, data, settings)
    baseline = evaluate(popularity_score_fn(data), data)
    assert result.test_metrics["hr"] > baseline["hr"] + 0.2
    assert not any(table.sparse for table in (model.gmf_user, model.gmf_item, model.mlp_user, model.mlp_item))
