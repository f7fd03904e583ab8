"""Training as a SageMaker training job (script mode in AWS's PyTorch container), with plain boto3.

Steps: package the ``ncfctl`` sources with one-line entry scripts (``sourcedir.tar.gz``), upload
the data channels (``train``, ``test``) and the initial model (``model``) to S3, call
``CreateTrainingJob`` with the job's hyper-parameters and metric definitions (``HR=(.*?);`` ...),
poll ``DescribeTrainingJob`` with a status line and the job's CloudWatch log lines (Ctrl-C stops
the job), then download ``model.tar.gz`` and unpack it safely. ``aws.spot`` runs it as managed spot
training: SageMaker restarts an interrupted job from the checkpoint channel
(``/opt/ml/checkpoints``, synced to S3), which the entry point resumes from. Used by ``ncfctl
train --backend sagemaker``, by fine-tuning and by the SageMaker Pipeline's training steps:
anything expressible as a :class:`~ncfctl.training.worker.WorkerJob` (initial model, optional
masks, settings) runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions

from ncfctl import safetar
from ncfctl.aws import jobs, s3
from ncfctl.aws.clients import client, error_message, require, require_credentials
from ncfctl.aws.sdk import training_image_uri
from ncfctl.config import ArchiveConfig, AwsConfig, Config
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.training.entry import CHECKPOINT_DIR, TEST_FILES, TRAIN_FILES, job_hyperparameters
from ncfctl.training.worker import METRICS_FILE, WorkerJob
from ncfctl.workspace import Artifact

ENTRY_SCRIPT = "train_entry.py"
PRUNE_FINETUNE_SCRIPT = "prune_finetune_entry.py"
PACKAGE_SCRIPT = "evaluate_package_entry.py"
# the scripts at the root of sourcedir.tar.gz -> the function each one runs
ENTRY_POINTS = {
    ENTRY_SCRIPT: ("ncfctl.training.entry", "main"),
    PRUNE_FINETUNE_SCRIPT: ("ncfctl.pipeline_sagemaker.entries", "prune_finetune"),
    PACKAGE_SCRIPT: ("ncfctl.pipeline_sagemaker.entries", "evaluate_and_package"),
}
# what the container needs beyond its own torch/numpy/pandas (Python 3.10 wheels exist for all);
# training script mode installs requirements.txt itself, the evaluation step installs both files
REQUIREMENTS = "pydantic>=2.6,<3\npyarrow>=14\npyyaml>=6\n"
PACKAGE_REQUIREMENTS = "onnx>=1.16\nonnxruntime>=1.18\n"
METRIC_DEFINITIONS = [
    {"Name": "Loss", "Regex": "Loss=(.*?);"},
    {"Name": "HR", "Regex": "HR=(.*?);"},
    {"Name": "NDCG", "Regex": "NDCG=(.*?);"},
    {"Name": "RMSE", "Regex": "RMSE=(.*?);"},
    {"Name": "MAE", "Regex": "MAE=(.*?);"},
    {"Name": "test_HR", "Regex": "test_hr=(.*?);"},
    {"Name": "test_NDCG", "Regex": "test_ndcg=(.*?);"},
]
# every instance gets all the data: each DDP rank draws the epoch's examples itself and takes its share
REPLICATED = {"S3DataDistributionType": "FullyReplicated"}


@dataclass
class TrainingJobOutcome:
    job_name: str
    model_data: str  # s3:// URI of model.tar.gz
    model_dir: Path  # its unpacked contents: model.pt, metrics.json
    result: dict[str, Any]  # the fit result the job wrote (history, test metrics, ...)
    billing: dict[str, Any] = field(default_factory=dict)  # what SageMaker billed (see job_billing)

    @property
    def manifest_info(self) -> dict[str, Any]:
        """What a model artifact records about the job that made it."""
        return {"sagemaker_job": self.job_name, "model_data": self.model_data, **self.billing}


def job_billing(described: dict[str, Any]) -> dict[str, Any]:
    """Seconds SageMaker billed (``BillableTimeInSeconds``) and ran, and whether spot capacity was used.

    With managed spot training the billed seconds are below the training seconds; the difference
    is the saving.
    """
    return {
        "billable_seconds": described.get("BillableTimeInSeconds"),
        "training_seconds": described.get("TrainingTimeInSeconds"),
        "spot": bool(described.get("EnableManagedSpotTraining")),
    }


def package_source(dest: Path) -> Path:
    """``sourcedir.tar.gz``: the ``ncfctl`` and ``ncf_serving`` Python files, entry scripts, requirements."""
    import ncf_serving

    dest.mkdir(parents=True, exist_ok=True)
    written = {
        **{
            script: f"from {module} import {func}\n\nraise SystemExit({func}())\n"
            for script, (module, func) in ENTRY_POINTS.items()
        },
        "requirements.txt": REQUIREMENTS,
        "requirements-package.txt": PACKAGE_REQUIREMENTS,
    }
    files = []
    for name, text in written.items():
        (dest / name).write_text(text, encoding="utf-8")
        files.append((dest / name, name))
    for package in (Path(__file__).resolve().parent.parent, Path(ncf_serving.__file__).resolve().parent):
        files += [
            (path, f"{package.name}/{path.relative_to(package).as_posix()}") for path in sorted(package.rglob("*.py"))
        ]
    return safetar.pack(dest / "sourcedir.tar.gz", files)


def job_name(prefix: str) -> str:
    """Unique, <= 63 characters, ``[a-zA-Z0-9-]``: the prefix plus a UTC timestamp."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    return f"{prefix[: 63 - len(stamp) - 1]}-{stamp}"


