"""Which artifacts ``--compare`` selects, from manifests alone (no model is loaded)."""

from __future__ import annotations

import json

import pytest

from ncfctl.bench.variants import select_variants
from ncfctl.errors import NcfError
from ncfctl.workspace import Workspace


def _dataset(ws: Workspace) -> str:
    with ws.create("dataset", info={"dataset": "synthetic", "num_users": 3, "num_items": 4}) as w:
        pass
    return w.id


def _model(ws: Workspace, stage: str, parent: str, dataset: str) -> str:
    with ws.create("model", parent=parent, info={"stage": stage, "dataset": dataset}) as w:
        (w.path / "model.pt").write_bytes(b"weights")
    return w.id


def _compiled(ws: Workspace, model: str, runtime: str = "onnxruntime") -> str:
    with ws.create("compiled", parent=model, info={"runtime": runtime}) as w:
        (w.path / "serving.json").write_text(json.dumps({"runtime": runtime, "source_model": model}))
    return w.id


def _deployment(ws: Workspace, compiled: str, url: str) -> str:
    with ws.create("image", parent=compiled, info={"compiled": compiled}) as image:
        pass
    with ws.create("deployment", parent=image.id, info={"status": "running", "url": url, "backend": "local"}) as w:
        pass
    return w.id


@pytest.fixture
def family(tmp_path):
    """An old run on another dataset, then a full family: original -> pruned -> finetuned -> compiled."""
    ws = Workspace(tmp_path)
    other = _dataset(ws)
    old = _model(ws, "trained", other, other)
    _compiled(ws, old)
    data = _dataset(ws)
    original = _model(ws, "trained", data, data)
    pruned = _model(ws, "pruned", original, data)
    finetuned = _model(ws, "finetuned", pruned, data)
    compiled = _compiled(ws, finetuned)
    return ws, {"old": old, "original": original, "pruned": pruned, "finetuned": finetuned, "compiled": compiled}


def test_all_is_the_newest_original_and_its_descendants(family):
    ws, ids = family
    stale = _deployment(ws, ids["compiled"], "http://127.0.0.1:9")  # recorded running, nothing listens
    selection = select_variants(ws, "all")
    assert [v.name for v in selection.variants] == ["original", "pruned", "finetuned", "compiled ort"]
    assert [v.id for v in selection.variants] == [ids[k] for k in ("original", "pruned", "finetuned", "compiled")]
    assert selection.baseline.id == ids["original"]
    compiled = selection.variants[-1]
    assert compiled.model_id == ids["finetuned"] and compiled.bundle is not None
    assert any(note.startswith("deployment:") and "skipped" in note for note in selection.notes)
    assert any(stale in note and "not answering" in note for note in selection.notes)


def test_missing_kinds_are_notes_not_errors(tmp_path):
    ws = Workspace(tmp_path)
    data = _dataset(ws)
    original = _model(ws, "trained", data, data)
    selection = select_variants(ws, "all")
    assert [v.id for v in selection.variants] == [original]
    skipped = " | ".join(selection.notes)
    for role in ("pruned", "finetuned", "compiled", "deployment"):
        assert f"{role}:" in skipped


def test_roles_and_ids_mix_and_duplicates_get_distinct_names(family):
    ws, ids = family
    second = _model(ws, "pruned", ids["original"], ws.get(ids["original"]).manifest.info.dataset)
    selection = select_variants(ws, f"pruned,{ids['compiled']}")
    names = [v.name for v in selection.variants]
    assert len(set(names)) == len(names) == 3
    assert all(n.startswith("pruned ") for n in names[:2]) and names[2] == "compiled ort"
    assert {v.id for v in selection.variants} == {ids["pruned"], second, ids["compiled"]}
    assert selection.baseline.id == ids["pruned"]  # no original selected: the first variant


def test_different_datasets_are_refused_with_both_named(family):
    ws, ids = family
    with pytest.raises(NcfError) as err:
        select_variants(ws, f"{ids['original']},{ids['old']}")
    message = str(err.value)
    assert "cannot compare" in message and "same test split" in message
    assert ws.get(ids["old"]).manifest.info.dataset in message


def test_unknown_id_and_non_comparable_kind(family):
    ws, _ = family
    with pytest.raises(NcfError, match="no artifact 'model-nope'"):
        select_variants(ws, "model-nope")
    dataset = ws.latest("dataset")
    with pytest.raises(NcfError, match="only models, compiled bundles and deployments compare"):
        select_variants(ws, dataset.id)
    with pytest.raises(NcfError, match="bench.compare is empty"):
        select_variants(ws, " , ")


def test_no_trained_model(tmp_path):
    with pytest.raises(NcfError, match="no trained model"):
        select_variants(Workspace(tmp_path), "all")


def test_cli_refuses_different_datasets_in_one_line(family, run_cli):
    ws, ids = family
    proc = run_cli("--workdir", str(ws.root), "bench", "--compare", f"{ids['original']},{ids['old']}", check=False)
    assert proc.returncode == 2
    assert "cannot compare" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not (ws.root / "comparison").exists()


def _baseline_model(ws: Workspace, model_type: str, dataset: str) -> str:
    info = {"stage": "trained", "dataset": dataset, "model_type": model_type}
    with ws.create("model", parent=dataset, info=info) as w:
        (w.path / "model.pt").write_bytes(b"weights")
    return w.id


def test_all_adds_the_newest_baselines_on_the_same_dataset(family):
    ws, ids = family
    data = ws.get(ids["original"]).manifest.info.dataset
    _baseline_model(ws, "als", ws.get(ids["old"]).manifest.info.dataset)  # another dataset: never picked
    _baseline_model(ws, "als", data)
    als = _baseline_model(ws, "als", data)
    als_bundle = _compiled(ws, als)
    bpr = _baseline_model(ws, "bpr", data)
    selection = select_variants(ws, "all")
    names = [v.name for v in selection.variants]
    assert names == ["original", "pruned", "finetuned", "compiled ort", "als", "als compiled ort", "bpr"]
    assert [v.id for v in selection.variants[-3:]] == [als, als_bundle, bpr]
    assert {v.role for v in selection.variants[-3:]} == {"baseline"} and selection.baseline.id == ids["original"]
    only = select_variants(ws, "original,baseline")  # the role by name
    assert [v.name for v in only.variants] == ["original", "als", "als compiled ort", "bpr"]
    assert select_variants(ws, bpr).variants[0].role == "baseline"


def test_a_baseline_alone_is_the_original(tmp_path):
    ws = Workspace(tmp_path)
    data = _dataset(ws)
    als = _baseline_model(ws, "als", data)
    selection = select_variants(ws, "all")
    assert [v.name for v in selection.variants] == ["als"] and selection.baseline.id == als
