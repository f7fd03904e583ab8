"""``ncfctl deploy``: serve an image locally or on a SageMaker endpoint; ``deploy status | stop | delete``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ncfctl.cli.context import CommandContext, command_context
from ncfctl.cli.options import DeployBackend, DeploymentRefOpt, ImageRefOpt, JsonOpt
from ncfctl.cli.output import artifact_fields
from ncfctl.errors import NcfError

deploy_app = typer.Typer(
    help="Serve an image locally or on a SageMaker endpoint; without a subcommand: deploy.",
    invoke_without_command=True,
)
EndpointNameOpt = Annotated[
    str | None, typer.Option("--endpoint-name", help="sagemaker: endpoint name (aws.endpoint_name).")
]


@deploy_app.callback()
def deploy_command(
    ctx: typer.Context,
    image: ImageRefOpt = None,
    backend: Annotated[
        DeployBackend | None,
        typer.Option(
            "--backend",
            help="local (a background server on this machine) or sagemaker (a real-time endpoint); "
            "auto = sagemaker when the image is in ECR and AWS credentials exist, else local.",
        ),
    ] = None,
    port: Annotated[int | None, typer.Option("--port", min=0, max=65535, help="local: port (0 = free).")] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="server worker processes (serving.workers; default one per vCPU)."),
    ] = None,
    endpoint_name: EndpointNameOpt = None,
    instance_type: Annotated[
        str | None, typer.Option("--instance-type", help="sagemaker: instance type, e.g. ml.c5.large.")
    ] = None,
    instance_count: Annotated[
        int | None, typer.Option("--instance-count", min=1, help="sagemaker: initial instances.")
    ] = None,
    min_instances: Annotated[
        int | None, typer.Option("--min-instances", min=1, help="sagemaker autoscaling: minimum instances.")
    ] = None,
    max_instances: Annotated[
        int | None, typer.Option("--max-instances", min=1, help="sagemaker autoscaling: maximum instances.")
    ] = None,
    target_invocations: Annotated[
        float | None,
        typer.Option("--target-invocations", min=1, help="autoscaling target: invocations per instance per minute."),
    ] = None,
    model_package: Annotated[
        str | None,
        typer.Option(
            "--model-package",
            help="sagemaker: deploy a registered version instead of an image: an ARN, a version number, "
            "latest or latest-approved (it must be Approved).",
        ),
    ] = None,
    serverless: Annotated[
        bool | None,
        typer.Option("--serverless/--instances", help="sagemaker: serverless inference instead of instances."),
    ] = None,
    memory_mb: Annotated[
        int | None, typer.Option("--memory-mb", help="serverless memory: 1024, 2048, ... 6144 MB.")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option("--max-concurrency", min=1, max=200, help="serverless concurrent invocations.")
    ] = None,
    capture_percent: Annotated[
        int | None,
        typer.Option(
            "--capture-percent", min=0, max=100, help="sagemaker data capture: % of requests + responses to S3."
        ),
    ] = None,
    json_output: JsonOpt = False,
) -> None:
    """Deploy the latest image (or --image ID, or a registered --model-package).

    `deploy status`, `deploy stop` and `deploy delete` act on a deployment instead.
    """
    if ctx.invoked_subcommand is not None:
        given = [name for name, value in ctx.params.items() if value not in (None, False)]
        if given:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
            raise NcfError(f"{flags}: give the options of `deploy {ctx.invoked_subcommand}` after it")
        return
    c = command_context(
        ctx,
        overrides={
            "deploy.backend": backend,
            "deploy.port": port,
            "serving.workers": workers,
            "deploy.min_instances": min_instances,
            "deploy.max_instances": max_instances,
            "deploy.target_invocations": target_invocations,
            "deploy.serverless": serverless,
            "deploy.memory_mb": memory_mb,
            "deploy.max_concurrency": max_concurrency,
            "deploy.capture_percent": capture_percent,
            "aws.endpoint_name": endpoint_name,
            "aws.instance_type": instance_type,
            "aws.instance_count": instance_count,
        },
        json_output=json_output,
    )
    from ncfctl.serving import deploy as service

    with c.out.progress() as progress:
        artifact = service.deploy(c.config, c.workspace, image, progress, model_package=model_package)
    result = {**artifact_fields(artifact), **artifact.manifest.info.recorded(), **artifact.manifest.metrics}

    def render() -> None:
        _render(c.out, result, "deploy")
        target = result.get("url") or result.get("endpoint_name")
        c.out.success(f"{result['backend']} deployment {artifact.id} is {result['status']}: {target}")

    c.out.result(result, render)


@deploy_app.command("status")
def status_command(ctx: typer.Context, deployment: DeploymentRefOpt = None, json_output: JsonOpt = False) -> None:
    """The deployment's live state: local, its process and GET /ping; sagemaker, the endpoint."""
    _status(command_context(ctx, json_output=json_output), deployment)