def training_request(
    config: Config,
    hyperparameters: dict[str, Any],
    channels: dict[str, Any],
    source_uri: str,
    *,
    checkpoint_uri: Any,
    entry: str = ENTRY_SCRIPT,
    instance_type: Any = None,
    image: Any = None,
) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request without its name (script mode: the container runs our source).

    Shared by ``train --backend sagemaker`` and the SageMaker Pipeline's training steps, which pass
    pipeline variables (parameters, other steps' outputs) for the values that vary per execution.
    """
    aws = config.aws
    bucket = require(aws.bucket, "aws.bucket", "a SageMaker training job")
    role = require(aws.role_arn, "aws.role_arn", "a SageMaker training job")
    stopping: dict[str, Any] = {"MaxRuntimeInSeconds": aws.training_max_runtime_seconds}
    if aws.spot:
        stopping["MaxWaitTimeInSeconds"] = aws.spot_max_wait_seconds or aws.training_max_runtime_seconds
        if stopping["MaxWaitTimeInSeconds"] < aws.training_max_runtime_seconds:
            raise NcfError(
                f"aws.spot_max_wait_seconds {aws.spot_max_wait_seconds} is below aws.training_max_runtime_seconds "
                f"{aws.training_max_runtime_seconds}: SageMaker needs the wait to cover the run"
            )
    script_mode = {
        "sagemaker_program": json.dumps(entry),
        "sagemaker_submit_directory": json.dumps(source_uri),
        "sagemaker_region": json.dumps(aws.region),
        "sagemaker_container_log_level": json.dumps("20"),
    }
    return {
        "RoleArn": role,
        "AlgorithmSpecification": {
            "TrainingImage": image or training_image_uri(aws),
            "TrainingInputMode": "File",
            "MetricDefinitions": METRIC_DEFINITIONS,
        },
        "HyperParameters": {**hyperparameters, **script_mode},
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri, **REPLICATED}},
            }
            for channel, uri in channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": s3.uri(bucket, aws.prefix, "training-output")},
        "CheckpointConfig": {"S3Uri": checkpoint_uri, "LocalPath": CHECKPOINT_DIR},
        "ResourceConfig": {
            "InstanceType": instance_type or aws.training_instance_type,
            "InstanceCount": aws.training_instance_count,
            "VolumeSizeInGB": aws.training_volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": aws.spot,
        "Tags": [{"Key": "created-by", "Value": "ncfctl"}],
    }


def upload_channels(
    aws: AwsConfig, uris: dict[str, str], files: dict[str, list[Path]], progress: Progress = NO_PROGRESS
) -> None:
    """Upload each channel's files under its S3 prefix (``uris[channel]``, ending in ``/``)."""
    for channel, paths in files.items():
        for path in paths:
            s3.upload_file(aws, path, f"{uris[channel]}{path.name}", progress=progress)


def wait_for_job(aws: AwsConfig, name: str, progress: Progress = NO_PROGRESS) -> dict[str, Any]:
    """Wait for the training job (logs streamed, Ctrl-C stops it), showing its status and last metrics."""

    def status_line(described: dict[str, Any]) -> str:
        metrics = " ".join(f"{m['MetricName']}={m['Value']:.4f}" for m in described.get("FinalMetricDataList", []))
        return f"{described['TrainingJobStatus']} / {described.get('SecondaryStatus', '')} {metrics}".strip()

    return jobs.wait_for(aws, jobs.TRAINING, name, progress, status_line)


def download_output(
    aws: AwsConfig, limits: ArchiveConfig, described: dict[str, Any], dest: Path, progress: Progress = NO_PROGRESS
) -> tuple[str, Path]:
    """Fetch and safely unpack (within ``limits``) the job's ``model.tar.gz`` into ``dest``."""
    model_data = described.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not model_data:
        raise NcfError(f"training job {described['TrainingJobName']} reports no model artifacts")
    archive = s3.download_file(aws, model_data, dest / "model.tar.gz", progress=progress)
    safetar.safe_extract(archive, dest / "model", limits)
    return model_data, dest / "model"


def run_training_job(
    config: Config,
    job: WorkerJob,
    dataset: Artifact,
    work_dir: Path,
    *,
    prefix: str = "ncfctl-train",
    progress: Progress = NO_PROGRESS,
) -> TrainingJobOutcome:
    """Run ``job`` as a SageMaker training job; ``work_dir`` holds the local staging and output.

    The whole request (role, image, spot limits) is built and checked before anything is uploaded.
    """
    aws = config.aws
    require_credentials(aws, "a SageMaker training job")
    bucket = require(aws.bucket, "aws.bucket", "a SageMaker training job")
    model_files = [Path(job.init_model)] + ([Path(job.masks)] if job.masks else [])
    if [path.name for path in model_files] != ["model.pt", "masks.pt"][: len(model_files)]:
        raise ValueError(f"the model channel needs files named model.pt (+ masks.pt), got {model_files}")
    files = {
        "train": [dataset.file(file) for file in TRAIN_FILES],
        "test": [dataset.file(file) for file in TEST_FILES],
        "model": model_files,
    }
    name = job_name(prefix)
    base = s3.uri(bucket, aws.prefix, "training-input", name)
    channels = {channel: f"{base}/{channel}/" for channel in files}
    source_uri = f"{base}/sourcedir.tar.gz"
    checkpoints = s3.uri(bucket, aws.prefix, "checkpoints", name)
    request = training_request(config, job_hyperparameters(job), channels, source_uri, checkpoint_uri=checkpoints)
    s3.check_bucket(aws, bucket)
    s3.upload_file(aws, package_source(work_dir / "source"), source_uri, progress=progress)
    upload_channels(aws, channels, files, progress=progress)
    try:
        client(aws, "sagemaker").create_training_job(TrainingJobName=name, **request)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"create training job {name}: {error_message(exc)}") from None
    described = wait_for_job(aws, name, progress=progress)
    model_data, model_dir = download_output(aws, config.archive, described, work_dir / "output", progress=progress)
    metrics_path = model_dir / METRICS_FILE
    if not (model_dir / "model.pt").is_file() or not metrics_path.is_file():
        raise NcfError(f"{model_data} lacks model.pt or {METRICS_FILE}: not written by the ncfctl entry point")
    result = json.loads(metrics_path.read_text(encoding="utf-8"))
    return TrainingJobOutcome(name, model_data, model_dir, result, job_billing(described))


def train_on_sagemaker(
    config: Config, job: WorkerJob, dataset: Artifact, progress: Progress = NO_PROGRESS
) -> TrainingJobOutcome:
    """Training with ``train.backend`` sagemaker: threads left to the container (all its cores)."""
    settings = {**job.settings, "threads": None}
    remote = WorkerJob(**{**job.__dict__, "settings": settings})
    return run_training_job(config, remote, dataset, Path(job.output_dir).parent / "sagemaker", progress=progress)
