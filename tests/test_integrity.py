"""Artifacts are verified before use (issue 16, section 1).

Every file a command reads is checked against the sha256 its manifest recorded, in one place
(``Artifact.file`` / ``Artifact.verify``); a serving bundle carries its own sums so the container
refuses a changed file without ncfctl; a training checkpoint carries a digest of its content.
Each flip below leaves the file loadable by its own reader, so only a checksum can tell.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import onnx
import pandas as pd
import pytest
import torch
from conftest import assert_one_line_error, flip_bytes_of, tiny_interaction_data
from ncf_serving.bundle import BundleError, load_bundle

from ncfctl.errors import NcfError
from ncfctl.models import MODEL_FILE, NCF, NCFSpec, load_model
from ncfctl.training.checkpoint import TrainingState
from ncfctl.training.loop import FitSettings, fit
from ncfctl.workspace import Workspace

torch.set_num_threads(1)


def largest_initializer(path) -> bytes:
    """The raw bytes of an ONNX model's largest weight tensor (an embedding table)."""
    return max((init.raw_data for init in onnx.load(str(path)).graph.initializer), key=len)


def test_a_changed_file_is_refused_by_the_one_gate(workdir):
    workspace = Workspace(workdir)
    with workspace.create("dataset") as writer:
        (writer.path / "a.bin").write_bytes(b"0123456789")
        (writer.path / "sub").mkdir()
        (writer.path / "sub" / "b.bin").write_bytes(b"b")
    artifact = workspace.get(writer.id)
    assert artifact.file("a.bin").read_bytes() == b"0123456789" and artifact.verify("sub") == artifact.path / "sub"

    (artifact.path / "a.bin").write_bytes(b"0123456780")
    with pytest.raises(NcfError, match=rf"artifact {writer.id}: a.bin sha256 is \w+\.\.\., the recorded one is"):
        workspace.get(writer.id).file("a.bin")
    with pytest.raises(NcfError, match="a.bin"):
        workspace.get(writer.id).verify()
    (artifact.path / "sub" / "b.bin").unlink()
    with pytest.raises(NcfError, match=r"sub/b.bin is missing"):
        workspace.get(writer.id).verify("sub")
    with pytest.raises(NcfError, match="has no file 'c.bin'"):
        artifact.file("c.bin")

    workspace.update(workspace.get(writer.id), info={"dataset": "an update"})  # must not bless the changed file
    with pytest.raises(NcfError, match="a.bin sha256"):
        workspace.get(writer.id).file("a.bin")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ("prune", "--rate", "0.5"),
        ("finetune", "MODEL", "--epochs", "1"),
        ("neo", "compile", "--backend", "local"),
        ("train", "--eval-only", "MODEL"),
    ],
    ids=["prune", "finetune", "compile", "eval"],
)
def test_flipped_model_pt_is_refused(cli, model_artifact, args):
    path = model_artifact.path / MODEL_FILE
    flip_bytes_of(path, load_model(path).gmf_user.weight.detach().numpy().tobytes())
    load_model(path)  # torch alone reads the flipped weights without complaint
    result = cli(*(model_artifact.id if arg == "MODEL" else arg for arg in args))
    assert_one_line_error(result, f"artifact {model_artifact.id}: model.pt sha256")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "swap"),
    [
        ("train.parquet", lambda folder: shutil.copy(folder / "val.parquet", folder / "train.parquet")),
        (
            "user_ids.parquet",
            lambda folder: pd.read_parquet(folder / "user_ids.parquet")[::-1].to_parquet(folder / "user_ids.parquet"),
        ),
    ],
)
def test_swapped_dataset_file_is_refused_by_train(cli, model_artifact, workdir, name, swap):
    dataset = Workspace(workdir).get(model_artifact.manifest.info.dataset, "dataset")
    swap(dataset.path)  # a valid file of the right shape: only the checksum tells it is not this dataset's
    result = cli("train", "--dataset-id", dataset.id, "--epochs", "1", "--layers", "16,8", "--factors", "8")
    assert_one_line_error(result, f"artifact {dataset.id}: {name} sha256")
    assert not (workdir / "models" / "ncf_model_latest.pt").exists() or len(Workspace(workdir).list("model")) == 1


