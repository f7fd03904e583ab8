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

from ncfctl.aws import training_job
from ncfctl.config import load_config
from ncfctl.errors import NcfError
from ncfctl.models import load_model
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


def test_sagemaker_training_end_to_end(aws_env, workdir, tmp_path, monkeypatch):
    workspace = Workspace(workdir)
    dataset = add_dataset(workspace)
    logs = {}
    real_wait = training_job.wait_for_job

    def container_then_wait(aws, name, progress=None):
        logs["stdout"] = play_container(aws_env["NCFCTL_AWS__ENDPOINT_URL"], name, tmp_path / "container")
        return real_wait(aws, name, progress)

    monkeypatch.setattr(training_job, "wait_for_job", container_then_wait)
    config = load_config(overrides=SMALL)
    artifact = train_model(config, workspace)

    info, metrics = artifact.manifest.info, artifact.manifest.metrics
    assert info["backend"] == "sagemaker" and info["dataset"] == dataset.id
    assert info["model_data"].endswith(f"/{info['sagemaker_job']}/output/model.tar.gz")
    assert [record["epoch"] for record in info["history"]] == [1, 2]
    assert metrics["hr"] > info["baseline"]["hr"]
    model = load_model(artifact.path / "model.pt")
    assert (model.spec.num_users, model.spec.factors) == (120, 8)
    # the job's log lines are what the metric definitions parse
    hr_regex = next(d["Regex"] for d in training_job.METRIC_DEFINITIONS if d["Name"] == "HR")
    epoch_hrs = [float(v) for v in re.findall(hr_regex, logs["stdout"])]
    assert epoch_hrs == pytest.approx([record["hr"] for record in info["history"]], abs=1e-6)
    # what moto recorded: channels, hyper-parameters, resources
    job = boto3.client("sagemaker", endpoint_url=aws_env["NCFCTL_AWS__ENDPOINT_URL"]).describe_training_job(
        TrainingJobName=info["sagemaker_job"]
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
    values = {d["Name"]: re.findall(d["Regex"], line) for d in training_job.METRIC_DEFINITIONS}
    assert values["HR"] == ["0.671200"] and values["NDCG"] == ["0.398100"] and values["Loss"] == ["0.250000"]
    assert values["test_HR"] == []  # per-epoch validation lines never feed the test metric


def test_one_rank_per_instance():
    env = {"SM_HOSTS": '["algo-2", "algo-1"]', "SM_CURRENT_HOST": "algo-2"}
    assert distributed_env(env, "29500") == {
        "MASTER_ADDR": "algo-1", "MASTER_PORT": "29500", "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0"
    }  # fmt: skip
    assert distributed_env({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}, "29500") == {}
    assert distributed_env({**env, "WORLD_SIZE": "4"}, "29500") == {}  # torchrun already set it


def test_training_image_follows_versions_and_instance_type():
    aws = load_config(overrides={"aws.training_instance_type": "ml.g5.xlarge"}, environ={}).aws
    assert training_job.training_image(aws) == (
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.0.0-gpu-py310"
    )
