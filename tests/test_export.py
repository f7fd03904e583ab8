"""Export (ONNX opset <= 12, traced TorchScript) and the Neo preflight: safe operators, parity, clear failures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from ncfctl.errors import NcfError
from ncfctl.export import export_checked, manual_normalize, random_pairs
from ncfctl.export.preflight import check_onnx, check_parity
from ncfctl.export.runners import ort_scorer, ort_session, torch_scorer
from ncfctl.models import NCF, NCFSpec

USERS, ITEMS = 50, 30


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _export(model, tmp_path, framework="onnx", batch_size=None, tolerance=1e-5):
    return export_checked(
        model,
        tmp_path,
        framework=framework,
        num_users=USERS,
        num_items=ITEMS,
        batch_size=batch_size,
        opset=12,
        tolerance=tolerance,
    )


def _ncf(model_type="neumf", **spec):
    base = {"num_users": USERS, "num_items": ITEMS, "factors": 8, "mlp_user_dim": 8, "mlp_item_dim": 8}
    return NCF(NCFSpec(model_type=model_type, **{**base, **spec}))


def _onnx_vs_torch(model, path, n=257, seed=7):
    users, items = random_pairs(USERS, ITEMS, n, seed)
    expected = torch_scorer(model)(users, items)
    got = ort_scorer(ort_session(path))(users, items)
    return float(np.max(np.abs(expected - got)))


@pytest.mark.parametrize("model_type", ["gmf", "mlp", "neumf"])
def test_onnx_export_matches_pytorch_and_meets_neo_limits(tmp_path, model_type):
    model = _ncf(model_type, task="explicit" if model_type == "mlp" else "implicit")
    report = _export(model, tmp_path)
    proto = onnx.load(report.path)
    assert report.path.name == "model.onnx" and report.batch_size is None
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [12]
    assert proto.ir_version <= 7
    assert [(i.name, i.type.tensor_type.elem_type) for i in proto.graph.input] == [
        ("user", TensorProto.INT64),
        ("item", TensorProto.INT64),
    ]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert report.max_abs_diff <= 1e-5 and report.parity_pairs == 1 + 1024
    assert _onnx_vs_torch(model, report.path) <= 1e-5  # independent check on fresh inputs
    assert "Gather" in report.operators and "Squeeze" in report.operators


def test_static_batch_export_fixes_the_batch_dimension(tmp_path):
    report = _export(_ncf(), tmp_path, batch_size=ITEMS)
    dims = onnx.load(report.path).graph.input[1].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [ITEMS]
    assert report.parity_pairs == ITEMS


def test_structured_pruned_shapes_export_smaller_and_magnitude_pruned_stays_dense(tmp_path):
    small = _ncf(mlp_user_dim=6, mlp_item_dim=3, hidden=[5, 2])  # what structured pruning leaves
    assert _onnx_vs_torch(small, _export(small, tmp_path / "s").path) <= 1e-5
    initializers = onnx.load(tmp_path / "s" / "model.onnx").graph.initializer
    exported_shapes = sorted(tuple(i.dims) for i in initializers if len(i.dims) == 2)
    assert exported_shapes == sorted(tuple(p.shape) for p in small.parameters() if p.ndim == 2)
    assert (USERS, 6) in exported_shapes and (2, 5) in exported_shapes

    dense = _ncf()
    with torch.no_grad():
        for param in dense.parameters():
            param.mul_((torch.rand_like(param) > 0.5).float())  # magnitude pruning leaves exact zeros
    zeros = sum(int((p == 0).sum()) for p in dense.parameters())
    report = _export(dense, tmp_path / "m")
    exported = [onnx.numpy_helper.to_array(i) for i in onnx.load(report.path).graph.initializer]
    assert sum(int((w == 0).sum()) for w in exported if w.dtype == np.float32) >= zeros
    assert sum(w.size for w in exported if w.dtype == np.float32) == sum(p.numel() for p in dense.parameters())


def test_torchscript_export_round_trips(tmp_path):
    model = _ncf()
    report = _export(model, tmp_path, framework="pytorch")
    assert report.path.name == "model.pth"
    loaded = torch.jit.load(str(report.path))
    users, items = random_pairs(USERS, ITEMS, 64, 3)
    expected = torch_scorer(model)(users, items)
    assert np.max(np.abs(torch_scorer(loaded)(users, items) - expected)) == 0.0
    assert {"aten::embedding", "aten::linear", "aten::cat"} <= set(report.operators)


class _Normalized(nn.Module):
    """A two-tower model that L2-normalises embeddings, the design doc's Neo failure."""

    def __init__(self, manual: bool):
        super().__init__()
        self.user = nn.Embedding(USERS, 4)
        self.item = nn.Embedding(ITEMS, 4)
        self.manual = manual

    def forward(self, user, item):
        norm = manual_normalize if self.manual else (lambda x: F.normalize(x, dim=-1))
        return (norm(self.user(user)) * norm(self.item(item))).sum(-1)


