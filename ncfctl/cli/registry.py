"""``ncfctl registry list | show | approve | reject``: the Model Registry versions the SageMaker Pipeline made."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from ncfctl.cli.context import command_context
from ncfctl.cli.options import JsonOpt

VersionArg = Annotated[str, typer.Argument(help="A version number, a model package ARN, latest or latest-approved.")]
GroupOpt = Annotated[
    str | None, typer.Option("--group", help="Model package group (default: config aws.model_package_group).")
]
NoteOpt = Annotated[str | None, typer.Option("--note", help="Why: stored as the version's ApprovalDescription.")]
ApprovalStatus = Literal["Approved", "Rejected", "PendingManualApproval"]  # SageMaker's ModelApprovalStatus
LIST_COLUMNS = ["version", "status", "created", "hr", "ndcg", "k", "runtime", "target"]

registry_app = typer.Typer(help="SageMaker Model Registry: versions, their metrics, approval.", no_args_is_help=True)


@registry_app.command("list")
def list_command(
    ctx: typer.Context,
    status: Annotated[
        ApprovalStatus | None,
        typer.Option("--status", help="Only versions with this approval status."),
    ] = None,
    group: GroupOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Every version of the group, newest first, with its test HR/NDCG from the evaluation report."""
    from ncfctl.aws import registry

    c = command_context(ctx, overrides={"aws.model_package_group": group}, json_output=json_output)
    aws, name = c.config.aws, _group(c)
    with c.out.status(f"listing {name}"):
        rows = [
            registry.version_row(described, registry.evaluation(aws, described))
            for described in (
                registry.describe(aws, s["ModelPackageArn"]) for s in registry.list_versions(aws, name, status)
            )
        ]
    result = {"group": name, "versions": rows}
    c.out.result(result, lambda: c.out.table(rows, title=f"model package group {name}", columns=LIST_COLUMNS))


@registry_app.command("show")
def show_command(ctx: typer.Context, version: VersionArg, group: GroupOpt = None, json_output: JsonOpt = False) -> None:
    """One version: approval, what it serves (image, bundle), metadata and its full evaluation report."""
    from ncfctl.aws import registry

    c = command_context(ctx, overrides={"aws.model_package_group": group}, json_output=json_output)
    described = registry.resolve(c.config.aws, _group(c), version)
    report = registry.evaluation(c.config.aws, described)
    result = {**registry.version_row(described, report), "evaluation": report}
    c.out.result(result, lambda: _render(c.out, result))


def _decide(
    ctx: typer.Context, version: str, status: str, note: str | None, group: str | None, json_output: bool
) -> None:
    from ncfctl.aws import registry

    c = command_context(ctx, overrides={"aws.model_package_group": group}, json_output=json_output)
    described = registry.resolve(c.config.aws, _group(c), version)
    updated = registry.set_approval(c.config.aws, described["ModelPackageArn"], status, note)
    result = registry.version_row(updated)
    c.out.result(result, lambda: c.out.success(f"version {result['version']} of {_group(c)} is {result['status']}"))


@registry_app.command("approve")
def approve_command(
    ctx: typer.Context, version: VersionArg, note: NoteOpt = None, group: GroupOpt = None, json_output: JsonOpt = False
) -> None:
    """Approve a version: `deploy --model-package latest-approved` serves the newest approved one."""
    _decide(ctx, version, "Approved", note, group, json_output)


@registry_app.command("reject")
def reject_command(
    ctx: typer.Context, version: VersionArg, note: NoteOpt = None, group: GroupOpt = None, json_output: JsonOpt = False
) -> None:
    """Reject a version (it stays in the group, marked Rejected)."""
    _decide(ctx, version, "Rejected", note, group, json_output)


def _group(c: Any) -> str:
    from ncfctl.aws.clients import require

    return require(c.config.aws.model_package_group, "aws.model_package_group", "ncfctl registry")


def _render(out: Any, result: dict[str, Any]) -> None:
    shown = {k: v for k, v in result.items() if not isinstance(v, dict) and v is not None}
    out.kv(shown, title=f"version {result['version']}")
    report = result.get("evaluation") or {}
    if report.get("metrics"):
        rows = [
            {"model": "this version", **report["metrics"]},
            {"model": report["baseline"]["name"], **report["baseline"]},
        ]
        out.table(rows, title="test metrics", columns=["model", "hr", "ndcg", "full_hr", "full_ndcg"])


def register(app: typer.Typer) -> None:
    """Add the ``registry`` sub-app to the app."""
    app.add_typer(registry_app, name="registry")
