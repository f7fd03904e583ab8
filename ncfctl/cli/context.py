"""What every command needs: the effective config, the workspace and the output object."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from ncfctl.cli.errors import command_flags
from ncfctl.cli.output import Output
from ncfctl.config import Config, load_config
from ncfctl.workspace import Workspace


@dataclass
class GlobalOptions:
    workdir: Path | None = None
    config_file: Path | None = None
    debug: bool = False
    flags: dict[str, str] = field(default_factory=dict)  # config key -> the flag that set it (error lines)


@dataclass
class CommandContext:
    config: Config
    workspace: Workspace
    out: Output


def command_context(
    ctx: typer.Context, overrides: dict[str, Any] | None = None, json_output: bool = False
) -> CommandContext:
    """Build config (flags > env > --config > defaults), workspace and output for one command.

    ``overrides`` maps dotted config keys to flag values; ``None`` means "flag not given".
    """
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):
        root.obj = GlobalOptions()
    options: GlobalOptions = root.obj
    options.flags = command_flags(ctx, overrides or {})
    merged = dict(overrides or {})
    if options.workdir is not None:
        merged["workdir"] = str(options.workdir)
    config = load_config(options.config_file, merged)
    return CommandContext(config=config, workspace=Workspace(config.workdir), out=Output(json_output))
