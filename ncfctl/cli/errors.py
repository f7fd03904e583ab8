"""The one place the CLI turns a failure into its one line: services say what is wrong, this adds the flag.

Services (and :func:`ncfctl.config.load_config`) raise :class:`~ncfctl.errors.NcfError` in the
library's terms: a config key, a file, a value. They do not know which flag, environment variable
or ``--config`` file set that key; the command that ran does. :func:`command_flags` records, per
command, which config keys its given flags set, and :func:`error_line` appends that flag to an
error about one of those keys, so ``ncfctl prune --rate 5`` names ``--rate`` while a library
caller passing ``prune.rate`` reads only about ``prune.rate``.

An error names its key through a ``key`` attribute, or (config validation) by starting with
``config key '<dotted.key>'``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click (typer >= 0.23)

from ncfctl.errors import expected_failure, one_line

CONFIG_KEY = re.compile(r"config key '([\w.\-]+)'")
# flags whose parameter name is not the last part of the config key they set
FLAG_PARAMS = {
    "model.type": "model_type",
    "baselines.als.iterations": "epochs",
    "baselines.bpr.iterations": "epochs",
    "baselines.bpr.learning_rate": "lr",
    "pipeline.prune_rate": "rate",
    "pipeline.train_epochs": "epochs",
    "aws.model_package_group": "group",
}


def command_flags(ctx: Any, overrides: Mapping[str, Any]) -> dict[str, str]:
    """Config key -> the flag of ``ctx``'s command that set it (only flags given on this command line)."""
    options = {param.name: param for param in ctx.command.params if param.param_type_name == "option"}
    flags: dict[str, str] = {}
    for key, value in overrides.items():
        option = options.get(FLAG_PARAMS.get(key, key.rsplit(".", 1)[-1]))
        if value is not None and option is not None and option.opts:
            flags[key] = option.opts[0]
    return flags


def error_key(error: BaseException) -> str | None:
    """The config key an error is about, if it names one."""
    key = getattr(error, "key", None)
    if isinstance(key, str):
        return key
    found = CONFIG_KEY.match(str(error))
    return found.group(1) if found else None


def error_line(exc: BaseException, flags: Mapping[str, str]) -> tuple[str, int] | None:
    """``exc`` as (one line, exit code), with the flag that set its config key; ``None`` for a bug.

    A bad flag or value (click's usage error, e.g. a value not among a flag's choices) is one line
    too, pointing at the command's ``--help``; ``ncfctl neo`` alone still shows its help.
    """
    if isinstance(exc, UsageError) and not isinstance(exc, NoArgsIsHelpError):
        where = exc.ctx.command_path if exc.ctx is not None else "ncfctl"
        return one_line(f"{exc.format_message()} (see `{where} --help`)"), exc.exit_code
    error = expected_failure(exc)
    if error is None:
        return None
    text = str(error)
    flag = flags.get(error_key(error) or "")
    if flag is not None:
        text = f"{flag}: {text}"
    return one_line(text), error.exit_code
