"""The written forms of a comparison (JSON, CSV, markdown, PNGs) for both tasks, from given rows."""

from __future__ import annotations

import csv
import io
import json

import pytest

from ncfctl.bench import charts, report

SPEED = {
    "b1_p50_ms": 0.1,
    "b1_p99_ms": 0.3,
    "b64_p50_ms": 0.2,
    "b64_p99_ms": 0.5,
    "topk_p50_ms": 0.8,
    "topk_p99_ms": 1.2,
    "throughput": 320000.0,
    "parameters": 1000,
    "nonzeros": 500,
    "sparsity": 0.5,
    "size_mb": 0.004,
    "peak_rss_mb": 80.0,
    "speedup_b1": 1.0,
    "speedup_topk": 1.0,
}


def _results(explicit: bool) -> dict:
    quality = (
        [{"rmse": 0.90, "mae": 0.70, "delta_rmse": 0.0, "delta_mae": 0.0}, {"rmse": 0.92, "mae": 0.71}]
        if explicit
        else [
            {"hr": 0.70, "ndcg": 0.45, "full_hr": 0.20, "full_ndcg": 0.11, "delta_hr": 0.0, "delta_full_hr": 0.0},
            {"hr": 0.69, "ndcg": 0.44, "full_hr": 0.19, "full_ndcg": 0.10},
        ]
    )
    second = {**SPEED, "topk_p50_ms": 0.2, "speedup_topk": 4.0, "speedup_b1": 2.0, "peak_rss_mb": 40.0}
    if explicit:
        quality[1].update(delta_rmse=0.02, delta_mae=0.01)
    else:
        quality[1].update(delta_hr=-0.01, delta_full_hr=-0.01)
    rows = [
        {"id": "model-a", "variant": "original", "runtime": "torch", "threads": 1, **SPEED, **quality[0]},
        {"id": "compiled-b", "variant": "compiled ort", "runtime": "onnxruntime", "threads": 1, **second, **quality[1]},
    ]
    return {
        "id": "benchmark-x",
        "dataset": "dataset-x",
        "num_users": 10,
        "num_items": 20,
        "explicit": explicit,
        "k": 10,
        "baseline": "original",
        "threads": 1,
        "warmup": 1,
        "repeats": 5,
        "machine": {"cpu": "test cpu", "cores": 2},
        "columns": [c.key for c in report.columns(explicit, 10)],
        "rows": rows,
        "notes": ["deployment: none running"],
        "figures": [],
    }


@pytest.mark.parametrize("explicit", [False, True])
def test_reports_and_charts(tmp_path, explicit):
    results = _results(explicit)
    results["figures"] = charts.render_charts(tmp_path, results)
    report.write_reports(tmp_path, results)
    assert json.loads((tmp_path / report.RESULTS_JSON).read_text())["rows"][1]["variant"] == "compiled ort"
    header = next(csv.reader(io.StringIO((tmp_path / report.RESULTS_CSV).read_text())))
    assert header[:4] == ["id", "variant", "runtime", "threads"]
    assert ("rmse" in header) == explicit and ("full_hr" in header) != explicit
    summary = (tmp_path / report.SUMMARY_MD).read_text()
    assert ("| RMSE |" in summary) == explicit and ("| full HR@10 |" in summary) != explicit
    assert "top-K 0.200 ms vs 0.800 ms p50 (4.00x)" in summary  # findings quote the measured numbers
    assert "- deployment: none running" in summary
    for name in results["figures"]:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_format_value():
    assert report.format_value(0.123456, ".4f") == "0.1235"
    assert report.format_value(1234567, ",") == "1,234,567"
    assert report.format_value(-0.01, "+.4f") == "-0.0100"
    assert report.format_value(None, ".4f") == ""


def test_winners_name_the_best_variant_per_metric():
    results = _results(explicit=False)
    results["rows"].append(
        {**results["rows"][0], "variant": "als", "hr": 0.70, "full_hr": 0.25, "size_mb": 0.001, "peak_rss_mb": 90.0}
    )
    assert report.winners(results) == (
        "Best per metric: HR@10 **original** and **als** (0.7000); full-ranking HR@10 **als** (0.2500); "
        "top-K latency **compiled ort** (0.200 ms); "
        "one-pair latency **original**, **compiled ort** and **als** (0.100 ms); size on disk **als** (0.00 MB); "
        "peak memory **compiled ort** (40 MB)."
    )
    assert "**" not in report.winners(results, bold="")  # the terminal's sentence: no Markdown
    explicit = report.winners(_results(explicit=True))
    assert explicit.startswith("Best per metric: RMSE **original** (0.9000); MAE **original** (0.7000);")
    results["popularity"] = {"hr": 0.5, "full_hr": 0.05}
    assert "Popularity ranking (no model) on the same split: HR@10 0.5000" in report.to_markdown(results)
