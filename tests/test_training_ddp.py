"""``ncfctl train --nproc 2``: two DDP ranks (gloo, elastic launch) match one process."""

from __future__ import annotations

import json

import torch
from conftest import tiny_interaction_data

from ncfctl.models import load_model
from ncfctl.workspace import Workspace

ARGS = ["--epochs", "3", "--patience", "0", "--factors", "8", "--layers", "16,8", "--batch-size", "256"]


def test_two_processes_match_one(run_cli, workdir):
    data = tiny_interaction_data(users=150, items=60, per_user=12)
    info = {"dataset": "tiny", "num_users": 150, "num_items": 60, "explicit": False, "split": "leave-one-out"}
    with Workspace(workdir).create("dataset", info=info) as writer:
        data.save(writer.path)
    one = json.loads(run_cli("train", *ARGS, "--json").stdout)
    two = json.loads(run_cli("train", *ARGS, "--nproc", "2", "--json").stdout)
    assert Workspace(workdir).get(two["model"]).manifest.info["nproc"] == 2
    # same global batches and seeds: DDP's averaged gradients equal the single-process ones
    for a, b in zip(one["history"], two["history"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["hr"] - b["hr"]) <= 0.02
    assert abs(one["metrics"]["hr"] - two["metrics"]["hr"]) <= 0.02
    single = load_model(Workspace(workdir).get(one["model"]).path / "model.pt").state_dict()
    ddp = load_model(Workspace(workdir).get(two["model"]).path / "model.pt").state_dict()
    assert max((single[k] - ddp[k]).abs().max().item() for k in single) < 1e-3
    assert all(torch.isfinite(v).all() for v in ddp.values())