@pytest.mark.parametrize("framework", ["onnx", "pytorch"])
def test_f_normalize_fails_preflight_with_the_fix(tmp_path, framework):
    with pytest.raises(NcfError) as err:
        _export(_Normalized(manual=False), tmp_path, framework=framework)
    message = str(err.value)
    assert "aten::linalg_vector_norm" in message and "via norm()" in message
    assert "manual_normalize" in message and not (tmp_path / "model.onnx").exists()


def test_manual_normalize_passes_and_equals_f_normalize(tmp_path):
    x = torch.randn(16, 4)
    x[0] = 0.0  # the eps branch
    assert torch.allclose(manual_normalize(x), F.normalize(x, dim=-1), atol=1e-7)
    report = _export(_Normalized(manual=True), tmp_path)
    assert report.max_abs_diff <= 1e-5 and "ReduceL2" not in report.operators


class _Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag = nn.EmbeddingBag(ITEMS, 4, mode="sum")
        self.user = nn.Embedding(USERS, 4)

    def forward(self, user, item):
        return (self.user(user) * self.bag(item.unsqueeze(1))).sum(-1)


def test_embedding_bag_fails_naming_the_layer(tmp_path):
    with pytest.raises(NcfError, match=r"aten::embedding_bag in layer 'bag'.*nn.Embedding"):
        _export(_Bag(), tmp_path)


def test_scripted_submodule_fails_naming_the_layer(tmp_path):
    model = _ncf()
    model.predict = torch.jit.script(model.predict)
    with pytest.raises(NcfError, match=r"layer 'predict' is a scripted module.*torch.jit.trace"):
        _export(model, tmp_path)


def test_non_finite_weights_fail_naming_the_parameter(tmp_path):
    model = _ncf()
    with torch.no_grad():
        model.mlp[0].weight[0, 0] = float("nan")
    with pytest.raises(NcfError, match=r"parameter 'mlp.0.weight' holds 1 NaN/inf"):
        _export(model, tmp_path)


def test_untraceable_forward_is_one_clear_line(tmp_path):
    class NeedsThree(nn.Module):
        def forward(self, user, item, extra):
            return user.float()

    with pytest.raises(NcfError, match="torch.jit.trace of NeedsThree"):
        _export(NeedsThree(), tmp_path)


def _graph(op_type, name, opset=12):
    user = helper.make_tensor_value_info("user", TensorProto.INT64, ["n"])
    item = helper.make_tensor_value_info("item", TensorProto.INT64, ["n"])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])
    nodes = [helper.make_node("Cast", ["user"], ["u"], to=TensorProto.FLOAT, name="/Cast")]
    nodes.append(helper.make_node(op_type, ["u"], ["score"], name=name))
    graph = helper.make_graph(nodes, "g", [user, item], [score])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=7)


def test_check_onnx_names_unsafe_nodes_versions_and_contract():
    assert check_onnx(_graph("Relu", "/tower/Relu")) == ["Cast", "Relu"]
    with pytest.raises(NcfError, match=r"ONNX operator ReduceL2 in layer 'tower/norm'.*manual_normalize"):
        check_onnx(_graph("ReduceL2", "/tower/norm/ReduceL2"))
    with pytest.raises(NcfError, match=r"opset 13 > 12"):
        check_onnx(_graph("Relu", "/Relu", opset=13))
    newer = _graph("Relu", "/Relu")
    newer.ir_version = 8
    with pytest.raises(NcfError, match=r"IR version 8 > 7"):
        check_onnx(newer)
    renamed = _graph("Relu", "/Relu")
    renamed.graph.input[0].name = "users"
    with pytest.raises(NcfError, match="serving contract"):
        check_onnx(renamed)


def test_parity_failure_reports_the_max_abs_diff():
    pairs = [random_pairs(USERS, ITEMS, 10, 0)]

    def reference(u, i):
        return np.zeros(len(u), np.float32)

    def off(u, i):
        return np.full(len(u), 2e-3, np.float32)

    def nan(u, i):
        return np.full(len(u), np.nan, np.float32)

    with pytest.raises(NcfError, match=r"max abs 0.002 on 10 random pairs"):
        check_parity(reference, off, pairs, 1e-5, "thing")
    with pytest.raises(NcfError, match="max abs nan"):
        check_parity(reference, nan, pairs, 1e-5, "thing")
    assert check_parity(reference, reference, pairs, 1e-5, "thing") == (0.0, 10)