def _tiny_run(tmp_path, epochs: int, resume: bool = False):
    torch.manual_seed(0)
    model = NCF(NCFSpec.from_layers(model_type="neumf", num_users=60, num_items=40, factors=8, layers=[16, 8]))
    settings = FitSettings(epochs=epochs, batch_size=256, threads=1, device="cpu", full_ranking=False)
    return fit(model, tiny_interaction_data(), settings, checkpoint=tmp_path / "checkpoint.pt", resume=resume)


@pytest.mark.slow
def test_flipped_checkpoint_is_refused_on_resume(tmp_path):
    _tiny_run(tmp_path, epochs=1)
    checkpoint = tmp_path / "checkpoint.pt"
    weights = torch.load(checkpoint, weights_only=True)["state"]["model"]["gmf_user.weight"]
    flip_bytes_of(checkpoint, weights.numpy().tobytes())
    torch.load(checkpoint, weights_only=True)  # torch reads it without complaint
    with pytest.raises(NcfError, match="does not match its sha256: its content changed"):
        _tiny_run(tmp_path, epochs=2, resume=True)

    torch.save(dataclasses.asdict(TrainingState(epoch=1)), checkpoint)  # the old format: no checksum to check
    with pytest.raises(NcfError, match="carries no checksum"):
        _tiny_run(tmp_path, epochs=2, resume=True)


def test_bundle_carries_checksums_the_container_checks(tiny_bundle, tmp_path):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    recorded = json.loads((bundle / "serving.json").read_text())["files"]
    assert {name.split("/")[0] for name in recorded} == {"model.onnx", "fastpath", "seen_items", "ids"}
    load_bundle(bundle)

    flip_bytes_of(bundle / "model.onnx", largest_initializer(bundle / "model.onnx"))
    onnx.load(str(bundle / "model.onnx"))  # still a well-formed model: it would serve wrong scores
    with pytest.raises(BundleError, match=r"model.onnx: sha256 is \w+\.\.\., the recorded one .* refusing to serve"):
        load_bundle(bundle)

    spec = json.loads((bundle / "serving.json").read_text())
    (bundle / "serving.json").write_text(json.dumps({**spec, "files": {}}))
    with pytest.raises(BundleError, match="records no checksums"):
        load_bundle(bundle)


@pytest.mark.slow
def test_server_never_reports_ready_with_a_flipped_model(tiny_bundle, tmp_path, serving_process):
    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    flip_bytes_of(bundle / "model.onnx", largest_initializer(bundle / "model.onnx"))
    server = serving_process(bundle, wait=False)
    assert server.proc.wait(60) == 1  # the container exits instead of going ready
    log = server.log()
    assert "model failed to load" in log and "model.onnx: sha256 is" in log and "Traceback" not in log


def test_build_image_refuses_a_flipped_compiled_model(cli, compiled_artifact, workdir):
    flip_bytes_of(compiled_artifact.path / "model.onnx", largest_initializer(compiled_artifact.path / "model.onnx"))
    result = cli("build-image", "--backend", "none")
    assert_one_line_error(result, f"artifact {compiled_artifact.id}: model.onnx sha256")
    assert not (workdir / "images").exists()


@pytest.mark.slow
def test_deploy_refuses_a_flipped_model_in_the_image(cli, compiled_artifact, workdir):
    image = json.loads(cli("build-image", "--backend", "none", "--json").stdout)
    model = workdir / "images" / image["id"] / "context" / "model" / "model.onnx"
    flip_bytes_of(model, largest_initializer(model))
    result = cli("deploy", "--backend", "local")
    try:
        assert_one_line_error(result, f"artifact {image['id']}: context/model/model.onnx sha256")
        assert Workspace(workdir).list("deployment") == []  # refused before any server started
    finally:  # a deploy that wrongly went ready must not leave its server running
        for deployment in Workspace(workdir).list("deployment"):
            cli("deploy", "stop", "--deployment", deployment.id)
