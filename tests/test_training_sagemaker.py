"""``ncfctl train --backend sagemaker`` end to end against moto's server.

moto records the job and reports it Completed at once but runs nothing, so the test plays the
SageMaker container between ``CreateTrainingJob`` and the download: it reads the job back from
moto, fetches the uploaded source and channels from S3, runs the packaged entry script (from
the tarball, not the working tree) with the ``SM_*`` environment, and uploads ``model.tar.gz`` to
``<S3OutputPath>/<job name>/output/model.tar.gz`` where SageMaker would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import boto3
import pytest
from conftest import tiny_interaction_data

from ncfctl.aws.sdk import training_image_uri
from ncfctl.config import load_config
from ncfctl.errors import NcfError
from ncfctl.models import load_model
from ncfctl.training import sagemaker_job
from ncfctl.training.entry import distributed_env, metric_line
from ncfctl.training.service import train_model
from ncfctl.workspace import Workspace

SMALL = {
    "train.backend": "sagemaker",
    "train.epochs": 2,
    "train.batch_size": 256,
    "train.lr": 0.01,
    "model.factors": 8,
    "model.layers": [16, 8],
}


def add_dataset(workspace: Workspace):
    data = tiny_interaction_data(users=120, items=60, per_user=12)
    info = {"dataset": "tiny", "num_users": 120, "num_items": 60, "explicit": False, "split": "leave-one-out"}
    with workspace.create("dataset", info=info) as writer:
        data.save(writer.path)
    return writer.artifact


def play_container(endpoint: str, name: str, root: Path) -> str:
    """Do what SageMaker's PyTorch container does for job ``name``; returns the job's stdout."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    described = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1").describe_training_job(
        TrainingJobName=name
    )
    hyper = {key: json.loads(value) for key, value in described["HyperParameters"].items()}

    def fetch(uri: str, dest: Path) -> None:
        bucket, _, key = uri[5:].partition("/")
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]:
            target = dest / Path(obj["Key"]).relative_to(key) if not key.endswith(".gz") else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))

    code = root / "code"
    fetch(hyper["sagemaker_submit_directory"], root / "sourcedir.tar.gz")
    with tarfile.open(root / "sourcedir.tar.gz") as tar:
        tar.extractall(code, filter="data")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(code), "SM_MODEL_DIR": str(root / "model")}
    env |= {"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1", "NCFCTL_CHECKPOINT_DIR": str(root / "ckpt")}
    for channel in described["InputDataConfig"]:
        folder = root / "input" / channel["ChannelName"]
        fetch(channel["DataSource"]["S3DataSource"]["S3Uri"], folder)
        env[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = str(folder)
    (root / "model").mkdir()
    (root / "ckpt").mkdir()
    args = [arg for key, value in hyper.items() if not key.startswith("sagemaker_") for arg in (f"--{key}", str(value))]
    proc = subprocess.run(
        [sys.executable, hyper["sagemaker_program"], *args], cwd=code, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    archive = root / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in (root / "model").iterdir():
            tar.add(path, arcname=path.name)
    output = described["OutputDataConfig"]["S3OutputPath"]
    bucket, _, prefix = output[5:].partition("/")
    s3.upload_file(str(archive), bucket, f"{prefix}/{name}/output/model.tar.gz")
    return proc.stdout


@pytest.mark.slow
def test_sagemaker_training_end_to_end(aws_env, workdir, tmp_path, monkeypatch):
    workspace = Workspace(workdir)
    dataset = add_dataset(workspace)
    logs = {}
    real_wait = sagemaker_job.wait_for_job

    def container_then_wait(aws, name, progress=None):
        logs["stdout"] = play_container(aws_env["NCFCTL_AWS__ENDPOINT_URL"], name, tmp_path / "container")
        from moto.sagemaker.models import sagemaker_backends  # what SageMaker reports once a job ends

        job = sagemaker_backends["123456789012"]["us-east-1"].training_jobs[name]
        job.billable_time_in_seconds, job.training_time_in_seconds = 41, 57
        return real_wait(aws, name, progress)

    monkeypatch.setattr(sagemaker_job, "wait_for_job", container_then_wait)
    config = load_config(overrides=SMALL)
    artifact = train_model(config, workspace)

    info, metrics = artifact.manifest.info, artifact.manifest.metrics
    assert info.backend == "sagemaker" and info.dataset == dataset.id
    assert info.model_data.endswith(f"/{info.sagemaker_job}/output/model.tar.gz")
    assert (info.billable_seconds, info.training_seconds, info.spot) == (41, 57, False)  # D9
    assert [record["epoch"] for record in info.history] == [1, 2]
    assert metrics["hr"] > info.baseline["hr"]
    model = load_model(artifact.path / "model.pt")
    assert (model.spec.num_users, model.spec.factors) == (120, 8)
    # the job's log lines are what the metric definitions parse
    hr_regex = next(d["Regex"] for d in sagemaker_job.METRIC_DEFINITIONS if d["Name"] == "HR")
    epoch_hrs = [float(v) for v in re.findall(hr_regex, logs["stdout"])]
    assert epoch_hrs == pytest.approx([record["hr"] for record in info.history], abs=1e-6)
    # what moto recorded: channels, hyper-parameters, resources
    job = boto3.client("sagemaker", endpoint_url=aws_env["NCFCTL_AWS__ENDPOINT_URL"]).describe_training_job(
        TrainingJobName=info.sagemaker_job
    )
    assert sorted(c["ChannelName"] for c in job["InputDataConfig"]) == ["model", "test", "train"]
    assert json.loads(job["HyperParameters"]["epochs"]) == 2
    assert job["ResourceConfig"]["InstanceCount"] == 1


def test_missing_bucket_is_one_line(aws_env, workdir, monkeypatch):
    monkeypatch.delenv("NCFCTL_AWS__BUCKET")
    workspace = Workspace(workdir)
    add_dataset(workspace)
    with pytest.raises(NcfError, match="aws.bucket"):
        train_model(load_config(overrides=SMALL), workspace)


def test_metric_lines_and_definitions_agree():
    line = metric_line({"epoch": 3, "loss": 0.25, "hr": 0.6712, "ndcg": 0.3981, "seconds": 1.0})
    values = {d["Name"]: re.findall(d["Regex"], line) for d in sagemaker_job.METRIC_DEFINITIONS}
    assert values["HR"] == ["0.671200"] and values["NDCG"] == ["0.398100"] and values["Loss"] == ["0.250000"]
    assert values["test_HR"] == []  # per-epoch validation lines never feed the test metric


def test_one_rank_per_instance():
    env = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2"}
    assert distributed_env(env, "29500") == {
        "MASTER_ADDR": "algo-1", "MASTER_PORT": "29500", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"
    }  # fmt: skip
    assert distributed_env({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}, "29500") == {}
    assert distributed_env({**env, "WORLD_SIZE": "4"}, "29500") == {}  # torchrun already set it


@pytest.mark.parametrize(
    ("region", "version", "instance", "expected"),
    [
        (
            "us-east-1",
            "2.0",
            "ml.c5.xlarge",
            "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.0-cpu-py310",
        ),
        (
            "ap-east-1",
            "2.5",
            "ml.c5.xlarge",
            "871362719292.dkr.ecr.ap-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311",
        ),
        (
            "cn-north-1",
            "2.0",
            "ml.g5.xlarge",
            "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-training:2.0-gpu-py310",
        ),
        (
            "eu-west-1",
            "2.7",
            "ml.g5.xlarge",
            "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.7-gpu-py312",
        ),
    ],
)
def test_training_image_is_the_sdks(region, version, instance, expected):
    """D1/D2: the account, domain, tag and Python version come from the SDK's table, not a guess."""
    from sagemaker.core import image_uris

    aws = load_config(
        overrides={"aws.region": region, "aws.framework_version": version, "aws.training_instance_type": instance},
        environ={},
    ).aws
    assert training_image_uri(aws) == expected
    assert expected == image_uris.retrieve(
        "pytorch", region=region, version=version, instance_type=instance, image_scope="training"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"aws.framework_version": "2.5", "aws.py_version": "py310"},
            "no SageMaker PyTorch training image for aws.framework_version 2.5, aws.py_version py310",
        ),
        ({"aws.region": "xx-nowhere-1"}, "region xx-nowhere-1"),
        ({"aws.training_instance_type": "ml.trn1.2xlarge"}, "is an AWS Trainium/Inferentia instance"),
        ({"aws.training_instance_type": "c5.xlarge"}, "not of the form ml.<family>.<size>"),
    ],
)
def test_training_image_refusals_are_one_line(overrides, message):
    aws = load_config(overrides=overrides, environ={}).aws
    with pytest.raises(NcfError, match=re.escape(message)) as err:
        training_image_uri(aws)
    assert "\n" not in str(err.value)


