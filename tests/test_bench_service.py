"""``run_benchmark`` on a tiny real workspace: trained, pruned, compiled and a live local deployment."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ncfctl.bench.report import RESULTS_CSV, RESULTS_JSON, SUMMARY_MD
from ncfctl.bench.service import run_benchmark
from ncfctl.config import load_config
from ncfctl.workspace import Workspace

torch.set_num_threads(1)

TINY = {
    "data.synthetic.users": 120,
    "data.synthetic.items": 150,
    "data.synthetic.interactions": 4000,
    "data.synthetic.min_per_user": 5,
    "data.eval_negatives": 20,
    "model.factors": 4,
    "model.layers": [16, 8],
    "train.epochs": 1,
    "finetune.epochs": 1,
    "compile.backend": "local",
    "image.backend": "none",
    "deploy.backend": "local",
    "bench.repeats": 6,
    "bench.warmup": 1,
}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """data -> train -> prune -> compile -> image -> local deployment, through the real services."""
    from ncfctl.compile.service import compile_model
    from ncfctl.data.prepare import prepare_dataset
    from ncfctl.pruning.service import prune_model
    from ncfctl.serving import deploy as deploy_service
    from ncfctl.serving.build_image import build_image
    from ncfctl.training.service import train_model

    root = tmp_path_factory.mktemp("bench") / "output"
    config = load_config(overrides={"workdir": str(root), **TINY}, environ={})
    ws = Workspace(config.workdir)
    dataset = prepare_dataset(config, ws)
    original = train_model(config, ws, dataset_ref=dataset.id)
    pruned = prune_model(config, ws, original.id).pruned
    compiled = compile_model(config, ws, pruned.id)
    build_image(config, ws, compiled.id)
    deployment = deploy_service.deploy(config, ws)
    try:
        yield config, ws, {"original": original, "pruned": pruned, "compiled": compiled, "deployment": deployment}
    finally:
        deploy_service.stop(config, ws, deployment.id)


def _filled(value) -> bool:
    return value is not None and value != "" and (not isinstance(value, float) or math.isfinite(value))


def test_compare_all_measures_every_variant(served):
    config, ws, arts = served
    artifact = run_benchmark(config, ws)
    results = json.loads((artifact.path / RESULTS_JSON).read_text())
    rows = {row["variant"]: row for row in results["rows"]}
    assert list(rows) == ["original", "pruned", "compiled ort", "deployed"]
    assert [rows[n]["id"] for n in rows] == [arts[k].id for k in ("original", "pruned", "compiled", "deployment")]
    assert any(note.startswith("finetuned:") for note in results["notes"])  # missing kind: a note, no crash
    for row in rows.values():
        missing = [c for c in results["columns"] if not _filled(row.get(c))]
        assert not missing, f"{row['variant']}: empty {missing}"

    base, pruned, compiled, deployed = (rows[n] for n in rows)
    assert base["speedup_b1"] == 1.0 and base["delta_hr"] == 0.0
    assert pruned["sparsity"] == pytest.approx(0.5, abs=0.01) and base["sparsity"] == 0.0
    assert compiled["nonzeros"] == pruned["nonzeros"]  # counted from the ONNX initializers
    # same weights through three runtimes: the same quality (sampled exactly, full up to score ties)
    for row in (compiled, deployed):
        assert row["hr"] == pytest.approx(pruned["hr"], abs=1e-9)
        assert row["full_hr"] == pytest.approx(pruned["full_hr"], abs=0.02)
    assert deployed["full_hr"] == pytest.approx(compiled["full_hr"], abs=1e-9)
    # measured in separate processes: a bundle served by ONNX Runtime needs far less than torch
    assert compiled["peak_rss_mb"] < base["peak_rss_mb"]
    assert results["threads"] == config.bench.threads and results["repeats"] == config.bench.repeats
    assert deployed["workers"] == arts["deployment"].manifest.info.workers >= 1  # what the server reports
    assert base["workers"] == compiled["workers"] == 1

    assert artifact.manifest.parent == arts["original"].id
    table = list(csv.DictReader(io.StringIO((artifact.path / RESULTS_CSV).read_text())))
    assert [r["variant"] for r in table] == list(rows)
    summary = (artifact.path / SUMMARY_MD).read_text()
    assert summary.count("\n| ") == 1 + len(rows) and "![latency](latency.png)" in summary
    for name in results["figures"]:
        assert (artifact.path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_compare_list_json(served, run_cli):
    _, ws, arts = served
    compare = f"original,{arts['compiled'].id}"
    proc = run_cli("--workdir", str(ws.root), "bench", "--compare", compare, "--repeats", "3", "--json")
    payload = json.loads(proc.stdout)
    results = payload["results"]
    assert [r["variant"] for r in results["rows"]] == ["original", "compiled ort"]
    assert results["notes"] == [] and results["repeats"] == 3
    assert payload["path"].startswith(str(ws.root / "comparison"))
    assert all(Path(f).is_file() for f in payload["figures"])
    speedups = [r["speedup_topk"] for r in results["rows"]]
    assert speedups[0] == 1.0 and np.isfinite(speedups[1]) and speedups[1] > 0


def test_an_ann_bundle_reports_its_top_k_recall(served):
    """Last in this module: it adds a compiled artifact to the shared workspace."""
    from ncfctl.compile.service import compile_model

    config, ws, arts = served
    ann = config.model_copy(
        update={
            "serving": config.serving.model_copy(
                update={
                    "retrieval": "ann",
                    "ann": config.serving.ann.model_copy(update={"candidates": 12, "lists": 2, "nprobe": 1}),
                }
            )
        }
    )
    compiled = compile_model(ann, ws, arts["original"].id)
    assert compiled.manifest.info.retrieval == "ann"
    artifact = run_benchmark(config, ws, compare=f"original,{compiled.id}")
    rows = {row["variant"]: row for row in json.loads((artifact.path / RESULTS_JSON).read_text())["rows"]}
    assert rows["original"]["topk_recall"] == 1.0  # eager torch scores every item
    recall = rows["compiled ort"]["topk_recall"]
    assert 0.3 < recall < 1.0  # 12 candidates from one of two lists: measured, not assumed
    assert rows["compiled ort"]["recall_users"] == 120
