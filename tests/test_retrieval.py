"""ANN retrieval: candidates from the bundle's FAISS index, re-ranked exactly; refusal of a bad index.

The index here scans 4 of 16 lists (a quarter of the catalogue), so recall is a real approximation.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import ONNX_MODELS, export_onnx, separated_ncf, tiny_interaction_data
from ncf_serving.bundle import BundleError
from ncf_serving.predictor import Predictor

from ncfctl.config import load_config
from ncfctl.errors import NcfError
from ncfctl.models import NCF, NCFSpec
from ncfctl.serving.bundle import write_serving_bundle
from ncfctl.serving.retrieval import choose_retrieval
from ncfctl.training import FitSettings, fit

torch.set_num_threads(1)
ANN = load_config(
    overrides={"serving.ann.candidates": 40, "serving.ann.lists": 16, "serving.ann.nprobe": 4}, environ={}
).serving.ann


def trained_model(data, model_type="neumf"):
    torch.manual_seed(0)
    spec = NCFSpec.from_layers(
        model_type=model_type, num_users=data.num_users, num_items=data.num_items, factors=8, layers=[16, 8]
    )
    model = NCF(spec)
    fit(model, data, FitSettings(epochs=4, patience=0, batch_size=512, lr=0.01, device="cpu", full_ranking=False))
    return model.eval()


@pytest.fixture(scope="module")
def catalogue():
    """A NeuMF trained on 300 users x 1,500 clustered items: big enough that 40 candidates are 3%."""
    data = tiny_interaction_data(users=300, items=1500, per_user=25, clusters=12, eval_negatives=10)
    return data, trained_model(data)


def ann_bundle(folder, model, data, ann=ANN):
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(model, folder / "model.onnx")
    write_serving_bundle(
        folder, model, data, runtime="onnxruntime", models=ONNX_MODELS, source_model="m", target="local", ann=ann
    )
    return folder


def test_ann_top_10_recalls_the_exact_top_10_and_scores_exactly(catalogue, tmp_path):
    data, model = catalogue
    predictor = Predictor.load(ann_bundle(tmp_path, model, data))
    assert predictor.retrieval is not None
    recalls = []
    for user in range(data.num_users):
        items, scores = predictor.top_k(user, 10)
        exact = predictor.exact_top_k(user, 10)
        recalls.append(len(set(items.tolist()) & set(exact.tolist())) / 10)
        assert not set(items.tolist()) & set(predictor.seen(user).tolist())  # seen items filtered in the search
        np.testing.assert_allclose(scores, predictor.fastpath.score_all(user)[items], rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(scores) <= 0)
    assert np.mean(recalls) >= 0.95
    items, _ = predictor.top_k(0, 10, exclude_seen=False)
    assert len(items) == 10


def test_more_than_candidates_items_can_be_asked_for(catalogue, tmp_path):
    data, model = catalogue
    predictor = Predictor.load(ann_bundle(tmp_path, model, data))
    items, _ = predictor.top_k(3, 100)
    assert len(items) == 100 and len(set(items.tolist())) == 100


def test_auto_is_exact_below_min_items_and_mlp_models_are_never_indexed():
    serving = load_config(environ={}).serving
    small = NCFSpec(num_users=10, num_items=serving.ann.min_items - 1)
    large = NCFSpec(num_users=10, num_items=serving.ann.min_items)
    assert not choose_retrieval(serving, small).ann and "min_items" in choose_retrieval(serving, small).reason
    assert choose_retrieval(serving, large).ann
    ann = serving.model_copy(update={"retrieval": "ann"})
    assert choose_retrieval(ann, small).ann
    mlp = large.model_copy(update={"model_type": "mlp", "factors": 0})
    assert not choose_retrieval(serving, mlp).ann
    with pytest.raises(NcfError, match="no GMF branch"):
        choose_retrieval(ann, mlp)
    exact = serving.model_copy(update={"retrieval": "exact"})
    assert not choose_retrieval(exact, large).ann


def test_an_exact_bundle_has_no_index(tmp_path):
    data = tiny_interaction_data()
    model = separated_ncf(NCFSpec(num_users=data.num_users, num_items=data.num_items, factors=4, hidden=[4]))
    export_onnx(model, tmp_path / "model.onnx")
    write_serving_bundle(
        tmp_path, model, data, runtime="onnxruntime", models=ONNX_MODELS, source_model=None, target=None
    )
    assert json.loads((tmp_path / "serving.json").read_text())["retrieval"] is None
    assert not (tmp_path / "retrieval.faiss").exists()
    assert Predictor.load(tmp_path).retrieval is None


def _set_sha(folder, path):
    """Record ``path``'s new digest everywhere the bundle keeps it, to reach the checks behind them."""
    from ncf_serving.checksums import sha256_file

    spec = json.loads((folder / "serving.json").read_text())
    spec["files"][path.name] = sha256_file(path)
    (folder / "serving.json").write_text(json.dumps(spec))


