"""``ncfctl pipeline`` end to end on tiny synthetic data (a subprocess, twice), and its freshness rule."""

from __future__ import annotations

import json
import math
import sys

import httpx
import psutil
import pytest

from ncfctl.artifacts import ReuseKey
from ncfctl.bench.service import bench_reuse_key
from ncfctl.compile.service import compile_reuse_key
from ncfctl.config import load_config
from ncfctl.data.prepare import dataset_reuse_key, prepare_dataset
from ncfctl.pipeline import STEPS, _baseline_step, _Run, baseline_config, find_fresh, pipeline_config, reusable
from ncfctl.progress import NO_PROGRESS
from ncfctl.pruning.service import finetune_reuse_key, prune_reuse_key
from ncfctl.serving.build_image import image_reuse_key
from ncfctl.serving.deploy_local import local_reuse_key
from ncfctl.training.service import train_model, train_reuse_key
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
VARIANTS = ["original", "pruned", "finetuned", "compiled ort", "deployed", "als"]


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
    assert results["notes"] == []  # every variant, the ALS baseline included, was found and measured
    assert first["steps"][STEPS.index("invoke")]["detail"].startswith("top-10: 10 items")
    ws = Workspace(workdir)
    _each_step_recorded_its_reuse_key(ws, {s["step"]: s["artifact"] for s in first["steps"]})
    deployment = ws.get(first["steps"][STEPS.index("deploy")]["artifact"], "deployment")
    assert httpx.get(f"{deployment.manifest.info.url}/ping").status_code == 200  # --keep-serving

    second = json.loads(run_cli_process("pipeline", "--json", env=TINY_ENV).stdout)
    status = {s["step"]: s["status"] for s in second["steps"]}
    reused = ("data", "train", "baseline", "prune", "finetune", "compile", "build-image", "deploy", "bench")
    assert all(status[step] == "up to date" for step in reused), status
    assert status["invoke"] == status["stop"] == "ran"  # the smoke request always runs
    assert [s["artifact"] for s in second["steps"]] == [s["artifact"] for s in first["steps"]]
    assert len(ws.list("model")) == 4 and len(ws.list("benchmark")) == 1  # NeuMF, ALS, pruned, fine-tuned
    deployment = ws.get(deployment.id, "deployment")
    assert deployment.manifest.info.status == "stopped"
    process = psutil.Process(deployment.manifest.info.pid) if psutil.pid_exists(deployment.manifest.info.pid) else None
    assert process is None or process.status() == psutil.STATUS_ZOMBIE


REUSE_KEYS = {
    "data": dataset_reuse_key,
    "train": train_reuse_key,
    "baseline": lambda cfg: train_reuse_key(baseline_config(cfg)),
    "prune": prune_reuse_key,
    "finetune": finetune_reuse_key,
    "compile": compile_reuse_key,
    "build-image": image_reuse_key,
    "deploy": local_reuse_key,
    "bench": bench_reuse_key,
}


def _each_step_recorded_its_reuse_key(ws: Workspace, artifacts: dict[str, str]) -> None:
    """What each service recorded is exactly the reuse key it declares, and the pipeline accepts it.

    A service that starts recording another section without declaring it (or a key that names a
    section the service does not record) fails here instead of silently defeating "up to date".
    """
    cfg = pipeline_config(load_config(environ=TINY_ENV))
    for step, reuse_key in REUSE_KEYS.items():
        key = reuse_key(cfg)
        artifact = ws.get(artifacts[step], key.kind)
        assert json.dumps(artifact.manifest.config, sort_keys=True) == json.dumps(key.config, sort_keys=True), step
        assert reusable(artifact, key), step


def _filled(value) -> bool:
    return value is not None and (not isinstance(value, float) or math.isfinite(value))


def test_find_fresh_needs_the_same_parent_and_config(tmp_path):
    ws = Workspace(tmp_path)
    recorded = {"seed": 1, "prune": {"rate": 0.5}, "finetune": {"epochs": 2}}
    with ws.create("model", parent="data-a", config=recorded, info={"stage": "pruned"}) as a:
        pass

    def key(prune: dict, finetune: dict, stage: str = "pruned") -> ReuseKey:
        config = {"seed": 1, "prune": prune, "finetune": finetune}
        return ReuseKey("model", config, compared=("seed", "prune"), where={"stage": stage})

    assert find_fresh(ws, "data-a", key({"rate": 0.5}, {"epochs": 2})).id == a.id
    assert find_fresh(ws, "data-a", key({"rate": 0.5}, {"epochs": 9})).id == a.id  # not compared
    assert find_fresh(ws, "data-a", key({"rate": 0.4}, {"epochs": 2})) is None
    assert find_fresh(ws, "data-b", key({"rate": 0.5}, {"epochs": 2})) is None
    assert find_fresh(ws, "data-a", key({"rate": 0.5}, {"epochs": 2}, stage="finetuned")) is None
    everything = ReuseKey("model", {"seed": 1, "prune": {"rate": 0.5}, "finetune": {"epochs": 9}})
    assert find_fresh(ws, "data-a", everything) is None  # compared defaults to every recorded section


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


def test_baseline_step_fits_reuses_or_says_why_it_is_skipped(tmp_path, monkeypatch):
    cfg = pipeline_config(load_config(environ=TINY_ENV))
    ws = Workspace(tmp_path)
    dataset = prepare_dataset(cfg, ws, NO_PROGRESS)

    def step(config, force=False):
        run = _Run(NO_PROGRESS, None)
        _baseline_step(run, config, ws, dataset, force, NO_PROGRESS)
        return run.result.steps[-1]

    def with_section(name: str, **values):
        return cfg.model_copy(update={name: getattr(cfg, name).model_copy(update=values)})

    off = step(with_section("pipeline", baseline=None))
    assert (off.status, off.artifact, off.detail) == ("skipped", None, "pipeline.baseline is null")
    explicit = step(with_section("train", task="explicit"))
    assert (explicit.status, explicit.detail) == ("skipped", "ALS and BPR rank implicit feedback")
    monkeypatch.setitem(sys.modules, "implicit", None)  # the optional extra not installed
    missing = step(cfg)
    assert missing.status == "skipped" and "pip install 'ncfctl[baselines]'" in missing.detail
    monkeypatch.undo()
    fitted = step(cfg)
    assert fitted.status == "ran" and ws.get(fitted.artifact, "model").manifest.info.model_type == "als"
    assert ws.get(fitted.artifact, "model").manifest.parent == dataset.id
    again = step(cfg)
    assert (again.status, again.artifact) == ("up to date", fitted.artifact)
    ddp_on_gpu = step(with_section("train", nproc=2, device="cuda"), force=True)  # NeuMF's; ALS fits on the CPU
    assert ddp_on_gpu.status == "ran" and ws.get(ddp_on_gpu.artifact, "model").manifest.info.model_type == "als"
    # `ncfctl train --model als` (its own epochs, which ALS does not read) makes the same fit: reused
    standalone = train_model(load_config(overrides={"model.type": "als"}, environ=TINY_ENV), ws, dataset_ref=dataset.id)
    assert cfg.train.epochs != load_config(environ=TINY_ENV).train.epochs
    assert step(cfg).artifact == standalone.id
    assert step(with_section("baselines", als=cfg.baselines.als.model_copy(update={"factors": 3}))).status == "ran"
    bpr = step(with_section("pipeline", baseline="bpr"))
    assert bpr.status == "ran" and ws.get(bpr.artifact, "model").manifest.info.model_type == "bpr"
