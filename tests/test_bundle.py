"""The serving bundle: ncfctl's writer against the container's reader, and the exact top-K fast path."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import separated_ncf, tiny_interaction_data
from ncf_serving import fastpath
from ncf_serving.bundle import BundleError, load_bundle
from ncf_serving.checksums import hash_folder, sha256_file
from ncf_serving.fastpath import FastPath
from ncf_serving.ids import IdMap

from ncfctl.errors import NcfError
from ncfctl.models import NCFSpec
from ncfctl.serving.bundle import fastpath_arrays, write_serving_bundle

torch.set_num_threads(1)
ONNX_MODELS = [{"batch_size": None, "path": "model.onnx"}]

SPECS = {
    "neumf": dict(model_type="neumf", factors=8, mlp_user_dim=8, mlp_item_dim=8, hidden=[16, 8, 4]),
    "neumf-uneven": dict(model_type="neumf", factors=3, mlp_user_dim=5, mlp_item_dim=7, hidden=[6]),
    "gmf": dict(model_type="gmf", factors=8),
    "mlp": dict(model_type="mlp", factors=0, mlp_user_dim=6, mlp_item_dim=4, hidden=[8, 4]),
    "explicit": dict(model_type="neumf", task="explicit", factors=4, mlp_user_dim=4, mlp_item_dim=4, hidden=[4]),
}


def record_checksums(folder) -> None:
    """Re-record ``serving.json`` ``files`` after a test edits a file, to reach the checks behind them."""
    spec = json.loads((folder / "serving.json").read_text())
    spec["files"] = hash_folder(folder, exclude=["serving.json"])
    (folder / "serving.json").write_text(json.dumps(spec))


def torch_scores(model, user: int, num_items: int) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.full((num_items,), user), torch.arange(num_items)).numpy()


@pytest.mark.parametrize("block", [fastpath.BLOCK_ITEMS, 7])  # one block; 40 items in blocks of 7 (and 5)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_fastpath_matches_the_model_exactly(name, block, monkeypatch):
    monkeypatch.setattr(fastpath, "BLOCK_ITEMS", block)
    data = tiny_interaction_data()
    model = separated_ncf(NCFSpec(num_users=data.num_users, num_items=data.num_items, **SPECS[name]))
    fast = FastPath(fastpath_arrays(model))
    indptr, seen = data.seen_items()
    for user in range(data.num_users):
        reference = torch_scores(model, user, data.num_items)
        np.testing.assert_allclose(fast.score_all(user), reference, rtol=1e-5, atol=1e-5)
        exclude = seen[indptr[user] : indptr[user + 1]]
        masked = reference.copy()
        masked[exclude] = -np.inf
        expected = np.lexsort((np.arange(data.num_items), -masked))[:10]
        items, scores = fast.top_k(user, 10, exclude)
        assert items.tolist() == expected.tolist()
        assert not set(items.tolist()) & set(exclude.tolist())
        np.testing.assert_allclose(scores, reference[items], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_score_items_rescores_a_subset_exactly(name):
    """What re-ranks ANN candidates: the same scores as scoring every item, for any subset and order."""
    fast = FastPath(fastpath_arrays(separated_ncf(NCFSpec(num_users=60, num_items=40, **SPECS[name]))))
    subset = np.random.default_rng(0).permutation(40)[:13]
    for user in (0, 17, 59):
        np.testing.assert_allclose(fast.score_items(user, subset), fast.score_all(user)[subset], rtol=1e-6, atol=1e-6)
        items, scores = fast.rank(subset, fast.score_items(user, subset), 5)
        assert items.tolist() == [i for i in fast.top_k(user, 40)[0].tolist() if i in set(subset.tolist())][:5]


def test_top_k_returns_fewer_items_when_fewer_remain():
    data = tiny_interaction_data()
    fast = FastPath(fastpath_arrays(separated_ncf(NCFSpec(num_users=60, num_items=40, **SPECS["neumf"]))))
    everything_but_two = np.arange(38)
    items, scores = fast.top_k(0, 10, everything_but_two)
    assert sorted(items.tolist()) == [38, 39] and len(scores) == 2
    assert len(fast.top_k(0, 1000)[0]) == data.num_items
    assert len(fast.top_k(0, 5, np.arange(40))[0]) == 0


def test_bundle_round_trip(tmp_path):
    data = tiny_interaction_data()
    model = separated_ncf(NCFSpec(num_users=60, num_items=40, **SPECS["neumf"]))
    (tmp_path / "model.onnx").write_bytes(b"the compiler writes the model files first")
    document = write_serving_bundle(
        tmp_path, model, data, runtime="onnxruntime", models=ONNX_MODELS, source_model="model-x", target="ml_c5"
    )
    on_disk = json.loads((tmp_path / "serving.json").read_text())
    names = ["fastpath", "ids", "model.onnx", "seen_items", "serving.json"]
    assert (
        on_disk
        == document
        == {
            "format": 2,
            "runtime": "onnxruntime",
            "models": ONNX_MODELS,
            "task": "implicit",
            "num_users": 60,
            "num_items": 40,
            "inputs": ["user", "item"],
            "output": "score",
            "threads": 1,
            "source_model": "model-x",
            "target": "ml_c5",
            "files": {
                path.relative_to(tmp_path).as_posix(): sha256_file(path)
                for path in tmp_path.rglob("*")
                if path.is_file() and path.name != "serving.json"
            },
            "retrieval": None,
        }
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert sorted(p.name for p in (tmp_path / "ids").iterdir()) == [
        "item_ids.npy", "item_order.npy", "user_ids.npy", "user_order.npy"
    ]  # fmt: skip
    bundle = load_bundle(tmp_path)
    indptr, indices = data.seen_items(include_val=True)
    assert bundle.seen_indptr.tolist() == indptr.tolist()
    assert bundle.seen_indices.tolist() == indices.tolist()
    assert bundle.user_ids.tolist() == data.user_ids.tolist() and bundle.item_ids.dtype.kind == "U"
    expected_keys = {"gmf_user", "gmf_item", "mlp_user", "w1_user", "item_pre", "out_mlp", "out_bias"}
    assert set(bundle.fastpath) == expected_keys | {"mlp_w2", "mlp_b2", "mlp_w3", "mlp_b3"}
    assert all(a.dtype == np.float32 for a in bundle.fastpath.values())
    assert bundle.fastpath["item_pre"].shape == (40, 16) and bundle.fastpath["mlp_w2"].shape == (16, 8)
    # memory-mapped, read-only: workers share the page cache's copy instead of holding their own
    for array in (bundle.fastpath["item_pre"], bundle.seen_indices, bundle.item_ids, bundle.item_order):
        assert isinstance(array.base, np.memmap) and not array.flags.writeable


def test_rewriting_a_bundle_leaves_no_stale_arrays(tmp_path):
    data = tiny_interaction_data()
    (tmp_path / "model.onnx").write_bytes(b"model")
    for name in ("neumf", "gmf"):
        model = separated_ncf(NCFSpec(num_users=60, num_items=40, **SPECS[name]))
        write_serving_bundle(
            tmp_path, model, data, runtime="onnxruntime", models=ONNX_MODELS, source_model=None, target=None
        )
    assert set(load_bundle(tmp_path).fastpath) == {"gmf_user", "gmf_item", "out_bias"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folders left


def test_a_format_1_bundle_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "serving.json").write_text(json.dumps({"format": 1, "runtime": "onnxruntime"}))
    with pytest.raises(BundleError, match="bundle format 1 .* compile the model again with `ncfctl neo compile`"):
        load_bundle(tmp_path)


def test_static_batch_sizes_are_recorded(tmp_path):
    data = tiny_interaction_data()
    models = [{"batch_size": 1, "path": "b1"}, {"batch_size": 40, "path": "b40"}]
    for folder in ("b1", "b40"):  # DLR models are folders
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "compiled.so").write_bytes(folder.encode())
    model = separated_ncf(NCFSpec(num_users=60, num_items=40, **SPECS["gmf"]))
    write_serving_bundle(tmp_path, model, data, runtime="dlr", models=models, source_model=None, target="ml_c5")
    assert load_bundle(tmp_path).spec.models[1].batch_size == 40


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runtime": "tensorrt"}, "'runtime'"),
        ({"models": []}, "'models'"),
        ({"models": [{"batch_size": 0, "path": "b0"}]}, "'models.0.batch_size'"),
        ({"models": [{"batch_size": None, "path": "../escape.onnx"}]}, "'models.0'"),
        ({"models": [{"batch_size": None, "path": "a"}, {"batch_size": 4, "path": "b"}]}, "'models'"),
        ({"threads": 0}, "'threads'"),
    ],
)
def test_writer_rejects_bad_fields_naming_them(tmp_path, kwargs, message):
    data = tiny_interaction_data()
    model = separated_ncf(NCFSpec(num_users=60, num_items=40, **SPECS["gmf"]))
    args = {"runtime": "onnxruntime", "models": ONNX_MODELS, "source_model": None, "target": None, **kwargs}
    with pytest.raises(NcfError, match=message):
        write_serving_bundle(tmp_path, model, data, **args)
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_a_model_from_other_data(tmp_path):
    model = separated_ncf(NCFSpec(num_users=61, num_items=40, **SPECS["gmf"]))
    with pytest.raises(NcfError, match="61 users x 40 items but the dataset has 60 x 40"):
        write_serving_bundle(
            tmp_path,
            model,
            tiny_interaction_data(),
            runtime="onnxruntime",
            models=ONNX_MODELS,
            source_model=None,
            target=None,
        )


def test_reader_names_the_broken_file(tmp_path):
    data = tiny_interaction_data()
    model = separated_ncf(NCFSpec(num_users=60, num_items=40, **SPECS["neumf"]))
    write_serving_bundle(
        tmp_path, model, data, runtime="onnxruntime", models=ONNX_MODELS, source_model=None, target=None
    )
    (tmp_path / "model.onnx").write_bytes(b"model")
    record_checksums(tmp_path)
    order = tmp_path / "ids" / "item_order.npy"
    np.save(order, np.load(order)[::-1])
    record_checksums(tmp_path)
    with pytest.raises(BundleError, match=r"ids/item_order.npy does not sort item_ids.npy"):
        load_bundle(tmp_path)
    np.save(tmp_path / "ids" / "user_ids.npy", np.load(tmp_path / "ids" / "user_ids.npy")[:-1])
    record_checksums(tmp_path)
    with pytest.raises(BundleError, match=r"ids/user_ids.npy has shape \(59,\)"):
        load_bundle(tmp_path)
    (tmp_path / "fastpath" / "gmf_item.npy").write_bytes(b"not an array")
    record_checksums(tmp_path)
    with pytest.raises(BundleError, match="fastpath/gmf_item.npy is not a readable .npy"):
        load_bundle(tmp_path)
    spec = json.loads((tmp_path / "serving.json").read_text())
    (tmp_path / "serving.json").write_text(json.dumps({**spec, "runtime": "tvm"}))
    with pytest.raises(BundleError, match="field 'runtime'"):
        load_bundle(tmp_path)
    (tmp_path / "serving.json").unlink()
    with pytest.raises(BundleError, match="not an ncfctl serving bundle"):
        load_bundle(tmp_path)


def test_id_map_speaks_the_data_ids():
    numeric = IdMap(np.array(["10", "7", "300"]))
    assert numeric.lookup(7) == 1 and numeric.lookup("7") == 1 and numeric.lookup(-7) is None
    assert numeric.lookup(3000) is None and numeric.lookup(1) is None and numeric.lookup("3") is None
    assert numeric.to_public(np.array([2, 0])) == [300, 10]
    text = IdMap(np.array(["u1", "007", "8"]))
    assert text.lookup("007") == 1 and text.lookup(7) is None and text.lookup("u10") is None
    assert text.to_public(np.array([1, 2])) == ["007", "8"]
    assert IdMap(np.array(["5", "+6"])).to_public(np.array([0, 1])) == ["5", "+6"]  # "+6" would not round-trip


def test_id_map_finds_every_id_of_a_large_table():
    rng = np.random.default_rng(0)
    raw = np.unique(rng.integers(-(10**12), 10**12, 20_000)).astype(str)
    rng.shuffle(raw)
    ids = IdMap(raw, np.argsort(raw, kind="stable"))
    assert all(ids.lookup(int(raw[i])) == i for i in range(0, len(raw), 7))
    assert ids.to_public(np.arange(3)) == [int(v) for v in raw[:3]]
    assert ids.lookup(10**13) is None