def test_a_missing_damaged_or_foreign_index_refuses_to_load(catalogue, tmp_path):
    data, model = catalogue
    good = ann_bundle(tmp_path / "good", model, data)
    other = trained_model(data, model_type="gmf")  # same shape, another model
    foreign = ann_bundle(tmp_path / "foreign", other, data)
    index = good / "retrieval.faiss"
    original = index.read_bytes()

    index.unlink()
    with pytest.raises(BundleError, match=r"retrieval.faiss: is missing"):
        Predictor.load(good)

    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    index.write_bytes(bytes(damaged))
    with pytest.raises(BundleError, match=r"retrieval.faiss: sha256 is \w+\.\.\., the recorded one"):
        Predictor.load(good)

    index.write_bytes(original[: len(original) // 3])  # truncated, with a matching digest
    _set_sha(good, index)
    with pytest.raises(BundleError, match="not a readable FAISS index"):
        Predictor.load(good)

    shutil.copy(foreign / "retrieval.faiss", index)  # another model's index, digest updated to match
    _set_sha(good, index)
    with pytest.raises(BundleError, match="not this model's GMF item embeddings"):
        Predictor.load(good)

    small = tiny_interaction_data(users=300, items=1400, per_user=25, clusters=12, eval_negatives=10)
    smaller = ann_bundle(tmp_path / "smaller", trained_model(small), small)
    shutil.copy(smaller / "retrieval.faiss", index)
    _set_sha(good, index)
    with pytest.raises(BundleError, match="holds 1400 vectors of dimension 9, the model has 1500 items"):
        Predictor.load(good)

    index.write_bytes(original)
    _set_sha(good, index)
    assert Predictor.load(good).retrieval is not None


def test_workers_use_the_index_the_master_read_only_if_it_is_the_bundles(catalogue, tmp_path, monkeypatch):
    """The server's master reads the index before forking so the workers share one copy; it keeps it
    only under the sha256 serving.json records, so a file changed under the master is never served."""
    from ncf_serving import retrieval
    from ncf_serving.bundle import read_spec

    monkeypatch.setattr(retrieval, "_shared_indexes", {})
    data, model = catalogue
    bundle = ann_bundle(tmp_path / "bundle", model, data)
    spec = read_spec(bundle)
    retrieval.read_shared_index(bundle, spec)
    (shared,) = retrieval._shared_indexes.values()
    first, second = Predictor.load(bundle), Predictor.load(bundle)  # two workers
    assert first.retrieval.index is shared and second.retrieval.index is shared and first.retrieval.shared
    monkeypatch.setattr(retrieval, "_shared_indexes", {})
    own = Predictor.load(bundle)
    assert not own.retrieval.shared
    for user in range(0, data.num_users, 37):
        assert np.array_equal(first.top_k(user, 10)[0], own.top_k(user, 10)[0])

    index = bundle / "retrieval.faiss"
    original = index.read_bytes()
    shutil.copy(ann_bundle(tmp_path / "other", trained_model(data, "gmf"), data) / "retrieval.faiss", index)
    retrieval.read_shared_index(bundle, spec)  # the file no longer has the recorded sha256: nothing shared
    assert retrieval._shared_indexes == {}
    index.write_bytes(original[:100])
    retrieval.read_shared_index(bundle, spec)  # unreadable: the workers read it and say why
    index.unlink()
    retrieval.read_shared_index(bundle, spec)
    assert retrieval._shared_indexes == {}


def test_every_worker_of_the_server_serves_the_masters_copy_of_the_index(catalogue, tmp_path, serving_process):
    import httpx

    data, model = catalogue
    bundle = ann_bundle(tmp_path / "bundle", model, data)
    server = serving_process(bundle, env={"NCF_WORKERS": "2"})
    ready = [json.loads(line) for line in server.log().splitlines() if '"model ready"' in line]
    assert [line["ann_index"] for line in ready] == ["shared", "shared"] and len({r["pid"] for r in ready}) == 2
    expected = Predictor.load(bundle)
    for user in range(0, data.num_users, 50):
        raw_user = data.user_ids[user]
        answer = httpx.post(f"{server.url}/invocations", json={"user_id": raw_user, "top_k": 5}, timeout=10).json()
        assert [entry["item_id"] for entry in answer["items"]] == expected.items.to_public(expected.top_k(user, 5)[0])
