"""``recommend --all-users --backend sagemaker``: every user's top-K from a registered model, by Batch Transform.

A registered version (default ``latest-approved``) becomes a temporary SageMaker model; the input is
one JSON line per user (``{"user_id", "top_k", "exclude_seen"}``, the users read from the
version's own bundle), sent ``SplitType: Line`` with ``BatchStrategy: MultiRecord`` so each request
carries many lines (``application/jsonlines``), answered one line per user and assembled by line.
``MaxPayloadInMB`` is 1 (the container accepts up to ``serving.max_body_bytes``) and the model's
``NCF_MAX_BATCH`` is raised to :data:`LINES_PER_REQUEST`, so a full 1 MB request is accepted.
The wait streams the job's logs and Ctrl-C stops it; the temporary model is deleted either way.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
from ncf_serving.bundle import BundleError, load_bundle

from ncfctl import safetar
from ncfctl.artifacts import RecommendationsInfo
from ncfctl.aws import jobs, registry, s3
from ncfctl.aws.clients import client, error_message, require, require_credentials
from ncfctl.config import Config
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.serving.recommend import FILE, KIND, write_parquet
from ncfctl.serving.server_env import server_environment
from ncfctl.workspace import Artifact, Workspace

CONTENT_TYPE = "application/jsonlines"
INPUT_FILE = "users.jsonl"
MAX_PAYLOAD_MB = 1
LINES_PER_REQUEST = 100_000  # > what 1 MB of request lines can hold
WHAT = "recommendations by SageMaker Batch Transform"


def user_ids(config: Config, model_data: str, work: Path) -> list[str]:
    """The raw user ids of a registered bundle, read (checksums verified) from its ``model.tar.gz``."""
    archive = s3.download_file(config.aws, model_data, work / "model.tar.gz")
    safetar.safe_extract(archive, work / "bundle", config.archive)
    try:
        bundle = load_bundle(work / "bundle")
    except BundleError as exc:
        raise NcfError(f"{model_data}: not a servable ncfctl bundle: {exc}") from None
    return [str(user) for user in bundle.user_ids.tolist()]


def transform_request(config: Config, name: str, input_uri: str, output_uri: str) -> dict[str, Any]:
    return {
        "TransformJobName": name,
        "ModelName": name,
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": MAX_PAYLOAD_MB,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
            "ContentType": CONTENT_TYPE,
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": output_uri, "Accept": CONTENT_TYPE, "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": config.aws.transform_instance_type, "InstanceCount": 1},
        "Tags": [{"Key": "created-by", "Value": "ncfctl"}],
    }


def read_answers(path: Path, expected: int) -> list[dict[str, Any]]:
    """The job's output lines, one top-K answer per user; anything else is one line naming the line."""
    answers = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate((ln for ln in lines if ln.strip()), start=1):
            try:
                answer = json.loads(line)
            except ValueError:
                answer = None
            if not isinstance(answer, dict) or "user_id" not in answer or not isinstance(answer.get("items"), list):
                raise NcfError(f"Batch Transform output line {number} is not a top-K answer: {line[:120]!r}")
            answers.append(answer)
    if len(answers) != expected:
        raise NcfError(f"Batch Transform output has {len(answers)} answers for {expected} users")
    return answers


def recommend(
    config: Config,
    workspace: Workspace,
    top_k: int,
    exclude_seen: bool,
    model_package: str | None,
    progress: Progress = NO_PROGRESS,
) -> Artifact:
    """Run the transform job and write its answers as ``recommendations.parquet`` (see the module doc)."""
    aws = config.aws
    require_credentials(aws, WHAT)
    bucket = require(aws.bucket, "aws.bucket", WHAT)
    role = require(aws.role_arn, "aws.role_arn", WHAT)
    group = require(aws.model_package_group, "aws.model_package_group", WHAT)
    described = registry.resolve(aws, group, model_package or registry.LATEST_APPROVED)
    arn = described["ModelPackageArn"]
    if described.get("ModelApprovalStatus") != registry.APPROVED:
        raise NcfError(f"model package {arn} is {described.get('ModelApprovalStatus')}, not Approved")
    model_data = described["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    s3.check_bucket(aws, bucket)
    sagemaker = client(aws, "sagemaker")
    info = RecommendationsInfo(backend="sagemaker", source=arn, top_k=top_k, exclude_seen=exclude_seen)
    with workspace.create(KIND, parent=arn, info=info) as writer, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        users = user_ids(config, model_data, work)
        request = {"top_k": top_k, "exclude_seen": exclude_seen}
        (work / INPUT_FILE).write_text("".join(json.dumps({"user_id": u, **request}) + "\n" for u in users))
        base = s3.uri(bucket, aws.prefix, "transform", writer.id)
        s3.upload_file(aws, work / INPUT_FILE, f"{base}/input/{INPUT_FILE}", progress)
        name = f"ncfctl-recommend-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{writer.id.rsplit('-', 1)[-1]}"
        environment = {**server_environment(config.serving), "NCF_MAX_BATCH": str(LINES_PER_REQUEST)}
        try:
            sagemaker.create_model(
                ModelName=name,
                ExecutionRoleArn=role,
                PrimaryContainer={"ModelPackageName": arn, "Environment": environment},
            )
        except botocore.exceptions.ClientError as exc:
            raise NcfError(f"SageMaker CreateModel '{name}': {error_message(exc)}") from None
        try:
            try:
                sagemaker.create_transform_job(**transform_request(config, name, f"{base}/input/", f"{base}/output"))
            except botocore.exceptions.ClientError as exc:
                raise NcfError(f"SageMaker CreateTransformJob '{name}': {error_message(exc)}") from None
            job = jobs.wait_for(aws, jobs.TRANSFORM, name, progress)
            output = s3.download_file(aws, f"{base}/output/{INPUT_FILE}.out", work / "output.jsonl", progress)
            rows = write_parquet(writer.path / FILE, read_answers(output, len(users)))
        finally:
            try:
                sagemaker.delete_model(ModelName=name)
            except botocore.exceptions.ClientError as exc:
                progress.log(f"could not delete temporary model {name}: {error_message(exc)}")
        start, end = job.get("TransformStartTime"), job.get("TransformEndTime")
        seconds = (end - start).total_seconds() if isinstance(start, datetime) and isinstance(end, datetime) else None
        writer.manifest.info = info.updated(users=len(users), transform_job=name, input=f"{base}/input/{INPUT_FILE}")
        writer.manifest.metrics.update(rows=rows, **({"transform_seconds": seconds} if seconds is not None else {}))
    return writer.artifact
