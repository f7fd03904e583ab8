"""Shared ``Annotated`` option aliases, so every command spells common flags the same way."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: config 'seed').")]
DatasetRefOpt = Annotated[
    str | None, typer.Option("--dataset-id", help="Dataset artifact id or folder (default: the latest).")
]
ModelRefOpt = Annotated[str | None, typer.Option("--model", help="Model artifact id or folder (default: the latest).")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="Torch/ONNX Runtime threads.")]
EpochsOpt = Annotated[int | None, typer.Option("--epochs", min=1, help="Training epochs.")]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate (finite, > 0) [train.lr].")]
BatchSizeOpt = Annotated[int | None, typer.Option("--batch-size", min=1, help="Batch size.")]
TrainBackendOpt = Annotated[
    str | None, typer.Option("--backend", help="local (this machine) or sagemaker (a SageMaker training job).")
]
CompiledRefOpt = Annotated[
    str | None, typer.Option("--compiled", help="Compiled artifact id or folder (default: the latest).")
]
ImageRefOpt = Annotated[str | None, typer.Option("--image", help="Image artifact id or folder (default: the latest).")]
DeploymentRefOpt = Annotated[
    str | None, typer.Option("--deployment", help="Deployment artifact id or folder (default: the newest running).")
]
