"""`ncfctl neo compile --backend local` (ONNX Runtime), `neo status`, targets and the one-line errors."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import commit_model_artifact, tiny_interaction_data
from ncf_serving.bundle import load_bundle

from ncfctl.compile.service import choose_backend, compile_model, neo_status
from ncfctl.config import load_config
from ncfctl.errors import NcfError
from ncfctl.models import MODEL_FILE, NCF, NCFSpec, load_model
from ncfctl.targets import default_threads, instance_vcpus, resolve_target
from ncfctl.workspace import Workspace


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    torch.set_num_threads(1)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _config(workdir, **overrides):
    return load_config(overrides={"workdir": str(workdir), **overrides})


def test_local_compile_writes_a_serving_bundle_that_matches_pytorch(workdir, model_artifact):
    artifact = compile_model(_config(workdir, **{"compile.backend": "local"}), Workspace(workdir))
    assert artifact.kind == "compiled" and artifact.path.parent.name == "neo"
    assert artifact.manifest.parent == model_artifact.id

    bundle = load_bundle(artifact.path)  # the container's own reader accepts it
    assert bundle.spec.runtime == "onnxruntime" and bundle.spec.target == "ml_c5"
    assert [m.model_dump() for m in bundle.spec.models] == [{"batch_size": None, "path": "model.onnx"}]
    assert bundle.spec.source_model == model_artifact.id and bundle.spec.threads == 1

    model = load_model(model_artifact.path / MODEL_FILE)
    session = ort.InferenceSession(str(artifact.path / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(123)
    for n in (1, 7, 500):
        users, items = rng.integers(0, 60, n), rng.integers(0, 40, n)
        got = session.run(["score"], {"user": users, "item": items})[0]
        with torch.no_grad():
            expected = model(torch.from_numpy(users), torch.from_numpy(items)).numpy()
        assert got.shape == (n,) and np.max(np.abs(got - expected)) <= 1e-5

    info, metrics = artifact.manifest.info, artifact.manifest.metrics
    assert info.backend == "local" and info.runtime == "onnxruntime" and info.stage == "trained"
    assert "FusedGemm" in info.operators  # the optimised graph ships, not the raw export
    assert metrics["max_abs_diff"] <= 1e-5 and metrics["parity_pairs"] == 1025
    for query in ("pair", "all_items"):
        assert metrics[f"{query}_p50_ms_torch"] > 0 and metrics[f"{query}_p50_ms_onnxruntime"] > 0
    arrays = {"fastpath/gmf_item.npy", "seen_items/indptr.npy", "ids/user_ids.npy", "ids/user_order.npy"}
    assert set(artifact.manifest.files) >= {"model.onnx", "model.onnx.data", "serving.json", *arrays}
    # the weights sit outside the graph, where ONNX Runtime memory-maps them (shared by the server's workers)
    assert (artifact.path / "model.onnx.data").stat().st_size > (artifact.path / "model.onnx").stat().st_size


def test_compile_picks_the_model_and_threads_asked_for(workdir, model_artifact):
    torch.manual_seed(1)
    other = NCF(NCFSpec.from_layers(model_type="gmf", num_users=60, num_items=40, factors=4, layers=[8, 4]))
    newer = commit_model_artifact(workdir, other, tiny_interaction_data(), stage="pruned")
    config = _config(workdir, **{"compile.backend": "local", "compile.threads": 2, "compile.target": "ml_c6g"})
    artifact = compile_model(config, Workspace(workdir), model_artifact.id)
    assert artifact.manifest.parent == model_artifact.id and artifact.manifest.info.threads == 2
    assert json.loads((artifact.path / "serving.json").read_text())["target"] == "ml_c6g"
    latest = compile_model(_config(workdir, **{"compile.backend": "local"}), Workspace(workdir))
    assert latest.manifest.parent == newer.id and latest.manifest.info.model_type == "gmf"


def test_cli_compile_and_status(run_cli, workdir, model_artifact):
    wide = {"COLUMNS": "200"}
    human = run_cli("neo", "compile", env=wide)  # auto without credentials -> local, and says so
    assert "backend: local (auto: no AWS credentials and no aws.bucket" in human.stdout
    assert "speed vs PyTorch eager" in human.stdout and "onnxruntime bundle for ml_c5" in human.stdout

    (compiled,) = Workspace(workdir).list("compiled")
    table = run_cli("neo", "status", env=wide).stdout
    assert compiled.id in table and "workspace (local)" in table and "COMPLETED" in table
    assert "SageMaker jobs not listed" in table
    one = neo_status(_config(workdir), Workspace(workdir), compiled.id)
    assert one["model"] == model_artifact.id and one["info"]["batch_sizes"] == [None]
    assert one["metrics"]["max_abs_diff"] <= 1e-5 and one["path"] == str(compiled.path)
    shown = json.loads(run_cli("neo", "status", compiled.id, "--json").stdout)
    assert list(shown.items())[:3] == [("id", compiled.id), ("kind", "compiled"), ("path", str(compiled.path))]

    targets = json.loads(run_cli("neo", "targets", "--json").stdout)["targets"]
    assert {"target": "ml_c5", "threads": 1, "backends": "local, sagemaker"}.items() <= targets[0].items()
    assert {"target": "ml_g4dn", "backends": "sagemaker"}.items() <= next(
        t for t in targets if t["target"] == "ml_g4dn"
    ).items()


def _one_line_error(proc):
    """Exit 2, no traceback, and exactly one ``Error:`` line (a progress bar may have drawn above it)."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and proc.stderr.rstrip().endswith(errors[0]), proc.stderr
    return errors[0]


