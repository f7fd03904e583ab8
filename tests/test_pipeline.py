"""``ncfctl pipeline`` end to end on tiny synthetic data (a subprocess, twice), and its freshness rule."""

from __future__ import annotations

import json
import math

import httpx
import psutil
import pytest

from ncfctl.config import load_config
from ncfctl.pipeline import STEPS, find_fresh, pipeline_config
from ncfctl.workspace import Workspace

TINY_ENV = {
    "NCFCTL_DATA__SYNTHETIC__USERS": "100",
    "NCFCTL_DATA__SYNTHETIC__ITEMS": "120",
    "NCFCTL_DATA__SYNTHETIC__INTERACTIONS": "3000",
    "NCFCTL_DATA__SYNTHETIC__MIN_PER_USER": "5",
    "NCFCTL_DATA__EVAL_NEGATIVES": "20",
    "NCFCTL_MODEL__FACTORS": "4",
    "NCFCTL_MODEL__LAYERS": "[16, 8]",
    "NCFCTL_PIPELINE__TRAIN_EPOCHS": "1",
    "NCFCTL_COMPILE__BACKEND": "local",  # offline, whatever credentials the machine has
    "NCFCTL_IMAGE__BACKEND": "none",
    "NCFCTL_BENCH__REPEATS": "3",
    "NCFCTL_BENCH__WARMUP": "1",
}
VARIANTS = ["original", "pruned", "finetuned", "compiled ort", "deployed"]


@pytest.mark.slow
def test_pipeline_end_to_end_then_everything_is_reused(run_cli_process, workdir):
    """The console script as users run it: every step, each a real ``python -m ncfctl`` process."""
    first = json.loads(run_cli_process("pipeline", "--keep-serving", "--json", env=TINY_ENV).stdout)
    assert [s["step"] for s in first["steps"]] == list(STEPS)
    status = {s["step"]: s["status"] for s in first["steps"]}
    assert set(status[step] for step in STEPS[:-1]) == {"ran"} and status["stop"] == "skipped"
    results = first["benchmark"]["results"]
    assert [r["variant"] for r in results["rows"]] == VARIANTS
    for row in results["rows"]:
        empty = [c for c in results["columns"] if not _filled(row.get(c))]
        assert not empty, f"{row['variant']}: {empty}"
    assert [n for n in results["notes"] if not n.startswith("baseline:")] == []  # the pipeline trains no ALS/BPR
    assert first["steps"][STEPS.index("invoke")]["detail"].startswith("top-10: 10 items")
    ws = Workspace(workdir)
    deployment = ws.get(first["steps"][STEPS.index("deploy")]["artifact"], "deployment")
    assert httpx.get(f"{deployment.manifest.info['url']}/ping").status_code == 200  # --keep-serving

    second = json.loads(run_cli_process("pipeline", "--json", env=TINY_ENV).stdout)
    status = {s["step"]: s["status"] for s in second["steps"]}
    reused = ("data", "train", "prune", "finetune", "compile", "build-image", "deploy", "bench")
    assert all(status[step] == "up to date" for step in reused), status
    assert status["invoke"] == status["stop"] == "ran"  # the smoke request always runs
    assert [s["artifact"] for s in second["steps"]] == [s["artifact"] for s in first["steps"]]
    assert len(ws.list("model")) == 3 and len(ws.list("benchmark")) == 1
    deployment = ws.get(deployment.id, "deployment")
    assert deployment.manifest.info["status"] == "stopped"
    process = (
        psutil.Process(deployment.manifest.info["pid"]) if psutil.pid_exists(deployment.manifest.info["pid"]) else None
    )
    assert process is None or process.status() == psutil.STATUS_ZOMBIE


def _filled(value) -> bool:
    return value is not None and (not isinstance(value, float) or math.isfinite(value))


def test_find_fresh_needs_the_same_parent_and_config(tmp_path):
    ws = Workspace(tmp_path)
    with ws.create("model", parent="data-a", config={"seed": 1, "prune": {"rate": 0.5}}, info={"stage": "pruned"}) as a:
        pass
    assert find_fresh(ws, "model", "data-a", {"seed": 1, "prune": {"rate": 0.5}}, {"stage": "pruned"}).id == a.id
    assert find_fresh(ws, "model", "data-a", {"seed": 1, "prune": {"rate": 0.4}}) is None
    assert find_fresh(ws, "model", "data-b", {"seed": 1}) is None
    assert find_fresh(ws, "model", "data-a", {"seed": 1}, {"stage": "finetuned"}) is None


def test_pipeline_config_applies_its_own_section():
    config = load_config(
        overrides={"pipeline.train_epochs": 3, "pipeline.prune_rate": 0.3, "train.epochs": 9}, environ={}
    )
    cfg = pipeline_config(config)
    assert (cfg.train.epochs, cfg.prune.rate, cfg.deploy.backend) == (3, 0.3, "local")
    assert cfg.finetune.fraction == (config.pipeline.finetune_fraction or config.finetune.fraction)
    halved = pipeline_config(load_config(overrides={"pipeline.finetune_fraction": 0.5}, environ={}))
    assert halved.finetune.fraction == 0.5
    remote = load_config(overrides={"train.backend": "sagemaker", "finetune.backend": "sagemaker"}, environ={})
    local = pipeline_config(remote)  # the local flow stays local (the SageMaker Pipeline is its own path)
    assert (local.train.backend, local.finetune.backend, local.deploy.backend) == ("local", "local", "local")
