"""The optimizer: Adam, updating whole tables (small catalogues) or only the rows a batch touched.

Dense Adam reads and writes every parameter on every step, so its cost grows with the embedding
tables, not with the batch. Measured on this machine (NeuMF 32 / 128,64,32, batch 4,096, random
batches, one thread, median ms per step, interleaved; ``python benchmarks/bench_scale.py
--optimizers --shapes 1x,4x,8x,16x,1m``, load average ~8 on 2 cores):

================================  =====  =====  =====  ======  =======
embedding rows (users + items)    9.7k   39k    78k    156k    549k
================================  =====  =====  =====  ======  =======
dense Adam (fused)                14.8   20.4   27.7   33.6    237.5
``torch.optim.SparseAdam``        23.9   32.7   38.5   41.9    43.3
:class:`LazyAdam` (below)         21.2   23.0   24.0   24.3    25.1
================================  =====  =====  =====  ======  =======

(An earlier run had 8x at 27 dense vs 30 lazy: the crossover is around 60k rows.)
So large tables switch their embeddings to sparse gradients (``nn.Embedding(sparse=True)``, a
training-time flag that leaves the weights and ``state_dict`` unchanged) and :class:`LazyAdam`,
which applies Adam's update to the touched rows only (TensorFlow's LazyAdam): rows absent from
a batch keep their moments instead of decaying them. Hyper-parameters mean the same as for Adam.
``SparseAdam`` does the same arithmetic through sparse-tensor operations and is 1.1-1.7x slower
here. Row-wise Adagrad (FBGEMM's fused CPU kernel, ``fbgemm-gpu-cpu`` 1.8.0, the one that loads
with torch 2.13) was faster still at 1M items (15 vs 30 ms per step in one run), but needs a
differently tuned learning rate, and its binary is pinned to one torch release.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

OptimizerName = Literal["auto", "adam", "lazy-adam"]
LAZY_MIN_ROWS = 64_000  # auto: lazy from this many embedding rows on a CPU (the measured crossover, above)


def embeddings(model: nn.Module) -> list[nn.Embedding]:
    return [module for module in model.modules() if isinstance(module, nn.Embedding)]


def resolve(name: OptimizerName, model: nn.Module, device: torch.device) -> str:
    """``auto``: lazy on a CPU once the tables are large; dense on a GPU, whose bandwidth makes whole-table
    updates cheap (and whose DDP backend, nccl, cannot all-reduce sparse gradients)."""
    if name != "auto":
        return name
    rows = sum(table.num_embeddings for table in embeddings(model))
    return "lazy-adam" if device.type == "cpu" and rows >= LAZY_MIN_ROWS else "adam"


def sparse_gradients(model: nn.Module, on: bool) -> None:
    """Switch the embeddings' sparse gradients (a training-time flag: weights and ``state_dict`` stay as they are)."""
    for table in embeddings(model):
        table.sparse = on


def make_optimizer(
    model: nn.Module, name: OptimizerName, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer ``name`` resolves to for ``model``; lazy also turns on sparse embedding gradients.

    Dense Adam is fused into one kernel where this torch supports it for the parameters' device:
    one pass over each tensor instead of ~10 (~20% of a CPU epoch at 1x).
    """
    chosen = resolve(name, model, device)
    sparse_gradients(model, chosen == "lazy-adam")
    params = list(model.parameters())
    if chosen == "lazy-adam":
        return LazyAdam(params, lr=lr, weight_decay=weight_decay)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class LazyAdam(torch.optim.Optimizer):
    """Adam (L2 ``weight_decay`` like ``torch.optim.Adam``); sparse gradients update only their rows.

    A dense gradient is treated as touching every row, so the tower layers get plain Adam. Bias
    correction uses the optimizer's step count for every row, as ``SparseAdam`` does.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("LazyAdam does not take a closure")
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)

    def _update(self, param: torch.Tensor, group: dict) -> None:
        state = self.state[param]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float64)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        step = float(state["step"])
        grad = param.grad
        if grad.is_sparse:
            grad = grad.coalesce()  # one row per touched index, duplicate lookups summed
            rows, grad = grad.indices()[0], grad.values()
            values, exp_avg, exp_avg_sq = (
                t.index_select(0, rows) for t in (param, state["exp_avg"], state["exp_avg_sq"])
            )
        else:
            rows, values, exp_avg, exp_avg_sq = None, param, state["exp_avg"], state["exp_avg_sq"]
        if group["weight_decay"]:
            grad = grad.add(values, alpha=group["weight_decay"])
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (exp_avg_sq / (1 - beta2**step)).sqrt_().add_(group["eps"])
        values.addcdiv_(exp_avg, denom, value=-group["lr"] / (1 - beta1**step))
        if rows is not None:
            for target, source in ((param, values), (state["exp_avg"], exp_avg), (state["exp_avg_sq"], exp_avg_sq)):
                target.index_copy_(0, rows, source)
