"""The serving bundle: what ``ncfctl neo compile`` writes and the container mounts at ``/opt/ml/model``.

This module is the single definition of the format (file names, ``serving.json`` schema, array
names) and holds both the array reader and writer; the writer (``ncfctl.serving.bundle``) imports
them from here so the two sides cannot drift. It needs only numpy and pydantic, never torch.

Files::

    serving.json    see :class:`ServingSpec`; its ``files`` holds the sha256 of every other file
    fastpath/       numpy weights for the exact top-K fast path (names below)
    seen_items/     ``indptr`` (U+1,) int64, ``indices`` int32/int64: each user's train+val items
    ids/            ``user_ids``, ``item_ids``: unicode arrays, index -> raw id from the user's data;
                    ``user_order``, ``item_order``: the permutations that sort them (id lookup)
    model files     ``model.onnx`` | ``model.pth`` | a DLR folder per static batch size
    retrieval.faiss only with ``serving.json`` ``retrieval``: the ANN index (:mod:`ncf_serving.retrieval`)

Each folder holds one ``<name>.npy`` per array, never compressed: the server memory-maps them
read-only, so every worker process of a server shares one copy of the arrays in the page cache
instead of holding its own (format 1 used ``.npz`` archives, which numpy can only copy into
memory).

``fastpath/`` arrays (float32; present only for the parts the model has; NeuMF has all). The
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

Integrity: :func:`load_bundle` checks every file against ``serving.json`` ``files`` before reading
any of them, and refuses a bundle whose array folders or model files are not all covered, so a flipped byte
in ``model.onnx`` stops the server from ever reporting ready (ncfctl is not needed for the check).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ncf_serving.checksums import ChecksumError, verify_files
from ncf_serving.layout import ANN_INDEX, FASTPATH_DIR, FORMAT, IDS_DIR, SEEN_DIR, SERVING_JSON

__all__ = ["ANN_INDEX", "FASTPATH_DIR", "FORMAT", "IDS_DIR", "SEEN_DIR", "SERVING_JSON"]

GMF_KEYS = ("gmf_user", "gmf_item")
MLP_KEYS = ("mlp_user", "w1_user", "item_pre", "out_mlp")
OUT_BIAS = "out_bias"


def tower_keys(layer: int) -> tuple[str, str]:
    """Array names of MLP layer ``layer`` (2-based: layer 1 is split into ``w1_user``/``item_pre``)."""
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
    query and re-scored by the fast path. Its digest is in ``files`` like every other file's.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["faiss-ivf-flat"] = "faiss-ivf-flat"
    path: str = ANN_INDEX
    candidates: int = Field(gt=0)
    nprobe: int = Field(gt=0)

    @model_validator(mode="after")
    def _inside_bundle(self) -> RetrievalSpec:
        _check_inside(self.path)
        return self


class ServingSpec(BaseModel):
    """``serving.json``: which runtime serves which model files, and the model's input/output contract."""

    model_config = ConfigDict(extra="forbid")

    format: Literal[2] = FORMAT
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
    files: dict[str, str] = Field(default_factory=dict)  # relative path -> sha256, every file but serving.json
    retrieval: RetrievalSpec | None = None  # None: exact top-K over every item

    @model_validator(mode="after")
    def _one_dynamic_or_distinct_static(self) -> ServingSpec:
        sizes = [m.batch_size for m in self.models]
        if None in sizes and len(sizes) > 1:
            raise ValueError("models: a dynamic-batch model (batch_size null) must be the only one")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"models: batch sizes must be distinct, got {sizes}")
        for name in self.files:
            _check_inside(name)
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
    user_order: np.ndarray
    item_order: np.ndarray


def read_spec(folder: Path) -> ServingSpec:
    path = folder / SERVING_JSON
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path} not found: the model directory is not an ncfctl serving bundle") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    if isinstance(raw, dict) and raw.get("format") == 1:
        raise BundleError(
            f"{path}: bundle format 1 (.npz arrays, written by an older ncfctl); the server reads format "
            f"{FORMAT} (memory-mapped .npy arrays): compile the model again with `ncfctl neo compile`"
        )
    try:
        return ServingSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise BundleError(f"{path}: field '{field}': {first['msg']}") from None


