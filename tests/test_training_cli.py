"""``ncfctl train`` as a user runs it: artifact contents, JSON output, eval-only, errors, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import add_tiny_dataset, tiny_interaction_data

from ncfctl.config import load_config
from ncfctl.errors import NcfError
from ncfctl.models import load_model
from ncfctl.training.checkpoint import load_checkpoint
from ncfctl.training.service import evaluate_model, train_model
from ncfctl.workspace import Workspace

SMALL = ["--factors", "8", "--layers", "16,8", "--batch-size", "256", "--lr", "0.01", "--threads", "1"]


def add_dataset(workdir):
    return add_tiny_dataset(workdir, tiny_interaction_data(users=150, items=60, per_user=12))


def test_train_writes_a_complete_artifact(run_cli, workdir):
    dataset = add_dataset(workdir)
    human = run_cli("train", "--epochs", "3", "--patience", "0", *SMALL).stdout
    artifact = Workspace(workdir).latest("model")
    assert f"model {artifact.id}" in human and "HR@10 (full ranking)" in human and "popularity" in human
    manifest = artifact.manifest
    assert manifest.parent == dataset.id and manifest.info.stage == "trained"
    assert manifest.info.dataset == dataset.id and manifest.info.model_type == "neumf"
    assert [r["epoch"] for r in manifest.info.history] == [1, 2, 3]
    assert {"hr", "ndcg", "full_hr", "full_ndcg", "k", "parameters", "nonzeros", "file_bytes"} <= set(manifest.metrics)
    assert manifest.metrics["file_bytes"] == (artifact.path / "model.pt").stat().st_size
    assert manifest.config["model"]["layers"] == [16, 8] and manifest.config["train"]["epochs"] == 3
    assert (artifact.path / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert manifest.metrics["hr"] > manifest.info.baseline["hr"]
    model = load_model(artifact.path / "model.pt")
    assert model.spec.num_items == 60 and model.spec.hidden == [8]
    latest = workdir / "models" / "ncf_model_latest.pt"
    assert latest.resolve() == (artifact.path / "model.pt").resolve()
    torch.load(latest, weights_only=True)

    again = json.loads(run_cli("train", "--eval-only", artifact.id, "--json").stdout)
    assert again["metrics"] == {key: manifest.metrics[key] for key in again["metrics"]}
    assert again["baseline"]["hr"] == manifest.info.baseline["hr"]


def test_pretrained_neumf_records_its_sources_and_checks_shapes(run_cli, workdir):
    add_dataset(workdir)
    workspace = Workspace(workdir)
    small = {"model.factors": 8, "model.layers": [16, 8], "train.epochs": 1, "train.batch_size": 256}
    gmf = train_model(load_config(overrides={**small, "model.type": "gmf"}), workspace).id
    mlp = train_model(load_config(overrides={**small, "model.type": "mlp"}), workspace).id
    sources = ["--pretrain-gmf", gmf, "--pretrain-mlp", mlp]
    out = json.loads(run_cli("train", "--epochs", "1", *SMALL, *sources, "--json").stdout)
    assert workspace.get(out["id"]).manifest.info.pretrain == {"gmf": gmf, "mlp": mlp}
    with pytest.raises(NcfError, match="`pretrain_gmf` has factors=8, model.factors is 4"):
        train_model(load_config(overrides={**small, "model.factors": 4}), workspace, pretrain_gmf=gmf, pretrain_mlp=mlp)


def test_user_errors_exit_2_with_one_line(run_cli, workdir):
    dataset = add_dataset(workdir)
    for args, message in (
        (["--layers", "16,x"], "--layers '16,x': expected comma-separated integers"),
        (["--task", "explicit", "--dataset-id", dataset.id], "train.task is 'explicit' but the dataset holds implicit"),
    ):
        proc = run_cli("train", "--epochs", "1", *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    workspace = Workspace(workdir)
    with pytest.raises(NcfError, match="even first width"):
        train_model(load_config(overrides={"model.layers": [15, 8]}), workspace)
    with pytest.raises(NcfError, match="no model artifact 'model-nope'"):
        evaluate_model(load_config(), workspace, "model-nope")


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(run_cli, workdir):
    add_dataset(workdir)
    env = {**os.environ, "NCFCTL_WORKDIR": str(workdir)}
    args = [sys.executable, "-m", "ncfctl", "train", "--epochs", "200", "--patience", "0", *SMALL]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(workdir.glob(".runs/*/checkpoint.pt")) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let it get into a later epoch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (checkpoint,) = workdir.glob(".runs/*/checkpoint.pt")
    saved = load_checkpoint(checkpoint)  # the kill never leaves a torn checkpoint
    assert saved.epoch >= 1 and not (workdir / "models").exists()
    target = saved.epoch + 1
    out = json.loads(run_cli("train", "--epochs", str(target), "--patience", "0", *SMALL, "--resume", "--json").stdout)
    history = out["history"]
    assert [r["epoch"] for r in history] == list(range(1, target + 1))
    assert [r["loss"] for r in history[: saved.epoch]] == [r["loss"] for r in saved.history]
