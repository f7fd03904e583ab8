"""A model artifact together with the dataset it was trained on, checked to belong together.

Evaluation, pruning and fine-tuning all need the model and its data; a model sized for another
dataset would index out of range (or silently score the wrong rows), so the sizes are checked once
here with a one-line error.
"""

from __future__ import annotations

from ncfctl.data.dataset import InteractionData, load_dataset
from ncfctl.errors import NcfError
from ncfctl.models import NCF
from ncfctl.workspace import Artifact, Workspace


def dataset_of(workspace: Workspace, model_artifact: Artifact, model: NCF, dataset_ref: str | None = None):
    """``(dataset artifact, InteractionData)`` for ``model`` (default: the dataset its manifest names)."""
    dataset_ref = dataset_ref or model_artifact.manifest.info.dataset
    if not dataset_ref:
        raise NcfError(
            f"model {model_artifact.id} does not record its dataset",
            hint="pass `dataset_ref`",
            settings=("dataset_ref",),
        )
    dataset = workspace.get(dataset_ref, "dataset")
    data: InteractionData = load_dataset(dataset)
    if (model.spec.num_users, model.spec.num_items) != (data.num_users, data.num_items):
        raise NcfError(
            f"model {model_artifact.id} is sized {model.spec.num_users} users x {model.spec.num_items} items, "
            f"dataset {dataset.id} has {data.num_users} x {data.num_items}"
        )
    return dataset, data
