"""What a pruned model really is: per-layer parameters, non-zeros, sparsity, and bytes.

Two sizes, because they answer different questions:

* ``dense_bytes``: ``torch.save`` of the state_dict as it is. Unstructured pruning leaves every
  shape intact, so this is NOT smaller than the source: a pruned weight is a 4-byte zero.
* ``compact_bytes``: the smallest honest encoding we can load back losslessly. Masked tensors
  as a packed bitmask (1 bit per entry) plus their kept values (4 bytes each), so 50% sparsity
  saves ~47%, not 50%. A structured-pruned model needs no encoding: its tensors are smaller, so
  its compact form is its dense form.

Both are measured by serialising into memory with ``torch.save`` (the same bytes a file would
hold), never estimated from counts.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
from torch import nn

from ncfctl.masks import Masks
from ncfctl.models import count_parameters

QUALITY_METRICS = ("hr", "ndcg", "full_hr", "full_ndcg", "rmse", "mae")


def serialized_bytes(obj: Any) -> int:
    """Bytes ``torch.save(obj)`` writes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer().nbytes


def compact_state(state: dict[str, torch.Tensor], masks: Masks) -> dict[str, Any]:
    """``state`` with each masked tensor as ``{"shape", "bits" (packed mask), "values" (kept entries)}``."""
    out: dict[str, Any] = {}
    for name, tensor in state.items():
        mask = masks.get(name)
        if mask is None:
            out[name] = tensor
        else:
            bits = np.packbits(mask.cpu().numpy().reshape(-1))
            out[name] = {"shape": list(tensor.shape), "bits": torch.from_numpy(bits), "values": tensor[mask].clone()}
    return out


def layer_rows(model: nn.Module, source: nn.Module) -> list[dict[str, Any]]:
    """One row per module owning parameters: shapes, counts, and sparsity vs ``source``.

    ``sparsity`` counts zeros inside the model's own tensors (what magnitude pruning creates);
    ``removed`` is ``1 - nonzeros / source parameters`` for the same layer, which also covers
    structured pruning, where the zeros were cut out of the shapes.
    """
    source_modules = dict(source.named_modules())
    rows = []
    for name, module in model.named_modules():
        params = list(module.parameters(recurse=False))
        if not params:
            continue
        total = sum(p.numel() for p in params)
        nonzeros = sum(int(torch.count_nonzero(p)) for p in params)
        source_total = sum(p.numel() for p in source_modules[name].parameters(recurse=False))
        rows.append(
            {
                "layer": name,
                "shape": "x".join(map(str, module.weight.shape)),
                "source_shape": "x".join(map(str, source_modules[name].weight.shape)),
                "parameters": total,
                "nonzeros": nonzeros,
                "sparsity": 1 - nonzeros / total,
                "source_parameters": source_total,
                "removed": 1 - nonzeros / source_total,
            }
        )
    return rows


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``total`` row of :func:`layer_rows`."""
    total = sum(r["parameters"] for r in rows)
    nonzeros = sum(r["nonzeros"] for r in rows)
    source_total = sum(r["source_parameters"] for r in rows)
    return {
        "layer": "total",
        "shape": "",
        "source_shape": "",
        "parameters": total,
        "nonzeros": nonzeros,
        "sparsity": 1 - nonzeros / total,
        "source_parameters": source_total,
        "removed": 1 - nonzeros / source_total,
    }


def sizes(model: nn.Module, masks: Masks | None) -> dict[str, Any]:
    """Serialized bytes of ``model`` as a dense state_dict and in its compact form."""
    state = model.state_dict()
    dense = serialized_bytes(state)
    if not masks:
        return {"dense_bytes": dense, "compact_bytes": dense, "compact_format": "dense"}
    return {
        "dense_bytes": dense,
        "compact_bytes": serialized_bytes(compact_state(state, masks)),
        "compact_format": "bitmask + kept values",
    }


def size_note(has_masks: bool, shrunk: bool) -> str:
    """The sentence a size table needs so nobody reads a saving that is not there."""
    parts = []
    if has_masks:
        parts.append(
            "masked (magnitude-pruned) weights are stored as zeros: the dense file is NOT smaller for them and "
            "dense inference is not faster; only the compact bitmask + kept values encoding saves bytes"
        )
    if shrunk:
        parts.append("removed units are cut out of the tensors: the dense file itself is smaller, with fewer FLOPs")
    return "; ".join(parts) or "no weights are pruned"


def stage_row(stage: str, artifact_id: str, model: nn.Module, masks: Masks | None, metrics: dict[str, Any]) -> dict:
    """One row of the before/after table: quality metrics, parameter counts and sizes of one model."""
    return {
        "stage": stage,
        "model": artifact_id,
        **{key: metrics[key] for key in QUALITY_METRICS if key in metrics},
        **count_parameters(model),
        **{key: value for key, value in sizes(model, masks).items() if key != "compact_format"},
    }