def test_cli_errors_are_one_line(run_cli, workdir, model_artifact):
    wide = {"COLUMNS": "400"}
    line = _one_line_error(run_cli("neo", "compile", "--target", "ml_x99", check=False, env=wide))
    assert "unknown target 'ml_x99'" in line and "ml_c5" in line

    broken = load_model(model_artifact.path / MODEL_FILE)
    with torch.no_grad():
        broken.predict.weight[0, 3] = float("inf")
    bad = commit_model_artifact(workdir, broken, tiny_interaction_data())
    line = _one_line_error(run_cli("neo", "compile", "--model", bad.id, "--backend", "local", check=False, env=wide))
    assert "fails the Neo preflight" in line and "parameter 'predict.weight'" in line
    assert not any(a.manifest.parent == bad.id for a in Workspace(workdir).list("compiled"))  # nothing committed


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"compile.target": "ml_inf1"}, "ml_inf1' is a Neo device ncfctl does not build"),
        ({"compile.target_platform": "linux,sparc"}, "unknown arch 'SPARC'"),
        ({"compile.backend": "local", "compile.target": "ml_g4dn"}, "builds for CPUs only"),
        ({"compile.backend": "local", "compile.framework": "pytorch"}, "the local backend compiles ONNX"),
        ({"compile.backend": "local", "compile.opset": 13}, "compile.opset"),
        ({"compile.backend": "sagemaker"}, "a SageMaker Neo compilation needs AWS credentials"),
    ],
)
def test_compile_errors_name_the_value(workdir, model_artifact, overrides, message):
    with pytest.raises(NcfError, match=message):
        compile_model(_config(workdir, **overrides), Workspace(workdir))
    assert Workspace(workdir).list("compiled") == []


def test_status_of_an_unknown_job_without_credentials(workdir):
    with pytest.raises(NcfError, match="neo status no-such-job needs AWS credentials"):
        neo_status(_config(workdir), Workspace(workdir), "no-such-job")


def test_backend_auto_needs_credentials_and_bucket(workdir, monkeypatch):
    assert choose_backend(_config(workdir)).name == "local"
    assert choose_backend(_config(workdir, **{"aws.bucket": "b"})).reason.startswith("auto: no AWS credentials")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    assert choose_backend(_config(workdir)).reason == "auto: no aws.bucket, so ONNX Runtime on this machine"
    assert choose_backend(_config(workdir, **{"aws.bucket": "b"})).name == "sagemaker"
    assert choose_backend(_config(workdir, **{"aws.bucket": "b", "compile.backend": "local"})).name == "local"
    assert neo_status(_config(workdir, **{"compile.backend": "local"}), Workspace(workdir)) == {
        "jobs": [],
        "sagemaker": False,
    }


def test_targets_and_threads():
    c5 = resolve_target("ML_C5")
    assert c5.output_config() == {"TargetDevice": "ml_c5"} and c5.local_ok
    assert instance_vcpus(c5, "ml.c5.4xlarge") == 16 and instance_vcpus(c5, "ml.c5.xlarge") == 4
    assert instance_vcpus(c5, "ml.m5.4xlarge") == 2  # another family: the target's own smallest size
    assert default_threads(c5, "ml.c5.large") == 1 and default_threads(c5, "ml.c5.2xlarge") == 4
    assert default_threads(resolve_target("ml_c6g"), "ml.c6g.xlarge") == 4  # Graviton vCPUs are cores
    arm = resolve_target("ml_c5", "linux,arm64")
    assert arm.name == "linux_arm64" and arm.local_ok and default_threads(arm, "ml.c5.large") == 1
    assert arm.output_config() == {"TargetPlatform": {"Os": "LINUX", "Arch": "ARM64"}}
    gpu = resolve_target(None, "linux,x86_64,nvidia")
    assert not gpu.local_ok and gpu.output_config()["TargetPlatform"]["Accelerator"] == "NVIDIA"
    with pytest.raises(NcfError, match="expected os,arch"):
        resolve_target(None, "linux")
