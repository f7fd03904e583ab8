"""Training as a SageMaker training job (script mode in AWS's PyTorch container), with plain boto3.

Steps: package the ``ncfctl`` sources with a one-line entry script (``sourcedir.tar.gz``), upload
the data channels (``train``, ``test``) and the initial model (``model``) to S3, call
``CreateTrainingJob`` with the job's hyper-parameters and metric definitions (``HR=(.*?);`` ...),
poll ``DescribeTrainingJob`` with a status line, then download ``model.tar.gz`` and unpack it
safely. Used by ``ncfctl train --backend sagemaker`` and by fine-tuning: anything expressible as
a :class:`~ncfctl.training.worker.WorkerJob` (initial model, optional masks, settings) runs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions

from ncfctl import safetar
from ncfctl.aws import s3
from ncfctl.aws.clients import client, error_message, require, require_credentials
from ncfctl.config import AwsConfig, Config
from ncfctl.errors import NcfError
from ncfctl.training.entry import TEST_FILES, TRAIN_FILES, job_hyperparameters
from ncfctl.training.worker import METRICS_FILE, WorkerJob
from ncfctl.workspace import Artifact

ENTRY_SCRIPT = "train_entry.py"
ENTRY_SOURCE = "from ncfctl.training.entry import main\n\nraise SystemExit(main())\n"
# what the container needs beyond its own torch/numpy/pandas (Python 3.10 wheels exist for all)
REQUIREMENTS = "pydantic>=2.6,<3\npyarrow>=14\npyyaml>=6\n"
DLC_ACCOUNT = "763104351884"  # AWS Deep Learning Containers registry (most commercial regions)
METRIC_DEFINITIONS = [
    {"Name": "Loss", "Regex": "Loss=(.*?);"},
    {"Name": "HR", "Regex": "HR=(.*?);"},
    {"Name": "NDCG", "Regex": "NDCG=(.*?);"},
    {"Name": "RMSE", "Regex": "RMSE=(.*?);"},
    {"Name": "MAE", "Regex": "MAE=(.*?);"},
    {"Name": "test_HR", "Regex": "test_hr=(.*?);"},
    {"Name": "test_NDCG", "Regex": "test_ndcg=(.*?);"},
]
TERMINAL = {"Completed", "Failed", "Stopped"}
# every instance gets all the data: each DDP rank draws the epoch's examples itself and takes its share
REPLICATED = {"S3DataDistributionType": "FullyReplicated"}


@dataclass
class TrainingJobOutcome:
    job_name: str
    model_data: str  # s3:// URI of model.tar.gz
    model_dir: Path  # its unpacked contents: model.pt, metrics.json
    result: dict[str, Any]  # the fit result the job wrote (history, test metrics, ...)


def training_image(aws: AwsConfig) -> str:
    """``aws.training_image_uri``, else AWS's PyTorch training image for the configured versions."""
    if aws.training_image_uri:
        return aws.training_image_uri
    version = aws.framework_version if aws.framework_version.count(".") >= 2 else f"{aws.framework_version}.0"
    processor = "gpu" if aws.training_instance_type.split(".")[1][0] in "gp" else "cpu"
    return f"{DLC_ACCOUNT}.dkr.ecr.{aws.region}.amazonaws.com/pytorch-training:{version}-{processor}-{aws.py_version}"


def package_source(dest: Path) -> Path:
    """``sourcedir.tar.gz``: the ``ncfctl`` package's Python files, the entry script, requirements."""
    package = Path(__file__).resolve().parent.parent
    dest.mkdir(parents=True, exist_ok=True)
    (dest / ENTRY_SCRIPT).write_text(ENTRY_SOURCE, encoding="utf-8")
    (dest / "requirements.txt").write_text(REQUIREMENTS, encoding="utf-8")
    files = [(dest / ENTRY_SCRIPT, ENTRY_SCRIPT), (dest / "requirements.txt", "requirements.txt")]
    files += [(path, f"ncfctl/{path.relative_to(package).as_posix()}") for path in sorted(package.rglob("*.py"))]
    return safetar.pack(dest / "sourcedir.tar.gz", files)


def job_name(prefix: str) -> str:
    """Unique, <= 63 characters, ``[a-zA-Z0-9-]``: the prefix plus a UTC timestamp."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"{prefix[: 63 - len(stamp) - 1]}-{stamp}"


def training_request(
    config: Config, name: str, hyperparameters: dict[str, str], channels: dict[str, str], source_uri: str
) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request (script mode: the container fetches and runs our source)."""
    aws = config.aws
    bucket = require(aws.bucket, "aws.bucket", "a SageMaker training job")
    role = require(aws.role_arn, "aws.role_arn", "a SageMaker training job")
    script_mode = {
        "sagemaker_program": ENTRY_SCRIPT,
        "sagemaker_submit_directory": source_uri,
        "sagemaker_region": aws.region,
        "sagemaker_container_log_level": "20",
    }
    return {
        "TrainingJobName": name,
        "RoleArn": role,
        "AlgorithmSpecification": {
            "TrainingImage": training_image(aws),
            "TrainingInputMode": "File",
            "MetricDefinitions": METRIC_DEFINITIONS,
        },
        "HyperParameters": {**hyperparameters, **{k: json.dumps(v) for k, v in script_mode.items()}},
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, **REPLICATED}},
            }
            for channel, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": s3.uri(bucket, aws.prefix, "training-output")},
        "CheckpointConfig": {
            "S3Uri": s3.uri(bucket, aws.prefix, "checkpoints", name),
            "LocalPath": "/opt/ml/checkpoints",
        },
        "ResourceConfig": {
            "InstanceType": aws.training_instance_type,
            "InstanceCount": aws.training_instance_count,
            "VolumeSizeInGB": aws.training_volume_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": aws.training_max_runtime_seconds},
        "Tags": [{"Key": "created-by", "Value": "ncfctl"}],
    }


