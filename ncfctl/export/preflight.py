"""Export a model for a compiler and prove, before any upload, that the export is compilable and exact.

A SageMaker Neo job takes minutes and reports failures as one opaque line; the cheap checks run
here first, in this order, each failing with one line that names the layer/operator and the fix:

1. modules: no scripted submodules (Neo needs a traced graph), no NaN/inf parameters;
2. ``torch.jit.trace`` succeeds and every traced operator is on the Neo-safe list;
3. the ONNX export (opset <= 12, IR <= 7, int64 ``user``/``item`` -> float32 ``score``) holds only
   Neo-safe nodes (ONNX framework);
4. numeric parity: the *written* file (ONNX via ONNX Runtime, or ``model.pth`` reloaded) against
   PyTorch eager on random pairs, max abs diff <= ``compile.parity_tolerance``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ncfctl.errors import NcfError
from ncfctl.export import onnx_export, torchscript
from ncfctl.export.neo_ops import HINTS, ONNX_SAFE_OPS, TORCH_SAFE_OPS, hint_for
from ncfctl.export.runners import ScoreFn, ort_scorer, ort_session, torch_scorer

Framework = Literal["onnx", "pytorch"]
FILE_NAMES: dict[str, str] = {"onnx": "model.onnx", "pytorch": "model.pth"}
DYNAMIC_PARITY_BATCHES = (1, 1024)  # batch 1 catches shapes a trace specialised on the example batch
TRACE_EXAMPLE_BATCH = 2


@dataclass
class ExportReport:
    """What :func:`export_checked` wrote and proved."""

    framework: Framework
    path: Path
    batch_size: int | None  # None: dynamic batch
    operators: list[str] = field(default_factory=list)  # distinct operators of the written graph
    max_abs_diff: float = 0.0
    parity_pairs: int = 0


def random_pairs(num_users: int, num_items: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniformly random (user, item) index pairs, int64."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, num_users, n, dtype=np.int64), rng.integers(0, num_items, n, dtype=np.int64)


def _fail(what: str, hint: str) -> NcfError:
    return NcfError(f"model fails the Neo preflight: {what}", hint=hint)


def check_modules(model: nn.Module) -> None:
    """Scripted submodules and non-finite weights, named by their module/parameter path."""
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            raise _fail(f"layer '{name or type(module).__name__}' is a scripted module", hint_for("prim::CallMethod"))
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            bad = int((~torch.isfinite(param)).sum())
            raise _fail(
                f"parameter '{name}' holds {bad} NaN/inf values",
                "training diverged or the file is damaged: retrain, or fine-tune with a lower learning rate",
            )


def check_traced(traced: torch.jit.ScriptModule) -> list[str]:
    """Every traced operator must be Neo-safe; returns the distinct operator kinds."""
    ops = torchscript.operators(traced)
    unsafe = [op for op in ops if op.kind not in TORCH_SAFE_OPS]
    if unsafe:
        # a known offender (e.g. embedding_bag) explains its helper ops (numel, arange), so name it first
        worst = next((op for op in unsafe if op.kind in HINTS), unsafe[0])
        others = sorted({op.kind for op in unsafe} - {worst.kind})
        more = f" (also unsafe: {', '.join(others)})" if others else ""
        raise _fail(f"operator {worst.kind} in {worst.where} is not on the Neo-safe list{more}", hint_for(worst.kind))
    return list(dict.fromkeys(op.kind for op in ops))


def check_onnx(proto: onnx.ModelProto) -> list[str]:
    """Opset/IR version, the I/O contract and Neo-safe nodes; returns the distinct node types."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset > onnx_export.NEO_MAX_OPSET:
        raise _fail(f"ONNX opset {opset} > {onnx_export.NEO_MAX_OPSET}", "set compile.opset to 12 or lower")
    if proto.ir_version > onnx_export.NEO_MAX_IR_VERSION:
        raise _fail(
            f"ONNX IR version {proto.ir_version} > {onnx_export.NEO_MAX_IR_VERSION} (ONNX 1.7)",
            "export with a lower opset (compile.opset)",
        )
    int64, float32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    expected = [(n, int64) for n in onnx_export.INPUTS]
    got = [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input]
    outputs = [(o.name, o.type.tensor_type.elem_type) for o in proto.graph.output]
    if got != expected or outputs != [(onnx_export.OUTPUT, float32)]:
        raise _fail(
            f"ONNX graph inputs {got} -> outputs {outputs}; the serving contract is "
            "user,item (int64) -> score (float32)",
            "forward(user, item) must take int64 index tensors and return one float32 score per pair",
        )
    kinds: dict[str, None] = {}
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in ONNX_SAFE_OPS:
            layer = node.name.rsplit("/", 1)[0].strip("/") or "the model's own forward"
            what = f"ONNX operator {node.op_type} in layer '{layer}' is not on the Neo-safe list"
            raise _fail(what, hint_for(node.op_type))
        kinds[node.op_type] = None
    return list(kinds)


def max_abs_diff(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Largest absolute difference; inf when shapes differ, NaN when either side is not finite."""
    reference, candidate = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    if reference.shape != candidate.shape:
        return float("inf")
    return float(np.max(np.abs(reference - candidate))) if reference.size else 0.0


def check_parity(
    reference: ScoreFn, candidate: ScoreFn, pairs: list[tuple[np.ndarray, np.ndarray]], tolerance: float, what: str
) -> tuple[float, int]:
    """Max abs diff of ``candidate`` vs ``reference`` over every batch in ``pairs``; NcfError above ``tolerance``."""
    diffs = [max_abs_diff(reference(users, items), candidate(users, items)) for users, items in pairs]
    worst = float(np.max(diffs))  # NaN propagates: a non-finite score always fails
    count = sum(len(users) for users, _ in pairs)
    if not worst <= tolerance:
        raise NcfError(
            f"{what} differs from PyTorch eager by max abs {worst:.3g} on {count} random pairs "
            f"(compile.parity_tolerance {tolerance:g})",
            hint="a runtime rewrote the math (fusions, precision); raise the tolerance only if rankings still agree",
        )
    return worst, count


def export_checked(
    model: nn.Module,
    folder: str | os.PathLike,
    *,
    framework: Framework,
    num_users: int,
    num_items: int,
    batch_size: int | None,
    opset: int,
    tolerance: float,
    seed: int = 0,
) -> ExportReport:
    """Run the preflight and write ``model.onnx`` / ``model.pth`` into ``folder``.

    ``batch_size`` None exports a dynamic batch axis (ONNX only; TorchScript is shape-agnostic).
    """
    model = model.eval()
    check_modules(model)
    example = random_pairs(num_users, num_items, batch_size or TRACE_EXAMPLE_BATCH, seed)
    traced = torchscript.trace(model, *example)
    operators = check_traced(traced)
    path = Path(folder) / FILE_NAMES[framework]
    sizes = [batch_size] if batch_size else list(DYNAMIC_PARITY_BATCHES)
    pairs = [random_pairs(num_users, num_items, n, seed + 1 + k) for k, n in enumerate(sizes)]
    if framework == "onnx":
        proto = onnx_export.export(model, *example, opset=opset, dynamic_batch=batch_size is None)
        operators = check_onnx(proto)
        onnx_export.save(proto, path)
        # graph rewrites off: parity judges the exported graph as Neo will read it
        exported = ort_scorer(ort_session(path, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL))
    else:
        torchscript.save(traced, path)
        exported = torch_scorer(torchscript.load(path))
    diff, count = check_parity(torch_scorer(model), exported, pairs, tolerance, f"exported {path.name}")
    return ExportReport(framework, path, batch_size, operators, diff, count)
