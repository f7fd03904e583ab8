"""The operators ncfctl lets through to SageMaker Neo, and what to do about the ones it stops.

Neo compiles with TVM frontends that lag the frameworks (ONNX 1.7 / opset <= 12, PyTorch <= 2.0).
A graph that exports fine locally can still fail an hour later in the cloud with an opaque
``FailureReason``; the design doc's model hit exactly that with ``F.normalize`` (traced as
``aten::linalg_vector_norm``). So the preflight is an allow-list, not a block-list: every operator
here is a plain primitive that the TVM frontends have handled for years, anything else stops the
compile *before* upload, naming the operator and the layer. Known offenders carry a hint that
says which primitive ops replace them, e.g. :func:`manual_normalize` for ``F.normalize``.
"""

from __future__ import annotations

import torch

# Traced TorchScript (``torch.jit.trace(...).inlined_graph``) node kinds.
TORCH_SAFE_OPS = frozenset(
    {
        "prim::Constant",
        "prim::GetAttr",
        "prim::ListConstruct",
        "prim::ListUnpack",
        "prim::TupleConstruct",
        "prim::TupleUnpack",
        "prim::NumToTensor",
        "aten::embedding",
        "aten::linear",
        "aten::matmul",
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::t",
        "aten::transpose",
        "aten::permute",
        "aten::mul",
        "aten::add",
        "aten::sub",
        "aten::div",
        "aten::neg",
        "aten::abs",
        "aten::exp",
        "aten::log",
        "aten::sqrt",
        "aten::rsqrt",
        "aten::pow",
        "aten::sum",
        "aten::mean",
        "aten::clamp",
        "aten::clamp_min",
        "aten::clamp_max",
        "aten::relu",
        "aten::leaky_relu",
        "aten::sigmoid",
        "aten::tanh",
        "aten::softmax",
        "aten::dropout",
        "aten::batch_norm",
        "aten::layer_norm",
        "aten::cat",
        "aten::stack",
        "aten::squeeze",
        "aten::unsqueeze",
        "aten::view",
        "aten::reshape",
        "aten::flatten",
        "aten::expand",
        "aten::expand_as",
        "aten::contiguous",
        "aten::select",
        "aten::slice",
        "aten::size",
        "aten::Int",
        "aten::to",
    }
)

# ONNX node types (default domain) of a graph exported at opset <= 12.
ONNX_SAFE_OPS = frozenset(
    {
        "Gather",
        "Gemm",
        "MatMul",
        "Mul",
        "Add",
        "Sub",
        "Div",
        "Neg",
        "Abs",
        "Exp",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Pow",
        "ReduceSum",
        "ReduceMean",
        "Clip",
        "Max",
        "Min",
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Softmax",
        "Dropout",
        "BatchNormalization",
        "Concat",
        "Squeeze",
        "Unsqueeze",
        "Reshape",
        "Flatten",
        "Transpose",
        "Expand",
        "Slice",
        "Shape",
        "Cast",
        "Constant",
        "Identity",
    }
)

_NORMALIZE = (
    "F.normalize / torch.norm are not Neo-safe: divide by the norm built from primitive ops instead, "
    "ncfctl.export.manual_normalize(x, dim) (x / sqrt(sum(x*x)).clamp_min(eps))"
)
_EMBEDDING_BAG = "nn.EmbeddingBag is not Neo-safe: use nn.Embedding and reduce with .sum(dim=1) or .mean(dim=1)"
_SCRIPTED = (
    "scripted code (torch.jit.script) is not Neo-safe: use plain nn.Modules and Python control flow "
    "that torch.jit.trace can inline"
)

# Known offenders -> the fix. Anything else outside the allow-lists gets a generic hint.
HINTS: dict[str, str] = {
    "aten::linalg_vector_norm": _NORMALIZE,
    "aten::norm": _NORMALIZE,
    "aten::frobenius_norm": _NORMALIZE,
    "ReduceL2": _NORMALIZE,
    "LpNormalization": _NORMALIZE,
    "aten::embedding_bag": _EMBEDDING_BAG,
    "aten::_embedding_bag": _EMBEDDING_BAG,
    "prim::CallMethod": _SCRIPTED,
    "prim::CallFunction": _SCRIPTED,
    "prim::If": _SCRIPTED,
    "prim::Loop": _SCRIPTED,
}


def hint_for(op: str) -> str:
    """What to do about an operator outside the allow-list."""
    return HINTS.get(
        op,
        f"{op} is not on ncfctl's Neo-safe list: rewrite that layer with primitive ops "
        "(embedding, linear/matmul, elementwise math, relu/sigmoid, cat/reshape)",
    )


def manual_normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, p=2, dim=dim, eps=eps)`` from Neo-safe primitives (the design doc's fix).

    Same value as ``F.normalize``: ``x / max(||x||_2, eps)``; traces to ``mul, sum, sqrt,
    clamp_min, div`` instead of ``linalg_vector_norm``.
    """
    return x / (x * x).sum(dim=dim, keepdim=True).sqrt().clamp_min(eps)
