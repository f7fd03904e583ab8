"""The serving bundle: what ``ncfctl neo compile`` writes and the container mounts at ``/opt/ml/model``.

This module is the single definition of the format (file names, ``serving.json`` schema, npz keys);
the writer (``ncfctl.serving.bundle``) imports the names from here so the two sides cannot drift.
It needs only numpy and pydantic, never torch.

Files::

    serving.json    see :class:`ServingSpec`
    fastpath.npz    numpy weights for the exact top-K fast path (keys below)
    seen_items.npz  ``indptr`` (U+1,) int64, ``indices`` int32/int64: each user's train+val items
    ids.npz         ``user_ids``, ``item_ids``: unicode arrays, index -> raw id from the user's data
    model files     ``model.onnx`` | ``model.pth`` | a DLR folder per static batch size
    retrieval.faiss only with ``serving.json`` ``retrieval``: the ANN index (:mod:`ncf_serving.retrieval`)

``fastpath.npz`` keys (float32; present only for the parts the model has; NeuMF has all). The
score of ``(u, i)`` is ``out_bias + gmf_user[u] . gmf_item[i] + out_mlp . tower(u, i)`` where
``tower`` starts from ``relu(item_pre[i] + w1_user @ mlp_user[u])`` and applies each remaining
``relu(h @ mlp_w{k} + mlp_b{k})``. Everything that depends only on the item is precomputed, so a
top-K request costs one user-side mat-vec plus one pass over the item matrices:

* ``gmf_user`` (U, F): GMF user embeddings.
* ``gmf_item`` (I, F): GMF item embeddings with the output layer's GMF weights folded in
  (``q_i * h_gmf``; exact up to float rounding, as multiplication is associative).
* ``mlp_user`` (U, Du): MLP user embeddings.
* ``w1_user`` (H1, Du): the user columns of the first MLP layer's weight.
* ``item_pre`` (I, H1): ``mlp_item @ W1_item.T + b1``, the item half of the first layer plus its bias.
* ``mlp_w2, mlp_b2, ... mlp_w{L}, mlp_b{L}``: the remaining tower layers, weights stored
  ``(in, out)`` so a batch of hidden states multiplies them directly.
* ``out_mlp`` (H_L,): the output layer's weights on the MLP tower.
* ``out_bias`` (): the output layer's bias.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ncf_serving.layout import ANN_INDEX, FASTPATH_NPZ, FORMAT, IDS_NPZ, SEEN_NPZ, SERVING_JSON

__all__ = ["ANN_INDEX", "FASTPATH_NPZ", "FORMAT", "IDS_NPZ", "SEEN_NPZ", "SERVING_JSON"]

GMF_KEYS = ("gmf_user", "gmf_item")
MLP_KEYS = ("mlp_user", "w1_user", "item_pre", "out_mlp")
OUT_BIAS = "out_bias"


def tower_keys(layer: int) -> tuple[str, str]:
    """npz keys of MLP layer ``layer`` (2-based: layer 1 is split into ``w1_user``/``item_pre``)."""
    return f"mlp_w{layer}", f"mlp_b{layer}"


class BundleError(Exception):
    """The bundle in the model directory is missing a file or holds an inconsistent value."""


def _check_inside(path: str) -> None:
    if Path(path).is_absolute() or ".." in Path(path).parts:
        raise ValueError(f"path {path!r} must be relative and stay inside the bundle")


class ModelFile(BaseModel):
    """One runtime model: ``batch_size`` null means any batch (dynamic); otherwise exactly that many pairs."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | None = Field(default=None, gt=0)
    path: str = Field(min_length=1)

    @model_validator(mode="after")
    def _inside_bundle(self) -> ModelFile:
        _check_inside(self.path)
        return self