def write_arrays(folder: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as ``folder/<name>.npy``, replacing the whole folder at once.

    The group is written into a temp folder beside ``folder`` and renamed over it, so a reader
    never sees half a group, and arrays of an earlier write (say a NeuMF's MLP arrays under a GMF
    bundle) never linger.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, array in arrays.items():
            np.save(staging / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; bundles are meant to be shared and browsed
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_arrays(folder: Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every ``folder/*.npy``, memory-mapped read-only: the page cache holds the one copy all workers share."""
    if not folder.is_dir():
        raise BundleError(f"{folder} not found (a folder of .npy arrays)")
    arrays: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob("*.npy")):
        try:
            arrays[path.stem] = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path} is not a readable .npy file: {exc}") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise BundleError(f"{folder} lacks arrays {missing}")
    return arrays


def verify_bundle(folder: Path, spec: ServingSpec) -> None:
    """Check every file against ``spec.files``; the array folders and every model file must be covered.

    A DLR model is a folder: it is covered when ``files`` records files under it.
    """
    if not spec.files:
        raise BundleError(
            f"{folder / SERVING_JSON} records no checksums ('files'): the bundle cannot be verified "
            "(written by an older ncfctl?): run ncfctl neo compile again"
        )
    index = [spec.retrieval.path] if spec.retrieval else []
    for name in (FASTPATH_DIR, SEEN_DIR, IDS_DIR, *index, *(m.path.rstrip("/") for m in spec.models)):
        if name not in spec.files and not any(f.startswith(f"{name}/") for f in spec.files):
            raise BundleError(f"{folder / SERVING_JSON}: 'files' does not cover {name}: the bundle cannot be verified")
    try:
        verify_files(folder, spec.files)
    except ChecksumError as exc:
        raise BundleError(f"{folder / exc.name}: {exc.problem} (serving.json 'files'); refusing to serve it") from None


def load_bundle(folder: str | Path) -> Bundle:
    """Verify every file's checksum, then read and cross-check everything except the runtime model files
    (arrays stay memory-mapped)."""
    folder = Path(folder)
    spec = read_spec(folder)
    verify_bundle(folder, spec)
    fastpath = read_arrays(folder / FASTPATH_DIR, (OUT_BIAS,))
    seen = read_arrays(folder / SEEN_DIR, ("indptr", "indices"))
    ids = read_arrays(folder / IDS_DIR, ("user_ids", "item_ids", "user_order", "item_order"))
    bundle = Bundle(
        folder=folder,
        spec=spec,
        fastpath=fastpath,
        seen_indptr=seen["indptr"].astype(np.int64, copy=False),
        seen_indices=seen["indices"],
        user_ids=ids["user_ids"],
        item_ids=ids["item_ids"],
        user_order=ids["user_order"],
        item_order=ids["item_order"],
    )
    _check_shapes(bundle)
    return bundle


def _check_shapes(bundle: Bundle) -> None:
    users, items = bundle.spec.num_users, bundle.spec.num_items
    checks = [
        (IDS_DIR, "user_ids", bundle.user_ids.shape, (users,)),
        (IDS_DIR, "item_ids", bundle.item_ids.shape, (items,)),
        (IDS_DIR, "user_order", bundle.user_order.shape, (users,)),
        (IDS_DIR, "item_order", bundle.item_order.shape, (items,)),
        (SEEN_DIR, "indptr", bundle.seen_indptr.shape, (users + 1,)),
    ]
    for table, rows in (("gmf_user", users), ("mlp_user", users), ("gmf_item", items), ("item_pre", items)):
        if table in bundle.fastpath:
            checks.append((FASTPATH_DIR, table, bundle.fastpath[table].shape[:1], (rows,)))
    for group, array, got, want in checks:
        if tuple(got) != want:
            path = bundle.folder / group / f"{array}.npy"
            raise BundleError(f"{path} has shape {tuple(got)}, serving.json implies {want}")
    tables = (("user", bundle.user_ids, bundle.user_order), ("item", bundle.item_ids, bundle.item_order))
    for name, ids, order in tables:
        ranked = ids[order] if order.dtype.kind in "iu" and np.all((order >= 0) & (order < len(ids))) else None
        if ranked is None or not np.all(ranked[1:] > ranked[:-1]):
            raise BundleError(
                f"{bundle.folder / IDS_DIR / name}_order.npy does not sort {name}_ids.npy into distinct ids"
            )
    seen = bundle.folder / SEEN_DIR
    indices = bundle.seen_indices
    if len(indices) and (indices.min() < 0 or indices.max() >= items):
        raise BundleError(f"{seen / 'indices.npy'} holds item indices outside [0, {items})")
    if bundle.seen_indptr[-1] != len(indices) or np.any(np.diff(bundle.seen_indptr) < 0):
        raise BundleError(f"{seen / 'indptr.npy'} is not a valid CSR row pointer")
    if not any(k in bundle.fastpath for k in (*GMF_KEYS, *MLP_KEYS)):
        raise BundleError(f"{bundle.folder / FASTPATH_DIR}: neither GMF nor MLP arrays present")
