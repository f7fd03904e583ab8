"""Runtime adapters in-process: static ONNX batch sizes, TorchScript, the load-time agreement check, settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import export_onnx, separated_ncf, tiny_interaction_data
from ncf_serving.bundle import BundleError
from ncf_serving.predictor import Predictor
from ncf_serving.settings import Settings, SettingsError, bundle_threads, process_plan

from ncfctl.models import NCFSpec
from ncfctl.serving.bundle import write_serving_bundle

torch.set_num_threads(1)
SPEC = NCFSpec(num_users=60, num_items=40, factors=4, mlp_user_dim=4, mlp_item_dim=4, hidden=[8, 4])


def reference(model, users, items) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.as_tensor(users), torch.as_tensor(items)).numpy()


def bundle(folder: Path, model, runtime: str, models: list[dict]) -> Path:
    write_serving_bundle(
        folder, model, tiny_interaction_data(), runtime=runtime, models=models, source_model="m", target="local"
    )
    return folder


def test_static_onnx_batches_are_padded_and_chunked(tmp_path):
    model = separated_ncf(SPEC)
    export_onnx(model, tmp_path / "b1.onnx", batch_size=1)
    export_onnx(model, tmp_path / "b8.onnx", batch_size=8)  # onnxruntime rejects any other batch size
    models = [{"batch_size": 8, "path": "b8.onnx"}, {"batch_size": 1, "path": "b1.onnx"}]
    predictor = Predictor.load(bundle(tmp_path, model, "onnxruntime", models), threads=1)
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 8, 9, 17, 40):
        users, items = rng.integers(0, 60, n), rng.integers(0, 40, n)
        np.testing.assert_allclose(predictor.score(users, items), reference(model, users, items), atol=1e-5)
    assert predictor.warm_up(rounds=2) < 1e-4


def test_torchscript_runtime(tmp_path):
    model = separated_ncf(SPEC)
    example = (torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    torch.jit.trace(model, example).save(str(tmp_path / "model.pth"))
    predictor = Predictor.load(bundle(tmp_path, model, "torchscript", [{"batch_size": None, "path": "model.pth"}]))
    users, items = np.arange(60), np.arange(60) % 40
    np.testing.assert_allclose(predictor.score(users, items), reference(model, users, items), atol=1e-5)
    predictor.warm_up(rounds=2)


def test_warm_up_refuses_a_fastpath_from_another_model(tmp_path):
    served, other = separated_ncf(SPEC, seed=1), separated_ncf(SPEC, seed=2)
    export_onnx(served, tmp_path / "model.onnx")
    predictor = Predictor.load(bundle(tmp_path, other, "onnxruntime", [{"batch_size": None, "path": "model.onnx"}]))
    with pytest.raises(BundleError, match="fastpath/ disagrees with the onnxruntime model"):
        predictor.warm_up()


def test_missing_or_corrupt_model_file_is_named(tmp_path):
    model = separated_ncf(SPEC)
    models = [{"batch_size": None, "path": "model.onnx"}]
    bundle(tmp_path, model, "onnxruntime", models)  # no model file was written: serving.json cannot cover it
    with pytest.raises(BundleError, match="'files' does not cover model.onnx"):
        Predictor.load(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"garbage")
    bundle(tmp_path, model, "onnxruntime", models)
    with pytest.raises(BundleError, match="model.onnx: onnxruntime cannot load it"):
        Predictor.load(tmp_path)
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx: is missing"):
        Predictor.load(tmp_path)


def test_settings_come_from_the_environment(tmp_path):
    env = {"SAGEMAKER_BIND_TO_PORT": "9000", "NCF_PORT": "7000", "SM_MODEL_DIR": str(tmp_path), "NCF_MAX_TOP_K": "50"}
    settings = Settings.from_env(env)
    assert (settings.port, settings.model_dir, settings.max_top_k, settings.max_batch) == (9000, tmp_path, 50, 10000)
    assert Settings.from_env({"NCF_PORT": "7000"}).port == 7000
    assert Settings.from_env({}).model_dir == Path("/opt/ml/model")
    with pytest.raises(SettingsError, match="NCF_MAX_BATCH='many' is not an integer"):
        Settings.from_env({"NCF_MAX_BATCH": "many"})
    with pytest.raises(SettingsError, match="NCF_GRACEFUL_SECONDS=60 must be between 0 and 25"):
        Settings.from_env({"NCF_GRACEFUL_SECONDS": "60"})
    assert bundle_threads(tmp_path) == 1
    (tmp_path / "serving.json").write_text('{"threads": 3}')
    assert bundle_threads(tmp_path) == 3


def test_one_worker_per_vcpu_and_threads_within_the_vcpus(tmp_path):
    (tmp_path / "serving.json").write_text('{"threads": 4}')  # what compile chose for a one-process server

    def plan(env: dict[str, str], cpus: int) -> tuple[int, int]:
        return process_plan(Settings.from_env({"NCF_MODEL_DIR": str(tmp_path), **env}), cpus)

    assert plan({}, 16) == (16, 1)  # SageMaker's convention: a worker per vCPU
    assert plan({"NCF_WORKERS": "2"}, 16) == (2, 4)  # the bundle's 4 threads fit in 16 // 2
    assert plan({"NCF_WORKERS": "4"}, 8) == (4, 2)  # capped: workers x threads <= vCPUs
    assert plan({"SAGEMAKER_MODEL_SERVER_WORKERS": "3"}, 16) == (3, 4)
    assert plan({"SAGEMAKER_MODEL_SERVER_WORKERS": "3", "NCF_WORKERS": "5"}, 16) == (5, 3)  # ours wins
    assert plan({"NCF_WORKERS": "32"}, 16) == (32, 1)
    assert plan({"NCF_THREADS": "8"}, 16) == (16, 8)  # an explicit choice is the operator's
    with pytest.raises(SettingsError, match="SAGEMAKER_MODEL_SERVER_WORKERS='auto' is not an integer"):
        Settings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "auto"})
    with pytest.raises(SettingsError, match="NCF_WORKERS=-1 must be between 0 and 1024"):
        Settings.from_env({"NCF_WORKERS": "-1"})


def test_serve_rejects_bad_settings_with_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "ncf_serving", "serve"],
        env={"PATH": "/usr/bin:/bin", "NCF_MAX_TOP_K": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "NCF_MAX_TOP_K=0 must be between 1" in proc.stderr
