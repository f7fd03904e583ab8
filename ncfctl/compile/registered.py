"""A Model Registry version as a compilable model: ``ncfctl neo compile --model-package``.

The SageMaker Pipeline registers a portable bundle (ONNX Runtime) that also carries the model's
weights (``model.pt``, plus ``masks.pt`` for a magnitude-pruned model). Neo builds native code for
one instance family, so it runs at deploy time, from the registry: the version's bundle is
downloaded and safely unpacked into a ``model`` artifact (stage ``registered``) and compiled like
any model. The dataset it was trained on is not needed: the bundle's own user/item ids and seen
items (read with the server's bundle loader) are what a new bundle repeats.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ncf_serving.bundle import BundleError, load_bundle

from ncfctl import safetar
from ncfctl.artifacts import ModelInfo
from ncfctl.aws import registry, s3
from ncfctl.aws.clients import require, require_credentials
from ncfctl.config import Config
from ncfctl.errors import NcfError
from ncfctl.masks import MASKS_FILE
from ncfctl.models import MODEL_FILE, load_model
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.workspace import Artifact, Workspace

BUNDLE_DIR = "bundle"  # inside the model artifact: the registered bundle, for its ids and seen items


@dataclass
class BundleData:
    """What a serving bundle needs of a dataset (sizes, raw ids, seen items), read from an existing bundle."""

    num_users: int
    num_items: int
    user_ids: np.ndarray
    item_ids: np.ndarray
    indptr: np.ndarray
    indices: np.ndarray
    explicit: bool = False

    def seen_items(self, include_val: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return self.indptr, self.indices

    @classmethod
    def read(cls, folder: Path) -> BundleData:
        try:
            bundle = load_bundle(folder)
        except BundleError as exc:
            raise NcfError(str(exc)) from None
        spec = bundle.spec
        return cls(
            spec.num_users, spec.num_items, bundle.user_ids, bundle.item_ids, bundle.seen_indptr, bundle.seen_indices
        )


def import_model_package(config: Config, workspace: Workspace, ref: str, progress: Progress = NO_PROGRESS) -> Artifact:
    """Download a registered version's bundle into a ``model`` artifact (``model.pt`` at its root)."""
    aws = config.aws
    what = "compiling a registered model package"
    require_credentials(aws, what)
    group = require(aws.model_package_group, "aws.model_package_group", what)
    described = registry.resolve(aws, group, ref)
    arn = described["ModelPackageArn"]
    model_data = described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    info = ModelInfo(
        stage="registered",
        model_package_arn=arn,
        model_package_version=described.get("ModelPackageVersion"),
        model_package_status=described.get("ModelApprovalStatus"),
        model_data=model_data,
    )
    with workspace.create("model", parent=arn, info=info) as writer, tempfile.TemporaryDirectory() as tmp:
        archive = s3.download_file(aws, model_data, Path(tmp) / "model.tar.gz", progress)
        bundle = writer.path / BUNDLE_DIR
        safetar.safe_extract(archive, bundle, config.archive)
        if not (bundle / MODEL_FILE).is_file():
            raise NcfError(
                f"{model_data} holds no {MODEL_FILE}: Neo needs the weights (register with ncfctl's pipeline)"
            )
        for name in (MODEL_FILE, MASKS_FILE):
            if (bundle / name).is_file():
                (bundle / name).rename(writer.path / name)
        spec = load_model(writer.path / MODEL_FILE).spec
        BundleData.read(bundle)  # the ids and seen items must load before anything is compiled from them
        writer.manifest.info = info.updated(model_type=spec.model_type, task=spec.task)
    return writer.artifact