def upload_channels(aws: AwsConfig, prefix_uri: str, channels: dict[str, list[Path]], progress=None) -> dict[str, str]:
    """Upload each channel's files under ``<prefix_uri>/<channel>/``; returns channel -> S3 prefix."""
    uris = {}
    for channel, files in channels.items():
        uris[channel] = f"{prefix_uri}/{channel}/"
        for path in files:
            s3.upload_file(aws, path, f"{prefix_uri}/{channel}/{path.name}", progress=progress)
    return uris


def wait_for_job(aws: AwsConfig, name: str, progress=None) -> dict[str, Any]:
    """Poll until the job ends (no boto3 waiter covers every state); one status line while waiting."""
    sagemaker = client(aws, "sagemaker")
    task = progress.add_task(f"training job {name}", total=None, status="") if progress else None
    while True:
        try:
            described = sagemaker.describe_training_job(TrainingJobName=name)
        except botocore.exceptions.ClientError as exc:
            raise NcfError(f"training job {name}: {error_message(exc)}") from None
        status = described["TrainingJobStatus"]
        if progress is not None:
            metrics = " ".join(f"{m['MetricName']}={m['Value']:.4f}" for m in described.get("FinalMetricDataList", []))
            progress.update(task, status=f"{status} / {described.get('SecondaryStatus', '')} {metrics}".strip())
        if status in TERMINAL:
            break
        time.sleep(aws.poll_seconds)
    if status != "Completed":
        reason = described.get("FailureReason", "no reason given")
        raise NcfError(f"training job {name} ended {status}: {reason}")
    if progress is not None:
        progress.update(task, total=1, completed=1)
    return described


def download_output(aws: AwsConfig, described: dict[str, Any], dest: Path, progress=None) -> tuple[str, Path]:
    """Fetch and safely unpack the job's ``model.tar.gz`` into ``dest``."""
    model_data = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model_data:
        raise NcfError(f"training job {described['TrainingJobName']} reports no model artifacts")
    archive = s3.download_file(aws, model_data, dest / "model.tar.gz", progress=progress)
    safetar.safe_extract(archive, dest / "model")
    return model_data, dest / "model"


def run_training_job(
    config: Config, job: WorkerJob, dataset: Artifact, work_dir: Path, *, prefix: str = "ncfctl-train", progress=None
) -> TrainingJobOutcome:
    """Run ``job`` as a SageMaker training job; ``work_dir`` holds the local staging and output."""
    aws = config.aws
    require_credentials(aws, "a SageMaker training job")
    bucket = require(aws.bucket, "aws.bucket", "a SageMaker training job")
    s3.check_bucket(aws, bucket)
    name = job_name(prefix)
    base = s3.uri(bucket, aws.prefix, "training-input", name)
    source_uri = f"{base}/sourcedir.tar.gz"
    s3.upload_file(aws, package_source(work_dir / "source"), source_uri, progress=progress)
    model_files = [Path(job.init_model)] + ([Path(job.masks)] if job.masks else [])
    if [path.name for path in model_files] != ["model.pt", "masks.pt"][: len(model_files)]:
        raise ValueError(f"the model channel needs files named model.pt (+ masks.pt), got {model_files}")
    channels = upload_channels(
        aws,
        base,
        {
            "train": [dataset.file(file) for file in TRAIN_FILES],
            "test": [dataset.file(file) for file in TEST_FILES],
            "model": model_files,
        },
        progress=progress,
    )
    request = training_request(config, name, job_hyperparameters(job), channels, source_uri)
    try:
        client(aws, "sagemaker").create_training_job(**request)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"create training job {name}: {error_message(exc)}") from None
    described = wait_for_job(aws, name, progress=progress)
    model_data, model_dir = download_output(aws, described, work_dir / "output", progress=progress)
    metrics_path = model_dir / METRICS_FILE
    if not (model_dir / "model.pt").is_file() or not metrics_path.is_file():
        raise NcfError(f"{model_data} lacks model.pt or {METRICS_FILE}: not written by the ncfctl entry point")
    result = json.loads(metrics_path.read_text(encoding="utf-8"))
    return TrainingJobOutcome(job_name=name, model_data=model_data, model_dir=model_dir, result=result)


def train_on_sagemaker(config: Config, job: WorkerJob, dataset: Artifact, progress=None) -> TrainingJobOutcome:
    """``ncfctl train --backend sagemaker``: threads left to the container (all its cores)."""
    settings = {**job.settings, "threads": None}
    remote = WorkerJob(**{**job.__dict__, "settings": settings})
    return run_training_job(config, remote, dataset, Path(job.output_dir).parent / "sagemaker", progress=progress)
