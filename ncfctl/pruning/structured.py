"""Structured pruning: drop whole embedding dimensions and MLP neurons, build a smaller dense NCF.

Unlike magnitude pruning this changes shapes, so every runtime (torch, ONNX Runtime, Neo) does
fewer FLOPs and the file is smaller with no sparse format. The units ("groups") of an ``NCF``:

* ``gmf``: GMF factor ``j``. User and item factors multiply elementwise, so column ``j`` is
  removed from BOTH tables (and the matching input of the output layer) together;
* ``mlp_user`` / ``mlp_item``: MLP embedding dimensions, shrunk independently (they only meet
  in the first tower layer, whose matching input columns are removed);
* ``hidden.<l>``: neuron ``j`` of tower layer ``l`` (row ``j`` and bias ``j``) plus column ``j``
  of the next layer.

Saliency of a unit = the L1 or L2 norm of its own weights (Li et al., "Pruning Filters for
Efficient ConvNets", 2017): an embedding dimension's column, for GMF the product of the user and
item columns' norms (they multiply), a neuron's incoming weight row. Measured on ml-latest-small
(NeuMF, 50%, before fine-tuning) this kept HR@10 at 0.63 where "norm in x norm out" scores, which
also weigh the consumer side, did no better than a random choice (0.60 vs 0.59).

How many units each group keeps (:func:`keep_counts`): every tower layer keeps
``round((1 - rate) * width)`` neurons (at least one). The embedding tables, most of the
parameters, keep ``(1 - rate)`` of each row's width (GMF factors + MLP dimensions), shared out by
``allocation``:

* ``mlp-first`` (default): the cut comes out of the MLP embedding dimensions first; the GMF
  factors go only once each MLP embedding is down to a quarter of what ``uniform`` would leave
  it (``MLP_FLOOR``). Measured on ml-latest-small (default NeuMF, 3 fine-tuning epochs, 8 seeds,
  HR@10 gap to dense after fine-tuning, GMF / MLP dims kept per row):

  - 50%: 32 / 16 (mlp-first) -0.008 (0.008 *above* dense, SE 0.002); 24 / 24 -0.002;
    16 / 32 (uniform) +0.020 (SE 0.003). Same parameter count.
  - 75%: 23 / 1 +0.047; 22 / 2 +0.024; 20 / 4 (mlp-first, the floor) +0.009; 18 / 6 +0.010;
    16 / 8 +0.014; 12 / 12 +0.022; 8 / 16 (uniform) +0.044.

  Right after pruning, before fine-tuning, it is the other way round (at 50%: 0.17 vs 0.12
  below dense): a GMF factor is one rank of the user-item interaction and is not learnt back,
  while the tower re-learns to use fewer MLP dimensions, down to a point. So the damage before
  fine-tuning is a poor guide here.
* ``uniform``: every group (GMF factors, each MLP embedding) keeps ``(1 - rate)`` of its units.

Either way ``rate`` is the fraction of the *remaining* units, the parameter count shrinks by
about ``rate`` (embeddings dominate) and tower FLOPs by more.

Removing a unit is exactly equivalent to zeroing its weights in the dense model
(:meth:`StructuredPlan.equivalent_masks`): a removed neuron outputs ReLU(0) = 0, a removed
dimension contributes 0 to every dot product. Tests check that equality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ncfctl.masks import Masks
from ncfctl.models import NCF, NCFSpec

Norm = Literal["l1", "l2"]
Allocation = Literal["mlp-first", "uniform"]
MLP_FLOOR = 0.25  # mlp-first: each MLP embedding keeps at least this share of its uniform width (measured)
Selections = dict[str, list[tuple[int, torch.Tensor]]]  # param name -> [(dim, kept indices)]


def _norm(x: torch.Tensor, norm: Norm, dim: int) -> torch.Tensor:
    return torch.linalg.vector_norm(x, ord=1 if norm == "l1" else 2, dim=dim)


@torch.no_grad()
def unit_saliency(model: NCF, norm: Norm = "l1") -> dict[str, torch.Tensor]:
    """Saliency of every unit of every group (see the module docstring), keyed by group name."""
    spec = model.spec
    scores: dict[str, torch.Tensor] = {}
    if spec.has_gmf:
        scores["gmf"] = _norm(model.gmf_user.weight, norm, 0) * _norm(model.gmf_item.weight, norm, 0)
    if spec.has_mlp:
        scores["mlp_user"] = _norm(model.mlp_user.weight, norm, 0)
        scores["mlp_item"] = _norm(model.mlp_item.weight, norm, 0)
        for index, layer in enumerate(model.linear_layers()):
            scores[f"hidden.{index}"] = _norm(layer.weight, norm, 1)
    return scores


def _top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Sorted indices of the ``keep`` highest scores (ties: lower index wins, deterministic)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return torch.sort(order[:keep]).values


@dataclass(frozen=True)
class StructuredPlan:
    """Which units of each group survive, and how that maps onto an ``NCF``'s tensors."""

    keep: dict[str, torch.Tensor]  # group -> sorted int64 indices of the kept units

    def spec(self, model: NCF) -> NCFSpec:
        """The smaller model's spec (widths of groups the plan does not cover are unchanged)."""
        spec = model.spec
        update: dict[str, object] = {}
        if "gmf" in self.keep:
            update["factors"] = len(self.keep["gmf"])
        if spec.has_mlp:
            update["mlp_user_dim"] = len(self.keep["mlp_user"])
            update["mlp_item_dim"] = len(self.keep["mlp_item"])
            update["hidden"] = [len(self.keep[f"hidden.{i}"]) for i in range(len(spec.hidden))]
        return spec.model_copy(update=update)

    def selections(self, model: NCF) -> Selections:
        """For each parameter the plan shrinks, the kept indices along each affected dimension."""
        spec = model.spec
        names = {id(module): name for name, module in model.named_modules()}
        sel: Selections = {}
        predict_inputs: list[torch.Tensor] = []
        if spec.has_gmf:
            sel["gmf_user.weight"] = sel["gmf_item.weight"] = [(1, self.keep["gmf"])]
            predict_inputs.append(self.keep["gmf"])
        if spec.has_mlp:
            sel["mlp_user.weight"] = [(1, self.keep["mlp_user"])]
            sel["mlp_item.weight"] = [(1, self.keep["mlp_item"])]
            previous = torch.cat([self.keep["mlp_user"], spec.mlp_user_dim + self.keep["mlp_item"]])
            for index, layer in enumerate(model.linear_layers()):
                rows = self.keep[f"hidden.{index}"]
                sel[f"{names[id(layer)]}.weight"] = [(0, rows), (1, previous)]
                sel[f"{names[id(layer)]}.bias"] = [(0, rows)]
                previous = rows
            predict_inputs.append((spec.factors if spec.has_gmf else 0) + previous)
        sel["predict.weight"] = [(1, torch.cat(predict_inputs))]
        return sel

    def slice(self, model: NCF, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``tensors`` (a state_dict or masks of ``model``) cut down to the smaller shapes."""
        sel = self.selections(model)
        out = {}
        for name, tensor in tensors.items():
            for dim, index in sel.get(name, []):
                tensor = tensor.index_select(dim, index)
            out[name] = tensor.clone()
        return out

    def build(self, model: NCF) -> NCF:
        """The physically smaller dense model holding the kept rows/columns of ``model``."""
        smaller = NCF(self.spec(model))
        smaller.load_state_dict(self.slice(model, model.state_dict()))
        return smaller.train(model.training)

    def apply(self, model: NCF, masks: Masks | None = None) -> tuple[NCF, Masks | None]:
        """The smaller model, plus ``masks`` (from an earlier magnitude pass) cut to its shapes."""
        return self.build(model), (self.slice(model, masks) if masks else None)

    def equivalent_masks(self, model: NCF) -> Masks:
        """Masks on ``model`` (weights and biases) that zero exactly what :meth:`build` removes."""
        params = dict(model.named_parameters())
        masks: Masks = {}
        for name, dims in self.selections(model).items():
            mask = torch.ones_like(params[name], dtype=torch.bool)
            for dim, index in dims:
                along = torch.zeros(mask.shape[dim], dtype=torch.bool)
                along[index] = True
                shape = [1] * mask.dim()
                shape[dim] = -1
                mask &= along.view(shape)
            masks[name] = mask
        return masks


def keep_counts(
    spec: NCFSpec, rate: float, *, allocation: Allocation = "mlp-first", include_embeddings: bool = True
) -> dict[str, int]:
    """How many units of each group survive (see the module docstring)."""

    def kept(width: int) -> int:
        return max(1, round(width * (1 - rate)))

    counts = {f"hidden.{i}": kept(width) for i, width in enumerate(spec.hidden)} if spec.has_mlp else {}
    widths = {"gmf": spec.factors} if spec.has_gmf else {}
    if spec.has_mlp:
        widths.update(mlp_user=spec.mlp_user_dim, mlp_item=spec.mlp_item_dim)
    if not include_embeddings:
        return counts | widths
    if allocation == "uniform" or not (spec.has_gmf and spec.has_mlp):
        return counts | {group: kept(width) for group, width in widths.items()}
    user_row, item_row = kept(spec.factors + spec.mlp_user_dim), kept(spec.factors + spec.mlp_item_dim)
    user_floor, item_floor = (max(1, round(MLP_FLOOR * kept(dim))) for dim in (spec.mlp_user_dim, spec.mlp_item_dim))
    gmf = max(1, min(spec.factors, user_row - user_floor, item_row - item_floor))  # leaves both tables together
    return counts | {"gmf": gmf, "mlp_user": max(1, user_row - gmf), "mlp_item": max(1, item_row - gmf)}


def plan_structured(
    model: NCF,
    rate: float,
    *,
    norm: Norm = "l1",
    include_embeddings: bool = True,
    allocation: Allocation = "mlp-first",
) -> StructuredPlan:
    """Keep the most salient units of each group, as many as :func:`keep_counts` says."""
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    counts = keep_counts(model.spec, rate, allocation=allocation, include_embeddings=include_embeddings)
    return StructuredPlan({group: _top(scores, counts[group]) for group, scores in unit_saliency(model, norm).items()})
