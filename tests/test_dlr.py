"""The DLR runtime adapter on real libdlr (dlr==1.6.0) with a model DLR can load.

No TVM that emits DLR's format installs here, so the test writes the tiny NeuMF's forward pass as
C, compiles it with gcc into a shared object with the Treelite predictor ABI that libdlr 1.6's
Treelite backend loads (``get_num_output_group``, ``get_num_feature``, ``float predict(union
Entry*, int)``), and lays it out like a Neo output folder, libdlr.so included. The server then
loads it through ``DLRModel`` exactly as it would a Neo-compiled model; only the input convention
differs (one float feature matrix ``[user, item]`` instead of named int64 inputs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from conftest import separated_ncf, tiny_interaction_data
from ncf_serving.dlr_phone_home import dlr_config_path, phone_home_disabled

from ncfctl.models import NCF, NCFSpec
from ncfctl.serving.bundle import write_serving_bundle

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the Treelite-ABI model")
STATIC_BATCHES = (1, 16)


def c_array(name: str, tensor: torch.Tensor) -> str:
    values = ",".join(f"{v:.9g}f" for v in tensor.detach().reshape(-1).tolist())
    return f"static const float {name}[{tensor.numel()}] = {{{values}}};"


def ncf_as_c(model: NCF) -> str:
    """The model's forward for one (user, item) pair as C, from its original (unfolded) weights."""
    spec = model.spec
    f, du, di = spec.factors, spec.mlp_user_dim, spec.mlp_item_dim
    arrays = [c_array("GU", model.gmf_user.weight), c_array("GI", model.gmf_item.weight)]
    arrays += [c_array("MU", model.mlp_user.weight), c_array("MI", model.mlp_item.weight)]
    layers = model.linear_layers()
    for n, layer in enumerate(layers):
        arrays += [c_array(f"W{n}", layer.weight), c_array(f"B{n}", layer.bias)]
    arrays += [c_array("PW", model.predict.weight), c_array("PB", model.predict.bias)]
    body = [
        # libdlr passes 0.0 features as "missing" (Treelite's sparse input): index 0
        "  int u = data[0].missing == -1 ? 0 : (int)data[0].fvalue;",
        "  int i = data[1].missing == -1 ? 0 : (int)data[1].fvalue;",
        "  float a[64], b[64], out = PB[0];",
        f"  for (int k = 0; k < {f}; ++k) out += PW[k] * GU[u * {f} + k] * GI[i * {f} + k];",
        f"  for (int k = 0; k < {du}; ++k) a[k] = MU[u * {du} + k];",
        f"  for (int k = 0; k < {di}; ++k) a[{du} + k] = MI[i * {di} + k];",
    ]
    width = spec.mlp_user_dim + spec.mlp_item_dim
    for n, layer in enumerate(layers):
        out_width = layer.out_features
        body += [
            f"  for (int o = 0; o < {out_width}; ++o) {{",
            f"    float s = B{n}[o];",
            f"    for (int k = 0; k < {width}; ++k) s += W{n}[o * {width} + k] * a[k];",
            "    b[o] = s > 0.f ? s : 0.f;",
            "  }",
            f"  for (int o = 0; o < {out_width}; ++o) a[o] = b[o];",
        ]
        width = out_width
    body += [f"  for (int k = 0; k < {width}; ++k) out += PW[{spec.factors} + k] * a[k];", "  return out;"]
    return "\n".join(
        [
            "#include <stddef.h>",
            "union Entry { int missing; float fvalue; int qvalue; };",
            *arrays,
            "size_t get_num_output_group(void) { return 1; }",
            "size_t get_num_feature(void) { return 2; }",
            "float predict(union Entry* data, int pred_margin) {",
            "  (void)pred_margin;",
            *body,
            "}",
        ]
    )


def libdlr_path() -> Path:
    """The libdlr.so that the dlr wheel installs (found without importing dlr)."""
    found = Path(sys.prefix) / "dlr" / "libdlr.so"
    assert found.is_file(), f"dlr==1.6.0 ships libdlr.so at {found}"
    return found


@pytest.fixture(scope="module")
def dlr_bundle(tmp_path_factory):
    """(folder, model, data): one Neo-style DLR folder per static batch size, plus the bundle files."""
    data = tiny_interaction_data()
    spec = NCFSpec(num_users=60, num_items=40, factors=8, mlp_user_dim=8, mlp_item_dim=8, hidden=[16, 8])
    model = separated_ncf(spec)
    folder = tmp_path_factory.mktemp("dlr-bundle")
    source = folder / "ncf.c"
    source.write_text(ncf_as_c(model))
    shared = folder / "ncf.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(shared), str(source)], check=True)
    models = []
    for size in STATIC_BATCHES:
        neo = folder / f"b{size}"
        neo.mkdir()
        shutil.copy(shared, neo / "compiled.so")
        shutil.copy(libdlr_path(), neo / "libdlr.so")
        models.append({"batch_size": size, "path": neo.name})
    source.unlink()
    shared.unlink()
    write_serving_bundle(folder, model, data, runtime="dlr", models=models, source_model="m-dlr", target="ml_c5")
    return folder, model, data


def reference(model, users, items) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.as_tensor(users), torch.as_tensor(items)).numpy()


def test_dlr_adapter_pads_and_chunks_static_batches(dlr_bundle):
    from ncf_serving.predictor import Predictor

    folder, model, _ = dlr_bundle
    predictor = Predictor.load(folder, threads=1)
    assert phone_home_disabled(dlr_config_path())
    import dlr.counter.phone_home as phone_home  # already imported by the adapter, with reporting off

    assert phone_home.MGR is None
    rng = np.random.default_rng(3)
    for n in (1, 5, 16, 17, 40):
        users, items = rng.integers(0, 60, n), rng.integers(0, 40, n)
        np.testing.assert_allclose(predictor.score(users, items), reference(model, users, items), rtol=1e-5, atol=1e-5)
    assert predictor.warm_up(rounds=3) < 1e-4


def test_server_on_dlr_answers_like_the_model(dlr_bundle, serving_process):
    folder, model, data = dlr_bundle
    server = serving_process(folder)
    pair = httpx.post(f"{server.url}/invocations", json={"user_id": "u4", "item_id": "i9"}).json()
    assert pair["score"] == pytest.approx(float(reference(model, [4], [9])[0]), abs=1e-5)
    instances = [{"user_id": f"u{u}", "item_id": f"i{(u * 7) % 40}"} for u in range(23)]
    scores = httpx.post(f"{server.url}/invocations", json={"instances": instances}).json()["scores"]
    np.testing.assert_allclose(scores, reference(model, np.arange(23), (np.arange(23) * 7) % 40), atol=1e-5)
    top = httpx.post(f"{server.url}/invocations", json={"user_id": "u4", "top_k": 5, "exclude_seen": False}).json()
    expected = np.argsort(-reference(model, np.full(40, 4), np.arange(40)), kind="stable")[:5]
    assert [entry["item_id"] for entry in top["items"]] == [f"i{i}" for i in expected]
    log = server.log()
    ready = next(json.loads(line) for line in log.splitlines() if '"model ready"' in line)
    assert ready["runtime"] == "dlr"
    assert "Found libdlr.so in model artifact" in log  # the Neo folder's own libdlr.so was used
    assert "CALL HOME FEATURE ENABLED" not in log
