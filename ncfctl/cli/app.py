"""``ncfctl``: the Typer application and its error handling.

Every command module exposes ``register(app)``; commands parse flags, call one service and print
through :class:`~ncfctl.cli.output.Output`. Expected failures (a bad flag,
:class:`~ncfctl.errors.NcfError` and what :func:`~ncfctl.errors.expected_failure` recognises) are one
red line on stderr, worded by :mod:`ncfctl.cli.errors`, cut to a bounded length, and exit code 2
(``--debug`` shows the traceback). The handling lives in the command group itself, so ``ncfctl``
on a terminal and typer's ``CliRunner`` in tests behave alike.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ncfctl import __version__
from ncfctl.cli import bench, data, deploy, image, invoke, neo, pipeline, prune, recommend, registry, train
from ncfctl.cli.context import GlobalOptions
from ncfctl.cli.errors import error_line


def _debug_requested(ctx: typer.Context) -> bool:
    options = ctx.obj
    if isinstance(options, GlobalOptions) and options.debug:
        return True
    return "--debug" in sys.argv or os.environ.get("NCFCTL_DEBUG", "").lower() in {"1", "true", "yes"}


class NcfGroup(TyperGroup):
    """The command group: an expected failure becomes one red line and its exit code (2)."""

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            Console(stderr=True).print("[yellow]interrupted[/yellow]")
            ctx.exit(130)
        except Exception as exc:
            options = ctx.obj if isinstance(ctx.obj, GlobalOptions) else GlobalOptions()
            failure = error_line(exc, options.flags)
            if failure is None or _debug_requested(ctx):
                raise
            message, exit_code = failure
            Console(stderr=True).print(
                f"[bold red]Error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
            )
            ctx.exit(exit_code)


app = typer.Typer(
    cls=NcfGroup,
    name="ncfctl",
    help="Neural Collaborative Filtering: data -> train -> prune -> finetune -> neo compile -> "
    "build-image -> deploy -> invoke -> bench.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: wraps between words in a pipe or a narrow terminal
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


def main() -> None:
    """Console-script entry point (errors are handled by :class:`NcfGroup`)."""
    app()
