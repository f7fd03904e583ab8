"""``ncfctl neo compile | status | targets``: compile a model into a serving bundle, locally or with SageMaker Neo."""

from __future__ import annotations

from typing import Annotated

import typer

from ncfctl.cli.context import command_context
from ncfctl.cli.options import BatchSizeOpt, CompileBackend, CompileFramework, JsonOpt, ModelRefOpt, ThreadsOpt
from ncfctl.cli.output import Output, artifact_fields
from ncfctl.errors import NcfError

SPEED_ROWS = ("pair", "all_items")

neo = typer.Typer(
    help="Compile a model for a deployment target (SageMaker Neo, or ONNX Runtime locally).",
    no_args_is_help=True,
)


@neo.command("compile")
def compile_command(
    ctx: typer.Context,
    model: ModelRefOpt = None,
    target: Annotated[
        str | None, typer.Option("--target", help="Neo target device, e.g. ml_c5 (see `ncfctl neo targets`).")
    ] = None,
    target_platform: Annotated[
        str | None,
        typer.Option("--target-platform", help="Instead of --target: os,arch[,accelerator], e.g. linux,arm64."),
    ] = None,
    backend: Annotated[
        CompileBackend | None,
        typer.Option(
            "--backend",
            help="local (ONNX Runtime here) or sagemaker (a Neo job); auto = sagemaker when AWS credentials "
            "and aws.bucket are configured, else local.",
        ),
    ] = None,
    framework: Annotated[
        CompileFramework | None,
        typer.Option("--framework", help="Neo input: onnx (opset <= 12) or pytorch (traced model.pth)."),
    ] = None,
    batch_size: BatchSizeOpt = None,
    threads: ThreadsOpt = None,
    model_package: Annotated[
        str | None,
        typer.Option(
            "--model-package",
            help="Compile a registered version instead (a version number, ARN, latest or latest-approved).",
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Export, preflight and compile a model (default: the latest) into a serving bundle.

    --batch-size is the static batch Neo compiles besides 1 (default: the number of items, the
    top-K query); the local backend builds one dynamic-batch model.
    """
    if model and model_package:
        raise NcfError("give --model or --model-package, not both")
    c = command_context(
        ctx,
        overrides={
            "compile.target": target,
            "compile.target_platform": target_platform,
            "compile.backend": backend,
            "compile.framework": framework,
            "compile.batch_size": batch_size,
            "compile.threads": threads,
        },
        json_output=json_output,
    )
    from ncfctl.compile.service import compile_model  # torch & co., once the flags are valid

    with c.out.progress() as progress:
        if model_package:
            from ncfctl.compile.registered import import_model_package

            model = import_model_package(c.config, c.workspace, model_package, progress).id
        artifact = compile_model(c.config, c.workspace, model, progress=progress)
    info, metrics = artifact.manifest.info, artifact.manifest.metrics
    payload = {
        **artifact_fields(artifact),
        "source_model": info.source_model,
        "backend": info.backend,
        "backend_reason": info.backend_reason,
        "target": info.target,
        "framework": info.framework,
        "runtime": info.runtime,
        "batch_sizes": info.batch_sizes,
        "threads": info.threads,
        "retrieval": info.retrieval,
        "retrieval_reason": info.retrieval_reason,
        "jobs": info.jobs,
        "metrics": metrics,
    }

    if not info.servable:
        c.out.warn(
            f"{artifact.id} is native code for {info.target}: ncfctl's serving image (linux/amd64 CPU) "
            "cannot run it, so build-image and deploy will refuse it"
        )

    def render() -> None:
        c.out.info(f"backend: [bold]{info.backend}[/bold] ({info.backend_reason})")
        c.out.info(f"top-K retrieval: [bold]{info.retrieval}[/bold] ({info.retrieval_reason})")
        hidden = ("metrics", "backend_reason", "retrieval_reason")
        c.out.kv(
            {k: v for k, v in payload.items() if k not in hidden and v is not None},
            title="neo compile",
        )
        if "pair_speedup" in metrics:
            c.out.table(
                [
                    {
                        "query": query,
                        "torch eager p50 ms": metrics[f"{query}_p50_ms_torch"],
                        "onnxruntime p50 ms": metrics[f"{query}_p50_ms_onnxruntime"],
                        "speedup": f"{metrics[f'{query}_speedup']:.2f}x",
                    }
                    for query in SPEED_ROWS
                ],
                title=f"speed vs PyTorch eager ({info.threads} thread(s), this machine)",
            )
        c.out.success(
            f"{artifact.id}: {info.runtime} bundle for {info.target}, "
            f"parity max abs diff {metrics.get('max_abs_diff', metrics['preflight_max_abs_diff']):.2g}"
        )

    c.out.result(payload, render)


@neo.command("status")
def status_command(
    ctx: typer.Context,
    job: Annotated[
        str | None, typer.Argument(help="A compiled artifact id or a SageMaker Neo job name (default: list all).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Block until the SageMaker job is COMPLETED, FAILED or STOPPED.")
    ] = False,
    json_output: JsonOpt = False,
) -> None:
    """Compiled artifacts and recent SageMaker Neo jobs, or one job's state, timings, target and output."""
    c = command_context(ctx, json_output=json_output)
    from ncfctl.compile.service import neo_status

    with c.out.progress(transient=True) as progress:
        result = neo_status(c.config, c.workspace, job, wait=wait, progress=progress)
    if job is None:
        if "sagemaker_error" in result:
            c.out.warn(f"SageMaker jobs not listed: {result['sagemaker_error']}")
        elif not result["sagemaker"]:
            c.out.info("(SageMaker jobs not listed: no AWS credentials or aws.bucket configured)")
        columns = ["name", "where", "status", "target", "created", "model", "seconds"]
        c.out.result(result, lambda: c.out.table(result["jobs"], title="neo jobs", columns=columns))
    else:
        if "path" in result:  # a compiled artifact of the workspace, not a SageMaker job
            result = {**artifact_fields(c.workspace.get(job, "compiled")), **result}
        shown = {k: v for k, v in result.items() if not isinstance(v, dict) and v is not None}
        c.out.result(result, lambda: c.out.kv(shown, title=f"neo status {job}"))


@neo.command("targets")
def targets_command(json_output: JsonOpt = False) -> None:
    """The compilation targets ncfctl supports and the runtime threads it picks for each."""
    from ncfctl.targets import TARGETS, default_threads

    rows = [
        {
            "target": t.name,
            "arch": t.arch,
            "accelerator": t.accelerator or "cpu",
            "instance": t.instance,
            "vcpus": t.vcpus,
            "threads": default_threads(t, t.instance),
            "backends": "local, sagemaker" if t.local_ok else "sagemaker",
            "description": t.description,
        }
        for t in TARGETS.values()
    ]
    out = Output(json_output)
    out.result({"targets": rows}, lambda: out.table(rows, title="neo targets (or --target-platform os,arch)"))


def register(app: typer.Typer) -> None:
    """Add the ``neo`` sub-app (``compile``, ``status``, ``targets``) to the app."""
    app.add_typer(neo, name="neo")
