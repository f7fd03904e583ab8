"""Traced TorchScript: SageMaker Neo's PyTorch input (``model.pth``) and the graph the preflight inspects.

Neo's PyTorch frontend takes a *traced* module (``torch.jit.trace``), not a scripted one: tracing
records the primitive aten ops actually executed for example inputs, which is also the most
faithful view of what any exporter will see. ``torch.jit.trace`` is deprecated upstream in favour
of ``torch.export``, but Neo (PyTorch <= 2.0) cannot read ``torch.export`` programs, so the
deprecation warning is silenced here on purpose.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ncfctl import fileio
from ncfctl.errors import NcfError


def as_tensors(users: np.ndarray, items: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """int64 numpy index arrays -> tensors sharing their memory (no copy when already int64 and contiguous)."""
    return (
        torch.from_numpy(np.ascontiguousarray(users, np.int64)),
        torch.from_numpy(np.ascontiguousarray(items, np.int64)),
    )


def trace(model: nn.Module, users: np.ndarray, items: np.ndarray) -> torch.jit.ScriptModule:
    """``torch.jit.trace`` of ``model(user, item)``; a failure becomes one line naming the cause."""
    example = as_tensors(users, items)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.trace(model.eval(), example)
    except Exception as exc:  # tracing raises RuntimeError/TypeError/... from user code
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NcfError(
            f"torch.jit.trace of {type(model).__name__}(user, item) failed: {first}",
            hint="forward must take two int64 tensors and use only tensor ops (no data-dependent Python branches)",
        ) from None


def save(traced: torch.jit.ScriptModule, path: str | os.PathLike) -> Path:
    """Write ``model.pth`` atomically."""
    path = Path(path)
    with fileio.atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
    return path


def load(path: str | os.PathLike) -> torch.jit.ScriptModule:
    """Read back a file written by :func:`save` (parity checks run on what was written, not on memory)."""
    return torch.jit.load(str(path), map_location="cpu").eval()


@dataclass(frozen=True)
class TracedOp:
    """One operator of a traced graph and where it came from."""

    kind: str  # e.g. "aten::linear"
    layer: str  # module path ("mlp.0"), "" for the top-level forward
    origin: str  # the function that emitted it, e.g. "normalize" or "forward"

    @property
    def where(self) -> str:
        layer = f"layer '{self.layer}'" if self.layer else "the model's own forward"
        return f"{layer} (via {self.origin}())" if self.origin else layer


_FRAME = re.compile(r"\((\d+)\): (\w+)")


def _origin(node: torch._C.Node) -> str:
    """The function name in the node's source range, e.g. ``normalize`` for ``F.normalize``."""
    source = node.sourceRange().splitlines()
    match = _FRAME.search(source[0]) if source else None
    return match.group(2) if match else ""


def operators(traced: torch.jit.ScriptModule) -> list[TracedOp]:
    """Every operator node of the fully inlined graph, in execution order."""
    ops = []
    for node in traced.inlined_graph.nodes():
        scope = node.scopeName().split("/")[-1]
        ops.append(TracedOp(node.kind(), scope.removeprefix("__module."), _origin(node)))
    return ops
