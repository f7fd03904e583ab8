"""Expected failures in the CLI's terms: the settings an error names, shown as the flags that set them.

Services word their errors with config keys and argument names (an
:class:`~ncfctl.errors.NcfError`'s ``settings`` lists the ones it uses); this is the one place that
knows which flag sets which of them. A setting
without a flag here (``aws.*`` keys, say) is shown as the config key it is.
"""

from __future__ import annotations

import re

from ncfctl.errors import NcfError

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