class RetrievalSpec(BaseModel):
    """``serving.json`` ``retrieval``: top-K from an ANN index's candidates, re-ranked exactly.

    The index is a FAISS ``IndexIVFFlat`` (inner product) over ``[gmf_item | mean MLP score]``;
    ``candidates`` items are retrieved per request from the ``nprobe`` inverted lists nearest the
    query and re-scored by the fast path. ``sha256`` is the index file's digest, checked at load.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["faiss-ivf-flat"] = "faiss-ivf-flat"
    path: str = ANN_INDEX
    candidates: int = Field(gt=0)
    nprobe: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _inside_bundle(self) -> RetrievalSpec:
        _check_inside(self.path)
        return self


class ServingSpec(BaseModel):
    """``serving.json``: which runtime serves which model files, and the model's input/output contract."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[1] = FORMAT
    runtime: Literal["onnxruntime", "dlr", "torchscript"]
    models: list[ModelFile] = Field(min_length=1)
    task: Literal["implicit", "explicit"]
    num_users: int = Field(gt=0)
    num_items: int = Field(gt=0)
    inputs: list[str] = Field(default_factory=lambda: ["user", "item"])
    output: str = "score"
    threads: int = Field(default=1, gt=0)
    source_model: str | None = None
    target: str | None = None
    retrieval: RetrievalSpec | None = None  # None: exact top-K over every item

    @model_validator(mode="after")
    def _one_dynamic_or_distinct_static(self) -> ServingSpec:
        sizes = [m.batch_size for m in self.models]
        if None in sizes and len(sizes) > 1:
            raise ValueError("models: a dynamic-batch model (batch_size null) must be the only one")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"models: batch sizes must be distinct, got {sizes}")
        return self

    @property
    def dynamic(self) -> bool:
        return self.models[0].batch_size is None


@dataclass
class Bundle:
    """A loaded bundle minus the runtime model files (those are opened by :mod:`ncf_serving.runtimes`)."""

    folder: Path
    spec: ServingSpec
    fastpath: dict[str, np.ndarray]
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray


def read_spec(folder: Path) -> ServingSpec:
    path = folder / SERVING_JSON
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} not found: the model directory is not an ncfctl serving bundle") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    try:
        return ServingSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise BundleError(f"{path}: field '{field}': {first['msg']}") from None


def _load_npz(path: Path, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise BundleError(f"{path} not found") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is not a readable npz file: {exc}") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise BundleError(f"{path} lacks arrays {missing}")
    return arrays


def load_bundle(folder: str | Path) -> Bundle:
    """Read and cross-check everything except the runtime model files."""
    folder = Path(folder)
    spec = read_spec(folder)
    fastpath = _load_npz(folder / FASTPATH_NPZ, (OUT_BIAS,))
    seen = _load_npz(folder / SEEN_NPZ, ("indptr", "indices"))
    ids = _load_npz(folder / IDS_NPZ, ("user_ids", "item_ids"))
    bundle = Bundle(
        folder=folder,
        spec=spec,
        fastpath=fastpath,
        seen_indptr=seen["indptr"].astype(np.int64, copy=False),
        seen_indices=seen["indices"],
        user_ids=ids["user_ids"],
        item_ids=ids["item_ids"],
    )
    _check_shapes(bundle)
    return bundle


def _check_shapes(bundle: Bundle) -> None:
    users, items = bundle.spec.num_users, bundle.spec.num_items
    checks = {
        f"{IDS_NPZ}:user_ids": (bundle.user_ids.shape, (users,)),
        f"{IDS_NPZ}:item_ids": (bundle.item_ids.shape, (items,)),
        f"{SEEN_NPZ}:indptr": (bundle.seen_indptr.shape, (users + 1,)),
    }
    for table, rows in (("gmf_user", users), ("mlp_user", users), ("gmf_item", items), ("item_pre", items)):
        if table in bundle.fastpath:
            checks[f"{FASTPATH_NPZ}:{table}"] = (bundle.fastpath[table].shape[:1], (rows,))
    for name, (got, want) in checks.items():
        if tuple(got) != want:
            file, array = name.split(":")
            raise BundleError(f"{bundle.folder / file}: '{array}' has shape {tuple(got)}, serving.json implies {want}")
    indices = bundle.seen_indices
    if len(indices) and (indices.min() < 0 or indices.max() >= items):
        raise BundleError(f"{bundle.folder / SEEN_NPZ}: 'indices' holds item indices outside [0, {items})")
    if bundle.seen_indptr[-1] != len(indices) or np.any(np.diff(bundle.seen_indptr) < 0):
        raise BundleError(f"{bundle.folder / SEEN_NPZ}: 'indptr' is not a valid CSR row pointer")
    if not any(k in bundle.fastpath for k in (*GMF_KEYS, *MLP_KEYS)):
        raise BundleError(f"{bundle.folder / FASTPATH_NPZ}: neither GMF nor MLP arrays present")
