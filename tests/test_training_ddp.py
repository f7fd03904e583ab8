"""``ncfctl train --nproc 2``: two DDP ranks (gloo, elastic launch) match one process."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_interaction_data

from ncfctl.config import load_config
from ncfctl.data.dataset import load_dataset
from ncfctl.models import load_model
from ncfctl.training import fit
from ncfctl.training.service import fit_settings, initial_model, model_spec
from ncfctl.workspace import Workspace

ARGS = ["--epochs", "3", "--patience", "0", "--factors", "8", "--layers", "16,8", "--batch-size", "256", "--lr", "0.01"]
SAME = {"train.epochs": 3, "train.patience": 0, "model.factors": 8, "model.layers": [16, 8], "train.batch_size": 256}
SAME |= {"train.lr": 0.01}  # learns fast enough that no two epochs tie on validation (a tie could pick either)


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adam", "lazy-adam"])
def test_two_processes_match_one(run_cli, workdir, optimizer):
    data = tiny_interaction_data(users=150, items=60, per_user=12)
    info = {"dataset": "tiny", "num_users": 150, "num_items": 60, "explicit": False, "split": "leave-one-out"}
    workspace = Workspace(workdir)
    with workspace.create("dataset", info=info) as writer:
        data.save(writer.path)
    env = {"NCFCTL_TRAIN__OPTIMIZER": optimizer}  # lazy-adam: DDP all-reduces sparse embedding gradients (gloo)
    two = json.loads(run_cli("train", *ARGS, "--nproc", "2", "--json", env=env).stdout)
    assert workspace.get(two["id"]).manifest.info.nproc == 2

    config = load_config(overrides={**SAME, "train.optimizer": optimizer})  # the same command, one process
    data = load_dataset(writer.artifact)
    single = initial_model(config, workspace, model_spec(config, data), None, None)
    one = fit(single, data, fit_settings(config))
    # same global batches and seeds: DDP's averaged gradients equal the single-process ones
    for a, b in zip(one.history, two["history"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["hr"] - b["hr"]) <= 0.02
    assert one.best_epoch == two["best_epoch"]
    assert abs(one.test_metrics["hr"] - two["metrics"]["hr"]) <= 0.02
    ddp = load_model(workspace.get(two["id"]).path / "model.pt").state_dict()
    assert max((value - ddp[name]).abs().max().item() for name, value in single.state_dict().items()) < 1e-3
    assert all(torch.isfinite(v).all() for v in ddp.values())
