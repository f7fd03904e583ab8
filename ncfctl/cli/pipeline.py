"""``ncfctl pipeline``: data -> train -> prune -> finetune -> compile -> image -> deploy -> invoke -> bench."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

import typer

from ncfctl.cli.bench import benchmark_payload, render_benchmark
from ncfctl.cli.context import command_context
from ncfctl.cli.options import JsonOpt

STATUS_STYLE = {"ran": "green", "up to date": "cyan", "skipped": "yellow"}


def register(app: typer.Typer) -> None:
    """Add ``ncfctl pipeline`` to the app."""

    @app.command("pipeline")
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
            Literal["local", "sagemaker"] | None,
            typer.Option("--backend", help="local (default) or sagemaker: training, Neo, CodeBuild, endpoint on AWS."),
        ] = None,
        keep_serving: Annotated[
            bool | None,
            typer.Option("--keep-serving/--stop-serving", help="Leave the deployment running after the benchmark."),
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Redo every step, even those whose artifact is fresh.")
        ] = False,
        json: JsonOpt = False,
    ) -> None:
        """Run the whole flow with defaults; steps whose artifact is up to date are skipped.

        data (default dataset), train, prune (--rate), finetune, neo compile (local unless AWS is
        configured), build-image (context), deploy (local), invoke (a smoke request), bench --compare
        all, then stop the deployment unless --keep-serving. --force redoes every step.
        """
        from ncfctl.pipeline import run_pipeline

        c = command_context(
            ctx,
            overrides={
                "pipeline.prune_rate": rate,
                "pipeline.train_epochs": epochs,
                "pipeline.finetune_epochs": finetune_epochs,
                "pipeline.backend": backend,
                "pipeline.keep_serving": keep_serving,
            },
            json_output=json,
        )
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
