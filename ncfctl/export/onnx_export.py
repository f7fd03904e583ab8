"""ONNX export in the shape SageMaker Neo and the serving container expect.

Neo's ONNX frontend accepts ONNX <= 1.7, i.e. opset <= 12 and IR version <= 7, so the export uses
torch's TorchScript-based exporter (``dynamo=False``): the newer ``torch.export`` exporter starts
at opset 18. Inputs are ``user`` and ``item`` (int64, 1-D) and the output is ``score`` (float32,
1-D), the serving bundle's contract. The batch axis is dynamic for runtimes that allow it (ONNX
Runtime) and fixed for Neo, whose compiled shapes are static.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ncfctl import fileio
from ncfctl.errors import NcfError
from ncfctl.export.torchscript import as_tensors

INPUTS = ("user", "item")
OUTPUT = "score"
NEO_MAX_OPSET = 12
NEO_MAX_IR_VERSION = 7  # ONNX 1.7


def export(
    model: nn.Module, users: np.ndarray, items: np.ndarray, *, opset: int, dynamic_batch: bool
) -> onnx.ModelProto:
    """Export ``model(user, item)`` with example inputs; static batch = ``len(users)`` unless dynamic."""
    if opset > NEO_MAX_OPSET:
        raise NcfError(f"compile.opset {opset}: SageMaker Neo accepts ONNX opset <= {NEO_MAX_OPSET}")
    axes = {name: {0: "batch"} for name in (*INPUTS, OUTPUT)} if dynamic_batch else None
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is the one Neo can read
            torch.onnx.export(
                model.eval(),
                as_tensors(users, items),
                buffer,
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                opset_version=opset,
                dynamic_axes=axes,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types for unsupported constructs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NcfError(f"ONNX export (opset {opset}) of {type(model).__name__} failed: {first}") from None
    return onnx.load_from_string(buffer.getvalue())


def save(proto: onnx.ModelProto, path: str | os.PathLike) -> Path:
    path = Path(path)
    fileio.write_bytes(path, proto.SerializeToString())
    return path
