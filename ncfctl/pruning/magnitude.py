"""Unstructured magnitude pruning: remove the smallest-|w| weights, globally or per layer.

``rate`` is always the fraction of the weights that are still unpruned, so passes compose:
pruning 50% and then 50% again leaves 25% (total sparsity ``1 - (1 - a)(1 - b)``). Exactly
``round(rate * remaining)`` weights go in each pass (ties broken by position), so the sparsity a
manifest reports is the one asked for, not whatever a threshold happened to catch.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ncfctl.masks import Masks, full_masks, prunable_weights

Scope = Literal["global", "layer"]


def _prune_smallest(magnitudes: torch.Tensor, kept: torch.Tensor, rate: float) -> torch.Tensor:
    """``kept`` (flat bool) minus the ``round(rate * kept.sum())`` smallest kept ``magnitudes``."""
    remaining = int(kept.sum())
    count = round(rate * remaining)
    if count == 0:
        return kept.clone()
    # Already-pruned entries sort first (-1 < any |w|), so the next ``count`` are the smallest kept ones.
    scores = torch.where(kept, magnitudes, torch.full_like(magnitudes, -1.0))
    order = torch.argsort(scores, stable=True)
    new = kept.clone()
    new[order[: kept.numel() - remaining + count]] = False
    return new


@torch.no_grad()
def magnitude_masks(
    model: nn.Module,
    rate: float,
    *,
    scope: Scope = "global",
    include_embeddings: bool = True,
    masks: Masks | None = None,
) -> Masks:
    """Masks removing the fraction ``rate`` of the still-kept prunable weights with the smallest |w|.

    ``scope="global"`` uses one ranking across every prunable tensor (layers with many small
    weights, such as NCF's embedding tables, lose more); ``"layer"`` prunes each tensor by the
    same fraction. ``masks`` are earlier masks to extend (their pruned entries stay pruned and do
    not count as "remaining"); tensors they do not cover start fully kept, and earlier masks of
    tensors not pruned now (embeddings with ``include_embeddings=False``) are returned unchanged.
    """
    if not 0 < rate < 1:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    weights = prunable_weights(model, include_embeddings)
    start = full_masks(weights) | {k: v for k, v in (masks or {}).items() if k in weights}
    out: Masks = dict(masks or {})
    if scope == "layer":
        for name, w in weights.items():
            out[name] = _prune_smallest(w.detach().abs().flatten(), start[name].flatten(), rate).view_as(w)
        return out
    names = list(weights)
    flat = _prune_smallest(
        torch.cat([weights[n].detach().abs().flatten() for n in names]),
        torch.cat([start[n].flatten() for n in names]),
        rate,
    )
    offset = 0
    for name in names:
        size = weights[name].numel()
        out[name] = flat[offset : offset + size].view_as(weights[name])
        offset += size
    return out
