"""`neo compile --backend sagemaker` and `neo status` end to end against moto's server (real boto3 over HTTP).

moto records every CreateCompilationJob field but reports jobs COMPLETED at once and writes no
output. :class:`FakeNeo` gives its server a job lifecycle instead: the first DescribeCompilationJob
answers INPROGRESS, the next one the outcome; on COMPLETED it writes the archive Neo would write,
``<input name>-<target>.tar.gz`` under the job's S3OutputLocation, through moto's own S3 backend.
moto's server runs in this test process, so this holds for the CLI (in-process or a subprocess) too.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import boto3
import onnx
import pytest
import torch
from moto.s3.models import s3_backends
from moto.sagemaker.models import CompilationJob
from ncf_serving.bundle import load_bundle

from ncfctl.cli.errors import cli_message
from ncfctl.compile.service import compile_model, neo_status
from ncfctl.config import load_config
from ncfctl.errors import NcfError
from ncfctl.workspace import Workspace

ITEMS = 40  # the model_artifact fixture's catalogue
NEO_FILES = {"compiled.so": b"\x7fELF", "compiled.params": b"params", "compiled_model.json": b"{}"}


def neo_archive(files: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


class FakeNeo:
    """Drives moto's compilation jobs through INPROGRESS to an outcome and writes Neo's output."""

    def __init__(self, monkeypatch, outcome="COMPLETED", reason="", archive: bytes | None = None):
        self.describes: Counter[str] = Counter()
        original = CompilationJob.describe
        fake = self

        def describe(job):
            name = job.compilation_job_name
            fake.describes[name] += 1
            if fake.describes[name] == 1:
                job.compilation_job_status = "INPROGRESS"
            elif job.compilation_job_status == "INPROGRESS":
                job.compilation_job_status = outcome
                job.failure_reason = reason
                if outcome == "COMPLETED":
                    fake.write_output(job, archive or neo_archive(NEO_FILES))
            return original(job)

        monkeypatch.setattr(CompilationJob, "describe", describe)

    @staticmethod
    def write_output(job, data: bytes) -> None:
        account = job.arn.split(":")[4]
        bucket, _, prefix = job.output_config["S3OutputLocation"][5:].partition("/")
        input_name = job.input_config["S3Uri"].rsplit("/", 1)[1].removesuffix(".tar.gz")
        key = f"{prefix.rstrip('/')}/{input_name}-{job.output_config.get('TargetDevice', 'platform')}.tar.gz"
        s3_backends[account]["aws"].put_object(bucket, key, data)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def sagemaker(aws_env):
    return boto3.client("sagemaker", endpoint_url=aws_env["NCFCTL_AWS__ENDPOINT_URL"], region_name="us-east-1")


@pytest.fixture
def s3(aws_env):
    return boto3.client("s3", endpoint_url=aws_env["NCFCTL_AWS__ENDPOINT_URL"], region_name="us-east-1")


def _config(workdir, **overrides):
    return load_config(overrides={"workdir": str(workdir), "compile.backend": "sagemaker", **overrides})


def test_onnx_compile_end_to_end(aws_env, workdir, model_artifact, monkeypatch, sagemaker, s3):
    neo = FakeNeo(monkeypatch)
    artifact = compile_model(load_config(overrides={"workdir": str(workdir)}), Workspace(workdir))  # auto
    info = artifact.manifest.info
    assert info.backend == "sagemaker" and info.backend_reason.startswith("auto: AWS credentials")
    jobs = info.jobs
    assert [j.rsplit("-", 1)[1] for j in jobs] == ["b1", f"b{ITEMS}"]
    assert all(count >= 2 for count in neo.describes.values()) and set(neo.describes) == set(jobs)  # polled

    for job, batch in zip(jobs, (1, ITEMS), strict=True):
        recorded = sagemaker.describe_compilation_job(CompilationJobName=job)
        assert recorded["CompilationJobStatus"] == "COMPLETED"
        assert recorded["RoleArn"] == aws_env["NCFCTL_AWS__ROLE_ARN"]
        assert recorded["InputConfig"]["Framework"] == "ONNX" and "FrameworkVersion" not in recorded["InputConfig"]
        assert json.loads(recorded["InputConfig"]["DataInputConfig"]) == {"user": [batch], "item": [batch]}
        assert recorded["InputConfig"]["S3Uri"] == f"s3://ncfctl-test/ncfctl/neo/{job}/model.tar.gz"
        assert recorded["OutputConfig"]["TargetDevice"] == "ml_c5"
        assert recorded["OutputConfig"]["S3OutputLocation"] == f"s3://ncfctl-test/ncfctl/neo/{job}/output"
        assert "CompilerOptions" not in recorded["OutputConfig"]  # ONNX carries its int64 dtypes
        assert recorded["StoppingCondition"] == {"MaxRuntimeInSeconds": 900}

        uploaded = s3.get_object(Bucket="ncfctl-test", Key=f"ncfctl/neo/{job}/model.tar.gz")["Body"].read()
        with tarfile.open(fileobj=io.BytesIO(uploaded)) as tar:
            assert tar.getnames() == ["model.onnx"]  # Neo's layout: the model at the archive root
            proto = onnx.load_from_string(tar.extractfile("model.onnx").read())
        assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [batch]
        assert {o.version for o in proto.opset_import} == {12}

        folder = artifact.path / f"b{batch}"
        assert {p.name for p in folder.iterdir()} == set(NEO_FILES)
        assert (folder / "compiled.params").read_bytes() == b"params"

    bundle = load_bundle(artifact.path)
    assert bundle.spec.runtime == "dlr" and bundle.spec.target == "ml_c5"
    assert [(m.batch_size, m.path) for m in bundle.spec.models] == [(1, "b1"), (ITEMS, f"b{ITEMS}")]
    assert info.outputs[1] == f"s3://ncfctl-test/ncfctl/neo/{jobs[1]}/output/model-ml_c5.tar.gz"
    assert artifact.manifest.metrics["preflight_max_abs_diff"] <= 1e-5

    listing = neo_status(load_config(), Workspace(workdir))
    assert {r["name"] for r in listing["jobs"] if r["where"] == "sagemaker"} == set(jobs)
    assert [r["name"] for r in listing["jobs"] if r["where"].startswith("workspace")] == [artifact.id]
    detail = neo_status(load_config(), Workspace(workdir), jobs[0])
    assert detail["status"] == "COMPLETED" and detail["target"] == "ml_c5" and detail["framework"] == "ONNX"
    assert detail["input"].endswith(f"{jobs[0]}/model.tar.gz") and detail["seconds"] is not None


def test_pytorch_compile_sends_framework_version_dtype_and_platform(aws_env, workdir, model_artifact, monkeypatch):
    FakeNeo(monkeypatch)
    config = _config(
        workdir,
        **{"compile.framework": "pytorch", "compile.target_platform": "linux,arm64", "compile.batch_size": 16},
    )
    artifact = compile_model(config, Workspace(workdir))
    client = boto3.client("sagemaker", endpoint_url=aws_env["NCFCTL_AWS__ENDPOINT_URL"], region_name="us-east-1")
    for job, batch in zip(artifact.manifest.info.jobs, (1, 16), strict=True):
        recorded = client.describe_compilation_job(CompilationJobName=job)
        assert recorded["InputConfig"]["Framework"] == "PYTORCH"
        assert recorded["InputConfig"]["FrameworkVersion"] == "2.0"
        assert json.loads(recorded["InputConfig"]["DataInputConfig"]) == [[batch], [batch]]
        assert json.loads(recorded["OutputConfig"]["CompilerOptions"]) == {"dtype": "int64"}
        assert recorded["OutputConfig"]["TargetPlatform"] == {"Os": "LINUX", "Arch": "ARM64"}
        assert "TargetDevice" not in recorded["OutputConfig"]
    s3 = boto3.client("s3", endpoint_url=aws_env["NCFCTL_AWS__ENDPOINT_URL"], region_name="us-east-1")
    key = f"ncfctl/neo/{artifact.manifest.info.jobs[0]}/model.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(s3.get_object(Bucket="ncfctl-test", Key=key)["Body"].read())) as tar:
        module = torch.jit.load(io.BytesIO(tar.extractfile("model.pth").read()))
    users, items = torch.arange(5), torch.arange(5)
    assert module(users, items).shape == (5,)
    assert artifact.manifest.info.target == "linux_arm64"
    assert artifact.manifest.info.servable is False  # DLR for arm64: the amd64 image cannot run it (D4)
    assert neo_status(config, Workspace(workdir), artifact.manifest.info.jobs[1])["target"] == "linux_arm64"
    assert [m["batch_size"] for m in json.loads((artifact.path / "serving.json").read_text())["models"]] == [1, 16]


def test_failed_job_surfaces_the_reason_verbatim_with_hints(aws_env, workdir, model_artifact, monkeypatch):
    reason = "ClientError: InputConfiguration: Unable to load the model: unsupported operator 'Squeeze' (opset 12)"
    FakeNeo(monkeypatch, outcome="FAILED", reason=reason)
    with pytest.raises(NcfError) as err:
        compile_model(_config(workdir), Workspace(workdir))
    message = str(err.value)
    assert f"FAILED: {reason}" in message
    assert "the local preflight passed (operators Gather" in message and "compile.framework pytorch" in message
    assert "retry with --framework pytorch" in cli_message(err.value)
    assert Workspace(workdir).list("compiled") == []
    assert not list((workdir / ".staging").iterdir())

    jobs = neo_status(load_config(), Workspace(workdir))["jobs"]
    failed = [r for r in jobs if r["status"] == "FAILED"]
    assert len(failed) == 2
    detail = neo_status(load_config(), Workspace(workdir), failed[0]["name"], wait=True)
    assert detail["failure_reason"] == reason


def test_malicious_output_is_refused(aws_env, workdir, model_artifact, monkeypatch, tmp_path):
    FakeNeo(monkeypatch, archive=neo_archive({**NEO_FILES, "../../escaped.txt": b"pwned"}))
    with pytest.raises(NcfError, match=r"refusing to extract .*'\.\./\.\./escaped\.txt': path contains '\.\.'"):
        compile_model(_config(workdir), Workspace(workdir))
    assert not list(tmp_path.rglob("escaped.txt")) and Workspace(workdir).list("compiled") == []


def test_output_with_a_link_is_refused(aws_env, workdir, model_artifact, monkeypatch):
    FakeNeo(monkeypatch, archive=neo_archive(NEO_FILES, links={"libdlr.so": "../../../../etc/passwd"}))
    with pytest.raises(NcfError, match="member 'libdlr.so': symlink to '../../../../etc/passwd'"):
        compile_model(_config(workdir), Workspace(workdir))
    assert Workspace(workdir).list("compiled") == []


def test_output_without_a_compiled_library_is_an_error(aws_env, workdir, model_artifact, monkeypatch):
    FakeNeo(monkeypatch, archive=neo_archive({"README": b"nothing compiled"}))
    with pytest.raises(NcfError, match=r"holds no compiled library \(\.so\): README"):
        compile_model(_config(workdir), Workspace(workdir))


def test_status_wait_polls_until_terminal(aws_env, workdir, monkeypatch, sagemaker):
    neo = FakeNeo(monkeypatch)
    sagemaker.create_compilation_job(
        CompilationJobName="ncfctl-manual-b1",
        RoleArn=aws_env["NCFCTL_AWS__ROLE_ARN"],
        InputConfig={"S3Uri": "s3://ncfctl-test/in/model.tar.gz", "DataInputConfig": "{}", "Framework": "ONNX"},
        OutputConfig={"S3OutputLocation": "s3://ncfctl-test/out", "TargetDevice": "ml_m5"},
        StoppingCondition={"MaxRuntimeInSeconds": 900},
    )
    detail = neo_status(load_config(), Workspace(workdir), "ncfctl-manual-b1", wait=True)
    assert detail["status"] == "COMPLETED" and neo.describes["ncfctl-manual-b1"] >= 3  # INPROGRESS, COMPLETED, final
    assert detail["output"] == "s3://ncfctl-test/out" and detail["target"] == "ml_m5"


def test_cli_sagemaker_compile_and_errors(aws_env, run_cli, model_artifact, monkeypatch):
    FakeNeo(monkeypatch)
    payload = json.loads(run_cli("neo", "compile", "--backend", "sagemaker", "--batch-size", "8", "--json").stdout)
    assert payload["backend"] == "sagemaker" and payload["runtime"] == "dlr" and payload["batch_sizes"] == [1, 8]
    assert len(payload["jobs"]) == 2

    missing = run_cli(
        "neo", "compile", "--backend", "sagemaker", env={"NCFCTL_AWS__BUCKET": "no-such-bucket"}, check=False
    )
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines()[-1] == (
        "Error: S3 bucket 'no-such-bucket' does not exist (config key aws.bucket)"
    )


def test_status_of_an_unknown_job(aws_env, workdir):
    with pytest.raises(NcfError, match="no SageMaker compilation job 'ncfctl-nope-b1' in us-east-1"):
        neo_status(load_config(), Workspace(workdir), "ncfctl-nope-b1")


def test_upload_reports_progress(aws_env, workdir, model_artifact, monkeypatch):
    from rich.console import Console
    from rich.progress import Progress, TextColumn

    from ncfctl.cli.progress import RichProgress

    FakeNeo(monkeypatch)
    console = Console(file=io.StringIO(), width=200)
    with Progress(TextColumn("{task.description} {task.fields[status]}"), console=console) as progress:
        compile_model(_config(workdir), Workspace(workdir), progress=RichProgress(progress))
    descriptions = [t.description for t in progress.tasks]
    assert descriptions.count("upload model.tar.gz") == 2 and descriptions.count("download model-ml_c5.tar.gz") == 2
    neo_tasks = [t for t in progress.tasks if t.description.startswith("neo ")]
    assert len(neo_tasks) == 2 and all(t.fields["status"].startswith("COMPLETED") for t in neo_tasks)
    assert all(t.finished for t in progress.tasks)  # byte counts reached the sizes; job lines closed
    assert "COMPLETED" in console.file.getvalue()


def test_nvidia_platform_needs_compiler_options(aws_env, workdir, model_artifact, monkeypatch, s3, sagemaker):
    """D3: Neo requires gpu-code / trt-ver / cuda-ver for NVIDIA platforms; without them nothing is uploaded."""
    FakeNeo(monkeypatch)
    platform = {"compile.target_platform": "linux,x86_64,nvidia"}
    with pytest.raises(NcfError, match="Neo needs compile.compiler_options gpu-code, trt-ver, cuda-ver for NVIDIA"):
        compile_model(_config(workdir, **platform), Workspace(workdir))
    assert s3.list_objects_v2(Bucket="ncfctl-test").get("KeyCount", 0) == 0

    options = {"gpu-code": "sm_75", "trt-ver": "8.6.1", "cuda-ver": "11.8"}
    artifact = compile_model(_config(workdir, **platform, **{"compile.compiler_options": options}), Workspace(workdir))
    recorded = sagemaker.describe_compilation_job(CompilationJobName=artifact.manifest.info.jobs[0])
    assert json.loads(recorded["OutputConfig"]["CompilerOptions"]) == options
    assert recorded["OutputConfig"]["TargetPlatform"] == {"Os": "LINUX", "Arch": "X86_64", "Accelerator": "NVIDIA"}
    assert artifact.manifest.info.servable is False


def test_ctrl_c_stops_the_compilation_jobs(aws_env, workdir, model_artifact, monkeypatch, moto_gaps):
    """D9: an interrupted wait stops every job it started. moto has no StopCompilationJob (``moto_gaps``
    records it) and finishes jobs at once, so they are held INPROGRESS and the first poll sleep is the Ctrl-C."""
    from ncfctl.compile import sagemaker_neo

    def in_progress(job):
        job.compilation_job_status = "INPROGRESS"
        return original(job)

    original = CompilationJob.describe
    monkeypatch.setattr(CompilationJob, "describe", in_progress)

    def ctrl_c(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(sagemaker_neo.time, "sleep", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        compile_model(_config(workdir), Workspace(workdir))
    stopped = [call["CompilationJobName"] for call in moto_gaps.calls["StopCompilationJob"]]
    assert len(stopped) == 2 and all(name.startswith("ncfctl-") for name in stopped)
    assert Workspace(workdir).list("compiled") == []
