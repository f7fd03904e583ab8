"""The compiler interface: turn a model into runtime model files inside a serving bundle folder.

Each backend (ONNX Runtime locally, SageMaker Neo in the cloud; TVM or OpenVINO could follow)
implements :class:`Compiler`. The service writes the bundle's common files (``serving.json``,
``fastpath/``, ...) around whatever the compiler returns, so a new compiler only has to
produce model files and say how the container should run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ncfctl.export.preflight import Framework
from ncfctl.models import NCF
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.targets import Target


@dataclass(frozen=True)
class CompileRequest:
    """What to compile, for where, and how strictly to check it."""

    name: str  # the compiled artifact's id: Neo job names and tags derive from it
    model: NCF
    model_id: str
    target: Target
    framework: Framework
    batch_size: int  # the static batch Neo compiles besides 1 (default: number of items)
    threads: int
    opset: int
    tolerance: float
    seed: int = 0

    @property
    def num_users(self) -> int:
        return self.model.spec.num_users

    @property
    def num_items(self) -> int:
        return self.model.spec.num_items


@dataclass
class CompileOutput:
    """The model files a compiler wrote, as ``serving.json`` describes them, plus its report."""

    runtime: str  # serving.json "runtime": onnxruntime | dlr | torchscript
    models: list[dict[str, Any]]  # serving.json "models" entries
    threads: int
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Compiler(Protocol):
    """A compiler backend; ``name`` is what ``--backend`` calls it."""

    name: str

    def check(self, request: CompileRequest) -> None:
        """Fail fast (NcfError) on anything that would stop :meth:`compile`, before any heavy work."""
        ...

    def compile(self, request: CompileRequest, folder: Path, progress: Progress = NO_PROGRESS) -> CompileOutput:
        """Write the runtime model files into ``folder`` (the bundle) and describe them."""
        ...
