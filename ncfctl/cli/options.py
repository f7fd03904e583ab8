"""Shared ``Annotated`` option aliases, so every command spells a flag, and offers its values, the same way.

A flag that picks from a fixed set of values takes that set from the config field it overrides
(:func:`choices`): the ``Literal`` in :mod:`ncfctl.config` is the one list, ``--help`` shows it and
click refuses anything else before a command body (or a heavy import) runs.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel

from ncfctl.config import (
    CompileConfig,
    DataConfig,
    DeployConfig,
    FinetuneConfig,
    ImageConfig,
    ModelConfig,
    PipelineConfig,
    PruneConfig,
    TrainConfig,
)


def choices(section: type[BaseModel], field: str) -> Any:
    """The ``Literal[...]`` a config field is declared with, as the type of the flag that sets it."""
    return section.model_fields[field].annotation


# --- choices, each from the config field the flag overrides ---
Dataset = choices(DataConfig, "dataset")
Split = choices(DataConfig, "split")
RatioOrder = choices(DataConfig, "ratio_order")
ModelType = choices(ModelConfig, "type")
Task = choices(TrainConfig, "task")
Device = choices(TrainConfig, "device")
TrainBackend = choices(TrainConfig, "backend")
FinetuneBackend = choices(FinetuneConfig, "backend")
PruneMethod = choices(PruneConfig, "method")
PruneScope = choices(PruneConfig, "scope")
PruneNorm = choices(PruneConfig, "norm")
PruneAllocation = choices(PruneConfig, "allocation")
PruneSchedule = choices(PruneConfig, "schedule")
CompileBackend = choices(CompileConfig, "backend")
CompileFramework = choices(CompileConfig, "framework")
ImageBackend = choices(ImageConfig, "backend")
DeployBackend = choices(DeployConfig, "backend")
PipelineBackend = choices(PipelineConfig, "backend")
RecommendBackend = Literal["local", "sagemaker"]  # no config field: recommend's backend is a flag only

# --- flags shared by several commands ---
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: config 'seed').")]
DatasetRefOpt = Annotated[
    str | None, typer.Option("--dataset-id", help="Dataset artifact id or folder (default: the latest).")
]
ModelRefOpt = Annotated[str | None, typer.Option("--model", help="Model artifact id or folder (default: the latest).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="Torch/ONNX Runtime threads.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", min=1, help="Training epochs.")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate (finite, > 0; config train.lr).")]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", min=1, help="Batch size.")]
CompiledRefOpt = Annotated[
    str | None, typer.Option("--compiled", help="Compiled artifact id or folder (default: the latest).")
]
ImageRefOpt = Annotated[str | None, typer.Option("--image", help="Image artifact id or folder (default: the latest).")]
DeploymentRefOpt = Annotated[
    str | None, typer.Option("--deployment", help="Deployment artifact id or folder (default: the newest running).")
]
