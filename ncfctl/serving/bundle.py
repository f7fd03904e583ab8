"""Write a serving bundle (everything except the runtime model files) for an :class:`~ncfctl.models.NCF`.

The format is defined once, in the container package :mod:`ncf_serving.bundle` (its docstring lists
the ``fastpath/`` arrays, and it holds the array writer); this module only fills it from torch
weights. The fast path exists so the server answers "top-K for one user" without recomputing
item-side work per request: the item half of the first MLP layer (plus its bias) and the GMF item
terms (with the output layer's GMF weights folded in) are computed here once, in float64 and
rounded to float32.

The caller (``ncfctl neo compile``) writes the model files named in ``models`` into the same folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from ncf_serving.bundle import (
    FASTPATH_DIR,
    IDS_DIR,
    OUT_BIAS,
    SEEN_DIR,
    SERVING_JSON,
    ServingSpec,
    tower_keys,
    write_arrays,
)
from ncf_serving.checksums import hash_folder
from pydantic import ValidationError

from ncfctl import fileio
from ncfctl.config import AnnConfig
from ncfctl.data.dataset import InteractionData
from ncfctl.errors import NcfError
from ncfctl.models import NCF
from ncfctl.serving.retrieval import build_index


def fastpath_arrays(model: NCF) -> dict[str, np.ndarray]:
    """The ``fastpath/`` arrays of ``model`` (keys documented in :mod:`ncf_serving.bundle`)."""
    spec = model.spec

    def f64(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().cpu().to(torch.float64).numpy()

    out_w = f64(model.predict.weight)[0]
    arrays: dict[str, np.ndarray] = {OUT_BIAS: f64(model.predict.bias).reshape(())}
    if spec.has_gmf:
        arrays["gmf_user"] = f64(model.gmf_user.weight)
        arrays["gmf_item"] = f64(model.gmf_item.weight) * out_w[: spec.factors]
    if spec.has_mlp:
        first, *rest = model.linear_layers()
        w1 = f64(first.weight)
        arrays["mlp_user"] = f64(model.mlp_user.weight)
        arrays["w1_user"] = w1[:, : spec.mlp_user_dim]
        arrays["item_pre"] = f64(model.mlp_item.weight) @ w1[:, spec.mlp_user_dim :].T + f64(first.bias)
        for layer, linear in enumerate(rest, start=2):
            w_key, b_key = tower_keys(layer)
            arrays[w_key] = f64(linear.weight).T
            arrays[b_key] = f64(linear.bias)
        arrays["out_mlp"] = out_w[spec.factors if spec.has_gmf else 0 :]
    return {name: np.array(value, dtype=np.float32, order="C") for name, value in arrays.items()}


def id_arrays(data: InteractionData) -> dict[str, np.ndarray]:
    """The ``ids/`` arrays: each raw-id table (as text) and the permutation that sorts it (for lookups)."""
    arrays: dict[str, np.ndarray] = {}
    for name, raw in (("user", data.user_ids), ("item", data.item_ids)):
        text = np.asarray(raw).astype(str)
        arrays[f"{name}_ids"] = text
        arrays[f"{name}_order"] = np.argsort(text, kind="stable")
    return arrays


def write_serving_bundle(
    folder: str | Path,
    model: NCF,
    data: InteractionData,
    *,
    runtime: str,
    models: list[dict[str, Any]],
    source_model: str | None,
    target: str | None,
    threads: int = 1,
    ann: AnnConfig | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``serving.json`` and the ``fastpath/``, ``seen_items/`` and ``ids/`` arrays into ``folder``,
    and with ``ann`` the ANN index ``retrieval.faiss`` (:mod:`ncfctl.serving.retrieval`).

    ``models`` lists the runtime model files, which the caller has already written into ``folder``
    (``[{"batch_size": None, "path": "model.onnx"}]`` or one entry per static batch size).
    ``serving.json`` is written last and records the sha256 of every other file in ``folder``, so
    the bundle carries its own checksums. Returns the ``serving.json`` document.
    """
    folder = Path(folder)
    spec = model.spec
    if (spec.num_users, spec.num_items) != (data.num_users, data.num_items):
        raise NcfError(
            f"model has {spec.num_users} users x {spec.num_items} items but the dataset has "
            f"{data.num_users} x {data.num_items}: serve a model with the dataset it was trained on"
        )
    try:
        serving = ServingSpec(
            runtime=runtime,
            models=models,
            task=spec.task,
            num_users=spec.num_users,
            num_items=spec.num_items,
            threads=threads,
            source_model=source_model,
            target=target,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise NcfError(f"serving bundle field '{field}': {first['msg']} (got {first.get('input')!r})") from None

    indptr, indices = data.seen_items(include_val=True)
    index_dtype = np.int32 if spec.num_items < np.iinfo(np.int32).max else np.int64
    folder.mkdir(parents=True, exist_ok=True)
    arrays = fastpath_arrays(model)
    write_arrays(folder / FASTPATH_DIR, arrays)
    write_arrays(folder / SEEN_DIR, {"indptr": indptr.astype(np.int64), "indices": indices.astype(index_dtype)})
    write_arrays(folder / IDS_DIR, id_arrays(data))
    if ann is not None:
        serving = serving.model_copy(update={"retrieval": build_index(folder, arrays, ann, seed, threads)})
    serving.files = hash_folder(folder, exclude=[SERVING_JSON])
    document = serving.model_dump(mode="json")
    fileio.write_json(folder / SERVING_JSON, document)
    return document
