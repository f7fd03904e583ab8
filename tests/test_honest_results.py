"""No silent wrong answers (issue 16, section 3): each case used to exit 0 with a number that was wrong."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import (
    add_tiny_dataset,
    assert_one_line_error,
    export_onnx,
    rerecord,
    separated_ncf,
    tiny_interaction_data,
)
from ncf_serving.answers import answer
from ncf_serving.invocations import parse_invocation
from ncf_serving.predictor import Predictor

from ncfctl.data.columns import to_epoch_seconds, to_integer_ids
from ncfctl.errors import NcfError
from ncfctl.models import NCF, NCFSpec
from ncfctl.serving.bundle import write_serving_bundle
from ncfctl.serving.invoke import build_requests
from ncfctl.training.loop import FitSettings, fit
from ncfctl.workspace import Workspace

torch.set_num_threads(1)
SMALL = ["--factors", "8", "--layers", "16,8", "--batch-size", "256", "--threads", "1"]


def tiny_neumf() -> NCF:
    torch.manual_seed(0)
    return NCF(NCFSpec.from_layers(model_type="neumf", num_users=60, num_items=40, factors=8, layers=[16, 8]))


def test_diverged_fit_stops_with_one_line():
    settings = FitSettings(epochs=2, batch_size=256, lr=1e30, threads=1, device="cpu", full_ranking=False)
    with pytest.raises(NcfError, match=r"training diverged in epoch 1: the mean loss is nan \(train.lr 1e\+30\)"):
        fit(tiny_neumf(), tiny_interaction_data(), settings)


@pytest.mark.slow
def test_diverged_training_commits_nothing(cli, workdir):
    add_tiny_dataset(workdir)
    result = cli("train", "--epochs", "2", *SMALL, "--lr", "1e30")
    assert_one_line_error(result, "training diverged in epoch 1", "nothing was saved")
    assert Workspace(workdir).list("model") == [] and not (workdir / "models" / "ncf_model_latest.pt").exists()
    assert not list(workdir.glob(".runs/*/checkpoint.pt"))  # not even a checkpoint of the diverged epoch


@pytest.mark.parametrize(
    ("args", "env", "key"),
    [
        (["train", "--lr", "inf"], {}, "train.lr"),
        (["train", "--lr", "nan"], {}, "train.lr"),
        (["train", "--lr", "0"], {}, "train.lr"),
        (["train", "--lr", "-1"], {}, "train.lr"),
        (["finetune", "--lr", "inf"], {}, "finetune.lr"),
        (["train"], {"NCFCTL_TRAIN__WEIGHT_DECAY": ".inf"}, "train.weight_decay"),
        (["prune", "--finetune"], {"NCFCTL_FINETUNE__LR": ".nan"}, "finetune.lr"),
    ],
)
def test_learning_rate_must_be_finite_and_positive(cli, args, env, key):
    assert_one_line_error(cli(*args, env=env), f"config key '{key}'")


def test_ids_reach_the_server_as_typed(tmp_path):
    """A log holding both "7" and "007": ``--user 007`` must score user "007", not user 7."""
    data = tiny_interaction_data()
    data.user_ids = np.array(["7", "007", "1_0", "10", " 1", "1", "\uff11", *(f"u{u}" for u in range(7, 60))])
    model = separated_ncf(NCFSpec(num_users=60, num_items=40, factors=4, mlp_user_dim=4, mlp_item_dim=4, hidden=[4]))
    export_onnx(model, tmp_path / "model.onnx")
    models = [{"batch_size": None, "path": "model.onnx"}]
    write_serving_bundle(tmp_path, model, data, runtime="onnxruntime", models=models, source_model=None, target=None)
    predictor = Predictor.load(tmp_path, threads=1)
    for index, typed in enumerate(data.user_ids[:7].tolist()):
        (request,) = build_requests(typed, item="i3")
        body = json.dumps(request).encode()  # what ncfctl invoke sends
        reply = answer(predictor, parse_invocation(body, max_batch=10, max_top_k=10))
        with torch.inference_mode():
            expected = float(model(torch.tensor([index]), torch.tensor([3]))[0])
        assert reply["user_id"] == typed and reply["score"] == pytest.approx(expected, abs=1e-5), typed


def test_manifest_whose_kind_does_not_match_its_folder_is_refused(cli, model_artifact, workdir):
    shutil.copytree(model_artifact.path, workdir / "data" / "model-in-the-wrong-folder")
    with pytest.raises(NcfError, match="says kind 'model' but it is in data/"):
        Workspace(workdir).list("dataset")
    assert_one_line_error(cli("train", "--epochs", "1"), "says kind 'model' but it is in data/")


def test_top_k_must_be_below_the_candidates(cli, workdir, model_artifact):
    dataset = model_artifact.manifest.info.dataset  # 20 sampled negatives per held-out row: 21 candidates
    result = cli("train", "--epochs", "1", *SMALL, "--top-k", "21", "--dataset-id", dataset)
    assert_one_line_error(result, "--top-k 21 is not below the 21 candidates", "HR@21 would be 1.0")
    assert [model.id for model in Workspace(workdir).list("model")] == [model_artifact.id]
    result = cli("train", "--eval-only", model_artifact.id, "--top-k", "100000")
    assert_one_line_error(result, "--top-k 100000 is not below the 21 candidates")
    assert cli("train", "--eval-only", model_artifact.id, "--top-k", "20").exit_code == 0


@pytest.mark.slow
def test_resume_with_changed_settings_names_them(cli, workdir):
    dataset = add_tiny_dataset(workdir)
    result = cli("train", "--epochs", "1", *SMALL, "--resume")
    assert_one_line_error(result, "--resume: no training run with a checkpoint")
    assert cli("train", "--epochs", "1", *SMALL, "--lr", "0.01", "--dataset-id", dataset.id).exit_code == 0
    result = cli("train", "--epochs", "2", *SMALL, "--lr", "0.02", "--negatives", "2", "--resume")
    line = assert_one_line_error(result, "--resume: no run with these settings", "lr 0.01 -> 0.02", "negatives 4 -> 2")
    assert "epochs" not in line  # more epochs is what resuming is for
    out = cli("train", "--epochs", "2", *SMALL, "--lr", "0.01", "--resume", "--json")
    assert out.exit_code == 0 and [r["epoch"] for r in json.loads(out.stdout)["history"]] == [1, 2]


def test_build_image_loads_the_bundle_as_the_server_does(cli, compiled_artifact, workdir):
    broken = Workspace(workdir).create("compiled", parent="model-tiny", info={"runtime": "onnxruntime"})
    with broken as writer:  # a committed bundle that never had its fast-path arrays: its manifest agrees
        shutil.copytree(compiled_artifact.path, writer.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("man*"))
        shutil.rmtree(writer.path / "fastpath")
    result = cli("build-image", "--backend", "none", "--compiled", writer.id)
    assert_one_line_error(result, "not packing", "fastpath/", ": is missing")

    user_ids = compiled_artifact.path / "ids" / "user_ids.npy"
    np.save(user_ids, np.load(user_ids)[:-1])
    rerecord(compiled_artifact)  # the manifest agrees, serving.json's own checksums do not
    result = cli("build-image", "--backend", "none", "--compiled", compiled_artifact.id)
    assert_one_line_error(result, "not packing", "ids/user_ids.npy")
    assert not (workdir / "images").exists()


def test_timestamps_beyond_int64_are_bad_values():
    import pandas as pd

    values = pd.Series(["1000", "99999999999999999999", "-99999999999999999999"])
    assert to_epoch_seconds(values)[1].tolist() == [False, True, True]
    assert to_integer_ids(values)[1].tolist() == [False, True, True]
    assert to_epoch_seconds(pd.Series([1.0, 9.3e18]))[1].tolist() == [False, True]


def test_csv_timestamp_beyond_int64_is_one_line(cli, tmp_path):
    rows = [f"u{u},i{i},{1000 + 10 * u + i}" for u in range(6) for i in range(7)]
    rows[9] = "u1,i2,99999999999999999999"
    (tmp_path / "log.csv").write_text("user_id,item_id,ts\n" + "\n".join(rows) + "\n")
    result = cli("data", "--dataset", "csv", "--source", str(tmp_path / "log.csv"), "--time-col", "ts")
    assert_one_line_error(result, "log.csv line 11: timestamp '99999999999999999999' is not Unix seconds")
