"""``ncfctl pipeline``: the local flow, or ``--backend sagemaker``: a SageMaker Pipeline upserted and started."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from ncfctl.cli.bench import benchmark_payload, render_benchmark
from ncfctl.cli.context import command_context
from ncfctl.cli.options import DatasetRefOpt, JsonOpt, PipelineBackend
from ncfctl.cli.output import artifact_fields
from ncfctl.errors import NcfError

STATUS_STYLE = {"ran": "green", "up to date": "cyan", "skipped": "yellow"}
STEP_STYLE = {"Succeeded": "green", "Executing": "cyan", "Starting": "cyan", "Failed": "red", "Stopped": "yellow"}


def pipeline_command(
    ctx: typer.Context,
    rate: Annotated[
        float | None, typer.Option("--rate", min=0.0, max=1.0, help="Pruning rate (default: pipeline.prune_rate).")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Training epochs (default: pipeline.train_epochs).")
    ] = None,
    finetune_epochs: Annotated[
        int | None,
        typer.Option("--finetune-epochs", min=1, help="Fine-tuning epochs (default: pipeline.finetune_epochs)."),
    ] = None,
    backend: Annotated[
        PipelineBackend | None,
        typer.Option(
            "--backend",
            help="local (default) or sagemaker: upsert and start a SageMaker Pipeline (train, prune + fine-tune, "
            "evaluate, HR@K gate, register into aws.model_package_group).",
        ),
    ] = None,
    min_hit_rate: Annotated[
        float | None,
        typer.Option("--min-hit-rate", min=0.0, max=1.0, help="sagemaker: register only if test HR@K >= this."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="sagemaker: follow the execution (default) or return at once.")
    ] = True,
    definition_only: Annotated[
        bool,
        typer.Option(
            "--definition-only",
            help="sagemaker: write the pipeline definition JSON into the workspace, call no AWS.",
        ),
    ] = False,
    dataset: DatasetRefOpt = None,
    keep_serving: Annotated[
        bool | None,
        typer.Option("--keep-serving/--stop-serving", help="Leave the deployment running after the benchmark."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo every step, even those whose artifact is fresh.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Run the whole flow with defaults; steps whose artifact is up to date are skipped.

    data (default dataset), train, baseline (ALS on the same data: pipeline.baseline), prune
    (--rate), finetune, neo compile (local unless AWS is configured), build-image (context),
    deploy (local), invoke (a smoke request), bench --compare all, then stop the deployment
    (--keep-serving leaves it up). --force redoes every step.

    --backend sagemaker runs train, prune + fine-tune and evaluation as a SageMaker Pipeline on
    the latest dataset (or --dataset-id) and registers the model if it passes --min-hit-rate.
    """
    c = command_context(
        ctx,
        overrides={
            "pipeline.prune_rate": rate,
            "pipeline.train_epochs": epochs,
            "pipeline.finetune_epochs": finetune_epochs,
            "pipeline.backend": backend,
            "pipeline.keep_serving": keep_serving,
            "pipeline.min_hit_rate": min_hit_rate,
        },
        json_output=json_output,
    )
    if c.config.pipeline.backend == "sagemaker":
        if force or keep_serving is not None:
            raise NcfError("--force and --keep-serving belong to the local pipeline, not --backend sagemaker")
        _sagemaker(c, dataset, wait, definition_only)
        return
    if not wait or definition_only or dataset or min_hit_rate is not None:
        raise NcfError("--no-wait, --definition-only, --dataset-id and --min-hit-rate need --backend sagemaker")
    from ncfctl.pipeline import run_pipeline

    with c.out.progress() as progress:

        def on_step(outcome) -> None:
            style = STATUS_STYLE.get(outcome.status, "white")
            detail = f"  {outcome.detail}" if outcome.detail else ""
            progress.console.print(
                f"[{style}]{outcome.status:>10}[/{style}]  {outcome.step:<11} {outcome.artifact or '':<34} "
                f"{outcome.seconds:7.1f} s{detail}",
                highlight=False,
            )

        result = run_pipeline(c.config, c.workspace, force=force, progress=progress, on_step=on_step)
    payload = {
        "seconds": result.seconds,
        "steps": [asdict(s) for s in result.steps],
        "benchmark": benchmark_payload(result.benchmark) if result.benchmark is not None else None,
    }

    def render() -> None:
        title = f"Pipeline ({result.seconds:.1f} s)"
        c.out.table(payload["steps"], title=title, columns=["step", "status", "artifact", "seconds", "detail"])
        if payload["benchmark"] is not None:
            render_benchmark(c.out, payload["benchmark"])

    c.out.result(payload, render)


def _sagemaker(c, dataset: str | None, wait: bool, definition_only: bool) -> None:
    """``--backend sagemaker``: upsert + start (+ follow), one line per step status change."""
    from ncfctl.pipeline import pipeline_config
    from ncfctl.pipeline_sagemaker.run import DEFINITION_FILE, run_sagemaker_pipeline

    with c.out.progress() as progress:

        def on_step(row: dict) -> None:
            style = STEP_STYLE.get(row["status"], "white")
            detail = f"  {row['detail']}" if row.get("detail") else ""
            progress.console.print(
                f"[{style}]{row['status']:>10}[/{style}]  {row['step']:<14}{detail}", highlight=False
            )

        artifact = run_sagemaker_pipeline(
            pipeline_config(c.config),
            c.workspace,
            dataset_ref=dataset,
            wait=wait,
            definition_only=definition_only,
            progress=progress,
            on_step=on_step,
        )
    info = artifact.manifest.info
    payload = {**artifact_fields(artifact), "definition": str(artifact.path / DEFINITION_FILE), **info.recorded()}

    def render() -> None:
        shown = {k: v for k, v in payload.items() if not isinstance(v, (dict, list)) and v is not None}
        c.out.kv(shown, title=f"SageMaker pipeline {info.pipeline_name}")
        if info.steps:
            c.out.table(info.steps, title="steps", columns=["step", "status", "detail"])
        if info.model_package_arn:
            c.out.success(f"registered {info.model_package_arn} (approve with `ncfctl registry approve`)")

    c.out.result(payload, render)


def register(app: typer.Typer) -> None:
    """Add ``ncfctl pipeline`` to the app."""
    app.command("pipeline")(pipeline_command)
