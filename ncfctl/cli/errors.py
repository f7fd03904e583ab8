"""The one place the CLI turns a failure into its one line: services say what is wrong, this adds the flags.

Services raise :class:`~ncfctl.errors.NcfError` in the library's terms: config keys as they are
(``model.layers``) and service arguments in backticks (`` `resume` ``); ``error.settings`` lists
the ones a message names. :func:`cli_message` spells each as the flag that sets it (``FLAGS``), so
``ncfctl train --layers 16,x`` reads about ``--layers`` while a library caller reads about
``model.layers``. A setting without a flag (``aws.*`` keys, say) stays the config key it is.

Config validation (:func:`ncfctl.config.load_config`) cannot know whether a flag, an environment
variable or a ``--config`` file set a key: its errors start with ``config key '<dotted.key>'``,
and :func:`error_line` puts the flag in front only when this command line gave it
(:func:`command_flags`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click (typer >= 0.23)

from ncfctl.errors import NcfError, expected_failure, one_line

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


FLAGS = {
    # config keys
    "bench.compare": "--compare",
    "compile.backend": "--backend",
    "compile.framework": "--framework",
    "compile.target_platform": "--target-platform",
    "data.dataset": "--dataset",
    "data.eval_negatives": "--eval-negatives",
    "data.item_col": "--item-col",
    "data.min_rating": "--min-rating",
    "data.rating_col": "--rating-col",
    "data.source": "--source",
    "data.time_col": "--time-col",
    "data.user_col": "--user-col",
    "deploy.backend": "--backend",
    "deploy.capture_percent": "--capture-percent",
    "deploy.max_instances": "--max-instances",
    "deploy.min_instances": "--min-instances",
    "deploy.port": "--port",
    "deploy.serverless": "--serverless",
    "image.backend": "--backend",
    "image.push": "--push",
    "model.factors": "--factors",
    "model.layers": "--layers",
    "pipeline.min_hit_rate": "--min-hit-rate",
    "train.device": "--device",
    "train.lr": "--lr",
    "train.top_k": "--top-k",
    # service arguments
    "compiled": "--compiled",
    "dataset_ref": "--dataset-id",
    "deployment": "--deployment",
    "workdir": "--workdir",
    "image": "--image",
    "item": "--item",
    "model_package": "--model-package",
    "model_ref": "--model",
    "pretrain_gmf": "--pretrain-gmf",
    "pretrain_mlp": "--pretrain-mlp",
    "file": "--file",
    "resume": "--resume",
    "top_k": "--top-k",
    "user": "--user",
}


def _spelled(setting: str) -> str:
    """How messages spell a setting: a config key as is (``train.lr``), an argument in backticks."""
    if "." in setting:
        return rf"(?<![\w.-]){re.escape(setting)}(?![\w-])"
    return re.escape(f"`{setting}`")


def cli_message(error: NcfError) -> str:
    """``str(error)`` with each setting it names replaced by the flag that sets it."""
    text = str(error)
    for setting in error.settings:
        if setting in FLAGS:
            text = re.sub(_spelled(setting), FLAGS[setting], text)
    return text


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
    """The config key a config validation error is about."""
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
    text = cli_message(error)
    flag = flags.get(error_key(error) or "")
    if flag is not None:
        text = f"{flag}: {text}"
    return one_line(text), error.exit_code
