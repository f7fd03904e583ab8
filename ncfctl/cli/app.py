"""``ncfctl``: the Typer application and its error handling.

Every command module exposes ``register(app)``; commands parse flags, call one service and print
through :class:`~ncfctl.cli.output.Output`. Expected failures are :class:`~ncfctl.errors.NcfError`:
one red line on stderr and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ncfctl import __version__
from ncfctl.cli import bench, data, deploy, image, invoke, neo, pipeline, prune, recommend, registry, train
from ncfctl.cli.context import GlobalOptions
from ncfctl.errors import NcfError

app = typer.Typer(
    name="ncfctl",
    help="Neural Collaborative Filtering: data -> train -> prune -> finetune -> neo compile -> "
    "build-image -> deploy -> invoke -> bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        print(f"ncfctl {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    workdir: Annotated[
        Path | None, typer.Option("--workdir", help="Work directory for artifacts (env NCFCTL_WORKDIR).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", envvar="NCFCTL_CONFIG", help="YAML file overriding configs/default.yaml.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", envvar="NCFCTL_DEBUG", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    ctx.obj = GlobalOptions(workdir=workdir, config_file=config, debug=debug)


for _module in (data, train, prune, neo, image, deploy, invoke, recommend, bench, pipeline, registry):
    _module.register(app)


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("NCFCTL_DEBUG", "").lower() in {"1", "true", "yes"}


def main() -> None:
    """Console-script entry point: run the app, turning NcfError into one line and exit 2."""
    try:
        app()
    except NcfError as exc:
        if _debug_requested(sys.argv):
            raise
        Console(stderr=True).print(f"[bold red]Error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/yellow]")
        sys.exit(130)
