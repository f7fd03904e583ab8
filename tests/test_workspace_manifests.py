"""Typed manifest ``info`` (ncfctl.artifacts): old manifests load unchanged, bad info is refused.

``tests/manifests/`` holds manifests written by ncfctl before ``info`` was typed (the local
pipeline, ``recommend --all-users``, and the SageMaker paths against moto: ``neo compile``,
``deploy``, ``build-image --backend codebuild``, training jobs, Batch Transform, the SageMaker
Pipeline). They are the on-disk format the typed models must keep.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from ncfctl.artifacts import INFO_TYPES, DatasetInfo, DeploymentInfo, ModelInfo
from ncfctl.errors import NcfError
from ncfctl.workspace import KIND_DIRS, MANIFEST, Workspace

OLD_MANIFESTS = sorted((Path(__file__).parent / "manifests").glob("*.json"))


def _install(workdir: Path, source: Path) -> Path:
    """Put an old manifest where the workspace keeps artifacts of its kind."""
    manifest = json.loads(source.read_text())
    folder = workdir / KIND_DIRS[manifest["kind"]] / manifest["id"]
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / MANIFEST)
    return folder


@pytest.mark.parametrize("source", OLD_MANIFESTS, ids=[p.stem for p in OLD_MANIFESTS])
def test_a_manifest_written_before_typed_info_loads_and_is_rewritten_byte_for_byte(tmp_path, source):
    folder = _install(tmp_path, source)
    ws = Workspace(tmp_path)
    (artifact,) = ws.list()
    assert type(artifact.manifest.info) is INFO_TYPES[artifact.kind]
    ws.update(artifact, info=artifact.manifest.info)  # what any later status update does
    assert (folder / MANIFEST).read_bytes() == source.read_bytes()


def test_the_old_manifests_cover_every_kind():
    kinds = {json.loads(path.read_text())["kind"] for path in OLD_MANIFESTS}
    assert kinds == set(INFO_TYPES) == set(KIND_DIRS)


def test_info_is_read_as_attributes_with_the_defaults_old_readers_assumed(tmp_path):
    _install(tmp_path, OLD_MANIFESTS[[p.stem for p in OLD_MANIFESTS].index("deployment-local")])
    deployment = Workspace(tmp_path).list("deployment")[0]
    info = deployment.manifest.info
    assert (info.backend, info.status, info.workers) == ("local", "stopped", 2)
    assert info.endpoint_name is None and "endpoint_name" not in info.recorded()  # unset fields stay off disk
    assert DatasetInfo().explicit is False  # what every reader assumed of a dataset that did not say
    with pytest.raises(TypeError, match="fields are attributes"):
        "pid" in info  # noqa: B015 (dict-shaped code must fail, not read False)
    with pytest.raises(TypeError, match="not subscriptable"):
        info["status"]


def test_undeclared_or_mistyped_info_is_refused_when_written(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(ValidationError, match="stag"), ws.create("model", info={"stag": "trained"}):
        pass
    with pytest.raises(ValidationError, match="stage"), ws.create("model", info={"stage": "half-trained"}):
        pass
    wrong_kind = DeploymentInfo(status="running")
    with (
        pytest.raises(TypeError, match="a deployment artifact's info given for a model"),
        ws.create("model", info=wrong_kind),
    ):
        pass
    assert ws.list() == [] and not (tmp_path / ".staging").exists()  # refused before anything is written
    with ws.create("model", info=ModelInfo(stage="trained")) as writer, pytest.raises(ValidationError, match="best_"):
        writer.manifest.info.best_epoch = "the third"
    with pytest.raises(ValidationError, match="status"):
        ws.update(writer.artifact, info=writer.artifact.manifest.info.updated(status="running"))  # not a model's


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda info: info.update(num_users="many"), "field 'info.num_users': Input should be a valid integer"),
        (lambda info: info.update(users=3), "field 'info.users': Extra inputs are not permitted"),
    ],
    ids=["mistyped", "undeclared"],
)
def test_a_bad_info_field_on_disk_is_one_line_naming_it(tmp_path, edit, message):
    folder = _install(tmp_path, OLD_MANIFESTS[[p.stem for p in OLD_MANIFESTS].index("dataset")])
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest["info"])
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(NcfError) as caught:
        Workspace(tmp_path).list("dataset")
    assert str(folder / MANIFEST) in str(caught.value) and message in str(caught.value)


def test_latest_refuses_a_where_field_the_kind_does_not_record(tmp_path):
    ws = Workspace(tmp_path)
    with ws.create("model", info=ModelInfo(stage="pruned")):
        pass
    assert ws.latest("model", where={"stage": "pruned"}) is not None
    assert ws.latest("model", where={"stage": "trained"}) is None
    with pytest.raises(ValueError, match="model artifacts record no info field 'epochs'"):
        ws.latest("model", where={"epochs": 3})
