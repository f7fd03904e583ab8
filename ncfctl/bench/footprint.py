"""Parameters, non-zeros and size on disk of what a variant actually loads to serve.

Counted from the files themselves: the ``model.pt`` state dict for torch variants, the ONNX
initializers or TorchScript parameters of a bundle's model files. A DLR (Neo) model's weights
sit in TVM's binary params format, which nothing installed here parses, so those counts come from
the source model the bundle was compiled from and the row says so in a note. Size on disk is the
model file(s) a server needs, not the manifest or plots; a bundle with one model per static batch
size counts every copy, because a server loads them all, and an ONNX model's external weights file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ncf_serving.layout import SERVING_JSON

from ncfctl.models import MODEL_FILE, count_parameters, load_model

MB = 1024 * 1024


def _bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _onnx_files(path: Path) -> list[Path]:
    """An ONNX model file and the external data files its initializers live in."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    locations = {e.value for t in graph.initializer for e in t.external_data if e.key == "location"}
    return [path, *(path.parent / location for location in sorted(locations))]


def _counts(arrays: list[np.ndarray]) -> dict[str, int]:
    return {"parameters": int(sum(a.size for a in arrays)), "nonzeros": int(sum(np.count_nonzero(a) for a in arrays))}


def _onnx_counts(path: Path) -> dict[str, int]:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = [numpy_helper.to_array(t) for t in graph.initializer]
    return _counts([a for a in arrays if np.issubdtype(a.dtype, np.floating)])


def _torchscript_counts(path: Path) -> dict[str, int]:
    import torch

    return count_parameters(torch.jit.load(str(path), map_location="cpu"))


def model_footprint(model_dir: Path) -> dict[str, int]:
    """``parameters``, ``nonzeros``, ``file_bytes`` of a model artifact's ``model.pt``."""
    path = model_dir / MODEL_FILE
    return {**count_parameters(load_model(path)), "file_bytes": _bytes(path)}


def bundle_footprint(bundle: Path, source_model_dir: Path) -> tuple[dict[str, int], str | None]:
    """Counts and bytes of a bundle's model files; a note when counts had to come from the source model."""
    spec = json.loads((bundle / SERVING_JSON).read_text(encoding="utf-8"))
    files = [bundle / entry["path"] for entry in spec["models"]]
    first = files[0]  # every static batch size holds the same weights
    if spec["runtime"] == "onnxruntime":
        files = [f for model in files for f in _onnx_files(model)]
    note = None
    if spec["runtime"] == "onnxruntime":
        counts = _onnx_counts(first)
    elif spec["runtime"] == "torchscript":
        counts = _torchscript_counts(first)
    else:
        counts = count_parameters(load_model(source_model_dir / MODEL_FILE))
        note = f"{bundle.name}: {spec['runtime']} params are opaque, parameter counts are the source model's"
    return {**counts, "file_bytes": sum(_bytes(f) for f in files)}, note