def test_spot_training_request(aws_env):
    """Managed spot: the flag, MaxWaitTimeInSeconds >= the run limit, the checkpoint channel the entry resumes from."""
    config = load_config(
        overrides={"aws.spot": True, "aws.spot_max_wait_seconds": 7200, "aws.training_max_runtime_seconds": 3600}
    )
    request = sagemaker_job.training_request(config, {}, {}, "s3://b/src.tar.gz", checkpoint_uri="s3://b/ckpt/job")
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {"S3Uri": "s3://b/ckpt/job", "LocalPath": "/opt/ml/checkpoints"}
    short = load_config(overrides={"aws.spot": True, "aws.spot_max_wait_seconds": 60})
    with pytest.raises(NcfError, match="aws.spot_max_wait_seconds 60 is below aws.training_max_runtime_seconds"):
        sagemaker_job.training_request(short, {}, {}, "s3://b/src.tar.gz", checkpoint_uri="s3://b/ckpt/job")


@pytest.mark.slow
def test_ctrl_c_stops_the_job_and_logs_stream(aws_env, moto_gaps, workdir, monkeypatch):
    """D9, for real: ``ncfctl train --backend sagemaker`` as a subprocess, its job kept InProgress in moto,
    log events put into moto's CloudWatch Logs, then SIGINT. moto implements no StopTrainingJob
    (``moto_gaps`` records it); it cannot show SageMaker actually halting the instances."""
    import signal
    import time

    from moto.logs.models import logs_backends
    from moto.sagemaker.models import FakeTrainingJob, sagemaker_backends

    original_init = FakeTrainingJob.__init__

    def in_progress(job, *args, **kwargs):
        original_init(job, *args, **kwargs)
        job.training_job_status, job.secondary_status = "InProgress", "Training"

    monkeypatch.setattr(FakeTrainingJob, "__init__", in_progress)
    add_dataset(Workspace(workdir))
    env = {
        **os.environ,
        "NCFCTL_TRAIN__BACKEND": "sagemaker",
        "NCFCTL_MODEL__FACTORS": "8",
        "NCFCTL_MODEL__LAYERS": "[16, 8]",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncfctl", "train"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    jobs = sagemaker_backends["123456789012"]["us-east-1"].training_jobs
    deadline = time.monotonic() + 60
    while not jobs and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    (name,) = jobs
    logs = logs_backends["123456789012"]["us-east-1"]
    logs.create_log_group("/aws/sagemaker/TrainingJobs", {})
    logs.create_log_stream("/aws/sagemaker/TrainingJobs", f"{name}/algo-1-1700000000")
    logs.put_log_events(
        "/aws/sagemaker/TrainingJobs",
        f"{name}/algo-1-1700000000",
        [{"timestamp": int(time.time() * 1000), "message": "epoch=1; Loss=0.5000; HR=0.4000; NDCG=0.2000;"}],
    )
    time.sleep(1.0)  # a few polls at aws.poll_seconds 0.05
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 130, stderr
    assert "algo-1-1700000000 | epoch=1; Loss=0.5000; HR=0.4000; NDCG=0.2000;" in stderr
    assert f"interrupted: stopped training job {name} (StopTrainingJob)" in stderr
    assert [call["TrainingJobName"] for call in moto_gaps.calls["StopTrainingJob"]] == [name]
    assert jobs[name].training_job_status == "Stopped"
    assert Workspace(workdir).list("model") == []
