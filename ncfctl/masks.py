"""Pruning masks: ``{parameter name: bool tensor}``, ``True`` = weight kept, ``False`` = pruned.

Masks are what makes unstructured pruning survive training: after every optimizer step the
pruned entries are written back to exactly zero (:func:`mask_lock`), so Adam's momentum cannot
revive them. They are stored with the artifact as ``masks.pt`` so that a later fine-tuning or a
second pruning pass knows which zeros are structural rather than accidental.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ncfctl import fileio
from ncfctl.errors import NcfError

MASKS_FILE = "masks.pt"

Masks = dict[str, torch.Tensor]


def prunable_weights(model: nn.Module, include_embeddings: bool = True) -> dict[str, nn.Parameter]:
    """The weight tensors magnitude pruning may touch: embedding tables and Linear weights.

    Biases are never pruned: they are a handful of values and zeroing them shifts every output.
    """
    found: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        is_embedding = isinstance(module, nn.Embedding)
        if isinstance(module, nn.Linear) or (is_embedding and include_embeddings):
            found[f"{module_name}.weight"] = module.weight
    return found


def full_masks(weights: dict[str, torch.Tensor]) -> Masks:
    """All-kept masks for ``weights`` (the starting point of a first pruning pass)."""
    return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Set every pruned entry of ``model`` to exactly zero, in place."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].masked_fill_(~mask.to(params[name].device), 0.0)


def mask_lock(masks: Masks) -> Callable[[nn.Module], None]:
    """An ``after_step`` callback for :func:`ncfctl.training.fit` that keeps pruned weights at zero.

    The inverted masks are computed once (and moved to the model's device on first use) so the
    per-step cost is one ``masked_fill_`` per pruned tensor.
    """
    pruned: dict[str, torch.Tensor] = {name: ~mask for name, mask in masks.items()}

    @torch.no_grad()
    def lock(model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, holes in pruned.items():
            param = params[name]
            if holes.device != param.device:
                holes = pruned[name] = holes.to(param.device)
            param.masked_fill_(holes, 0.0)

    return lock


def check_masks(masks: Masks, model: nn.Module, source: str) -> None:
    """Masks must name parameters of ``model`` with the same shapes (a stale file fails loudly)."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise NcfError(f"{source}: mask for unknown parameter '{name}'")
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(params[name].shape):
            raise NcfError(
                f"{source}: mask '{name}' is {mask.dtype} {tuple(mask.shape)}, "
                f"expected bool {tuple(params[name].shape)}"
            )


def check_locked(model: nn.Module, masks: Masks, source: str) -> None:
    """A model trained elsewhere (a SageMaker job) must come back with every pruned weight still zero."""
    check_masks(masks, model, source)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        leaked = int(torch.count_nonzero(params[name].detach()[~mask]))
        if leaked:
            raise NcfError(f"{source}: {leaked} pruned weights of '{name}' are non-zero (the masks were not applied)")


def save_masks(path: str | os.PathLike, masks: Masks) -> None:
    with fileio.atomic_path(path) as tmp:
        torch.save({name: mask.cpu() for name, mask in masks.items()}, tmp)


def load_masks(path: str | os.PathLike, model: nn.Module) -> Masks:
    """Read ``masks.pt`` (``weights_only``) and check it against ``model``."""
    path = Path(path)
    try:
        masks = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or unsafe file: torch raises several types
        raise NcfError(f"cannot load masks file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(masks, dict) or not all(isinstance(m, torch.Tensor) for m in masks.values()):
        raise NcfError(f"masks file {path} is not a dict of tensors")
    check_masks(masks, model, str(path))
    return masks


def sparsity(masks: Masks) -> float:
    """Fraction of masked entries that are pruned (0 for no masks)."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 0.0 if total == 0 else 1.0 - kept / total