@deploy_app.command("stop")
def stop_command(ctx: typer.Context, deployment: DeploymentRefOpt = None, json_output: JsonOpt = False) -> None:
    """Stop a local server (SIGTERM, then SIGKILL after deploy.stop_grace; only the recorded process)."""
    _stop(command_context(ctx, json_output=json_output), deployment)


@deploy_app.command("delete")
def delete_command(
    ctx: typer.Context,
    deployment: DeploymentRefOpt = None,
    endpoint_name: EndpointNameOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Delete a SageMaker endpoint (the deployment's, else aws.endpoint_name), its config, models and scaling."""
    _delete(command_context(ctx, {"aws.endpoint_name": endpoint_name}, json_output=json_output), deployment)


def _deployment_fields(c: CommandContext, result: dict[str, Any]) -> dict[str, Any]:
    """A service's ``{"deployment": id, ...}`` with the artifact keys every command prints first."""
    artifact = c.workspace.get(result["deployment"], "deployment")
    return {**artifact_fields(artifact), **{k: v for k, v in result.items() if k != "deployment"}}


def _status(c: CommandContext, deployment: str | None) -> None:
    from ncfctl.serving import deploy as service

    result = _deployment_fields(c, service.status(c.config, c.workspace, deployment))
    c.out.result(result, lambda: _render(c.out, result, "deployment status"))


def _stop(c: CommandContext, deployment: str | None) -> None:
    from ncfctl.serving import deploy as service

    result = _deployment_fields(c, service.stop(c.config, c.workspace, deployment))
    c.out.result(result, lambda: c.out.success(f"stopped {result['id']} ({result['stop']})"))


def _delete(c: CommandContext, deployment: str | None) -> None:
    from ncfctl.serving import deploy as service

    with c.out.status(f"deleting SageMaker endpoint {c.config.aws.endpoint_name}"):
        result = service.delete(c.config, c.workspace, deployment)
    c.out.result(result, lambda: _render(c.out, result, "deleted"))


def register(app: typer.Typer) -> None:
    """Add ``deploy`` (and its ``status``, ``stop``, ``delete``) to the app."""
    app.add_typer(deploy_app, name="deploy")


HIDDEN = {"pid_started", "deployer"}  # bookkeeping for `deploy stop` and abandoned start-ups; in --json only


def _render(out: Any, result: dict[str, Any], title: str) -> None:
    """Key/value table; nested values (live state, autoscaling) flattened as ``parent.key``."""
    flat: dict[str, Any] = {}
    for key, value in result.items():
        if key in HIDDEN:
            continue
        if key == "pid":
            flat[key] = str(value)  # a pid, not a quantity: no thousands separator
        elif isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif isinstance(value, list):
            flat[key] = ", ".join(map(str, value))
        else:
            flat[key] = value
    out.kv({k: v for k, v in flat.items() if v is not None}, title=title)
