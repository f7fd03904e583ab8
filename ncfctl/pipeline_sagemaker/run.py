"""``ncfctl pipeline --backend sagemaker``: upsert the SageMaker Pipeline, start it, follow its steps.

1. Resolve and check everything first (role, bucket, group, serving image, an implicit-task
   dataset) so a bad setting is one line before anything is uploaded or created.
2. Upload the inputs under content-addressed keys (``.../pipelines/<name>/code/<sha>/...``), so an
   unchanged source, dataset and initial model upload nothing and give the same definition.
3. Build the definition with the SDK (:mod:`ncfctl.pipeline_sagemaker.definition`), create the
   model package group if missing, then ``CreatePipeline`` or ``UpdatePipeline`` (boto3).
4. ``StartPipelineExecution`` and follow it: ``DescribePipelineExecution`` for the status and
   ``ListPipelineExecutionSteps`` for each step's status, failure reason and outputs (the
   registered model package). Ctrl-C stops the execution (``StopPipelineExecution``); ``--no-wait``
   returns once it started.

``--definition-only`` writes the definition JSON into the workspace and calls no AWS API (the
S3 keys it names are computed from the local files). Each run is a ``sagemaker-pipeline``
artifact holding ``definition.json`` and, once known, the execution's status and steps.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.exceptions

from ncfctl import fileio
from ncfctl.artifacts import SageMakerPipelineInfo
from ncfctl.aws import registry, s3, sdk
from ncfctl.aws.clients import client, error_message, not_found, require, require_credentials, session
from ncfctl.aws.waiting import poll
from ncfctl.config import Config
from ncfctl.data.dataset import load_dataset
from ncfctl.errors import NcfError
from ncfctl.models import MODEL_FILE, NCF, save_model
from ncfctl.pipeline_sagemaker import definition
from ncfctl.progress import NO_PROGRESS, Progress, Task
from ncfctl.training.entry import TEST_FILES, TRAIN_FILES
from ncfctl.training.sagemaker_job import package_source
from ncfctl.training.service import model_spec
from ncfctl.workspace import Artifact, Workspace

KIND = "sagemaker-pipeline"
DEFINITION_FILE = "definition.json"
TERMINAL = {"Succeeded", "Failed", "Stopped"}
WHAT = "the SageMaker pipeline"


def serving_image(config: Config, workspace: Workspace) -> str:
    """The ONNX Runtime serving image in ECR the registered versions name: ``aws.image_uri`` or the newest pushed."""
    if config.aws.image_uri:
        return config.aws.image_uri
    for image in reversed(workspace.list("image")):
        info = image.manifest.info
        if info.image_uri and info.runtime == "onnxruntime":
            return info.image_uri
    raise NcfError(
        "the pipeline registers an ONNX Runtime bundle, served by an onnxruntime image in ECR, and none is known",
        hint="set aws.image_uri, or push one: compile locally, then build the image on CodeBuild",
    )


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]


def prepare(config: Config, workspace: Workspace, dataset_ref: str | None, work: Path) -> tuple[Any, dict[str, Path]]:
    """The definition's inputs and the local files to upload for them (S3 URI -> path)."""
    aws = config.aws
    bucket = require(aws.bucket, "aws.bucket", WHAT)
    if config.train.task != "implicit":
        raise NcfError("the SageMaker Pipeline gates on HR@K: it needs train.task 'implicit'")
    dataset = workspace.resolve(
        dataset_ref,
        "dataset",
        "prepare a dataset first (the pipeline trains on it), or name one with `dataset_ref`",
        settings=("dataset_ref",),
    )
    data = load_dataset(dataset)
    if data.explicit:
        raise NcfError(f"dataset {dataset.id} keeps ratings (explicit); the pipeline gates on HR@K of implicit data")
    import torch

    spec = model_spec(config, data)
    torch.manual_seed(config.seed)
    init = work / "init" / MODEL_FILE
    save_model(init, NCF(spec))
    source = package_source(work / "source")
    base = s3.uri(bucket, aws.prefix, "pipelines", aws.pipeline_name)
    uploads = {f"{base}/code/{_digest(source.read_bytes())}/sourcedir.tar.gz": source}
    # keyed by what determines the weights (torch.save's bytes carry the temp file's name)
    init_prefix = f"{base}/init/{_digest(json.dumps([spec.model_dump(), config.seed]).encode())}/"
    uploads[f"{init_prefix}{MODEL_FILE}"] = init
    data_prefix = f"{base}/data/{dataset.id}"
    for channel, names in (("train", TRAIN_FILES), ("test", TEST_FILES)):
        uploads.update({f"{data_prefix}/{channel}/{name}": dataset.path / name for name in names})
    inputs = definition.PipelineInputs(
        source_uri=next(iter(uploads)),
        train_uri=f"{data_prefix}/train/",
        test_uri=f"{data_prefix}/test/",
        init_model_uri=init_prefix,
        num_users=data.num_users,
        num_items=data.num_items,
        dataset=dataset.id,
        serving_image=serving_image(config, workspace),
    )
    return inputs, uploads


def upload_missing(config: Config, uploads: dict[str, Path], progress: Progress = NO_PROGRESS) -> int:
    """Upload what S3 does not hold yet (content-addressed keys never change meaning); returns how many."""
    s3_client = client(config.aws, "s3")
    uploaded = 0
    for uri, path in uploads.items():
        bucket, key = s3.parse_uri(uri)
        try:
            s3_client.head_object(Bucket=bucket, Key=key)
            continue
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {"404", "NoSuchKey", "NotFound"}:
                raise NcfError(f"S3 HeadObject {uri}: {error_message(exc)}") from None
        s3.upload_file(config.aws, path, uri, progress)
        uploaded += 1
    return uploaded


def sdk_session(config: Config) -> Any:
    """An SDK session over ncfctl's boto3 session and client (region, profile, endpoint_url)."""
    helper = sdk.load(config.aws, "core.helper.session_helper")
    return helper.Session(boto_session=session(config.aws), sagemaker_client=client(config.aws, "sagemaker"))


def upsert(config: Config, definition_json: str, role_arn: str) -> str:
    """CreatePipeline, or UpdatePipeline when it exists; returns ``created`` or ``updated``."""
    sagemaker = client(config.aws, "sagemaker")
    name = config.aws.pipeline_name
    args = {"PipelineName": name, "PipelineDefinition": definition_json, "RoleArn": role_arn}
    description = "ncfctl: train, prune + fine-tune, evaluate, gate on HR@K, register"
    try:
        try:
            sagemaker.describe_pipeline(PipelineName=name)
        except botocore.exceptions.ClientError as exc:
            if not not_found(exc):
                raise
            sagemaker.create_pipeline(
                **args, PipelineDescription=description, Tags=[{"Key": "created-by", "Value": "ncfctl"}]
            )
            return "created"
        sagemaker.update_pipeline(**args, PipelineDescription=description)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"SageMaker pipeline '{name}' (aws.pipeline_name): {error_message(exc)}") from None
    return "updated"


def start(config: Config) -> str:
    try:
        return client(config.aws, "sagemaker").start_pipeline_execution(
            PipelineName=config.aws.pipeline_name, PipelineExecutionDescription="started by ncfctl pipeline"
        )["PipelineExecutionArn"]
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"StartPipelineExecution '{config.aws.pipeline_name}': {error_message(exc)}") from None


def step_row(step: dict[str, Any]) -> dict[str, Any]:
    """One step of ListPipelineExecutionSteps: its status, why it failed, what it made."""
    metadata = step.get("Metadata", {})
    made = next((m.get("Arn") for m in metadata.values() if isinstance(m, dict) and m.get("Arn")), None)
    outcome = metadata.get("Condition", {}).get("Outcome") or metadata.get("Fail", {}).get("ErrorMessage")
    return {
        "step": step["StepName"],
        "status": step.get("StepStatus"),
        "detail": step.get("FailureReason") or outcome or made,
        "arn": made,
    }


def _steps(config: Config, execution_arn: str) -> list[dict[str, Any]]:
    paginator = client(config.aws, "sagemaker").get_paginator("list_pipeline_execution_steps")
    pages = paginator.paginate(PipelineExecutionArn=execution_arn, SortOrder="Ascending")
    return [step_row(step) for page in pages for step in page.get("PipelineExecutionSteps", [])]


def follow(
    config: Config,
    execution_arn: str,
    task: Task,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Poll until the execution ends (there is no boto3 waiter); ``on_step`` sees each step whenever its
    status changes, ``task`` shows the latest change. Ctrl-C stops it."""
    sagemaker = client(config.aws, "sagemaker")
    seen: dict[str, str] = {}

    def check() -> dict[str, Any] | None:
        try:
            described = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
            steps = _steps(config, execution_arn)
        except botocore.exceptions.ClientError as exc:
            raise NcfError(f"pipeline execution {execution_arn}: {error_message(exc)}") from None
        for row in steps:
            if seen.get(row["step"]) != row["status"]:
                seen[row["step"]] = row["status"]
                task.update(status=f"{row['step']}: {row['status']}")
                if on_step is not None:
                    on_step(row)
        status = described["PipelineExecutionStatus"]
        if status in TERMINAL:
            return {"status": status, "failure_reason": described.get("FailureReason") or None, "steps": steps}
        return None

    try:
        return poll(check, config.aws.poll_seconds)
    except KeyboardInterrupt:
        try:
            sagemaker.stop_pipeline_execution(PipelineExecutionArn=execution_arn)
            print(f"interrupted: stopped pipeline execution {execution_arn} (StopPipelineExecution)", flush=True)
        except botocore.exceptions.ClientError as exc:
            print(f"interrupted: could not stop {execution_arn}: {error_message(exc)}", flush=True)
        raise


def failure(outcome: dict[str, Any], execution_arn: str, config: Config) -> NcfError:
    """One line naming the step that failed and why (the gate's own message when it was the gate)."""
    failed = next((row for row in outcome["steps"] if row["status"] == "Failed"), None)
    where = f" at step {failed['step']}" if failed else ""
    reason = (failed or {}).get("detail") or outcome.get("failure_reason") or "no failure reason given"
    if failed and failed["step"] == definition.FAIL:
        hint = "the model missed the gate: lower pipeline.min_hit_rate or train longer"
    else:
        hint = "the step's log is in CloudWatch under /aws/sagemaker/TrainingJobs or ProcessingJobs"
    message = f"pipeline execution {execution_arn} {outcome['status']}{where}: {reason}"
    return NcfError(message, hint=hint, settings=("pipeline.min_hit_rate",))


def run_sagemaker_pipeline(
    config: Config,
    workspace: Workspace,
    *,
    dataset_ref: str | None = None,
    wait: bool = True,
    definition_only: bool = False,
    progress: Progress = NO_PROGRESS,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> Artifact:
    """Upsert, start and (unless ``wait`` is off) follow the pipeline; see the module doc."""
    task = progress.task("sagemaker pipeline")
    aws = config.aws
    role = require(aws.pipeline_role_arn or aws.role_arn, "aws.role_arn", WHAT)
    group = require(aws.model_package_group, "aws.model_package_group", WHAT)
    if not definition_only:
        require_credentials(aws, WHAT)
        s3.check_bucket(aws, require(aws.bucket, "aws.bucket", WHAT))
    with tempfile.TemporaryDirectory(prefix="ncfctl-pipeline-") as tmp:
        inputs, uploads = prepare(config, workspace, dataset_ref, Path(tmp))
        pipeline = definition.build(config, inputs, role, sdk_session(config))
        definition_json = pipeline.definition()
        info = SageMakerPipelineInfo(
            backend="sagemaker",
            pipeline_name=aws.pipeline_name,
            model_package_group=group,
            dataset=inputs.dataset,
            serving_image=inputs.serving_image,
            parameters={p["Name"]: p.get("DefaultValue") for p in json.loads(definition_json)["Parameters"]},
        )
        if definition_only:
            info = info.updated(status="definition only", inputs=sorted(uploads))
        else:
            info = info.updated(
                uploaded=upload_missing(config, uploads, progress),
                group_created=registry.ensure_group(aws, group)[1],
                status="upserting",
            )
    recorded = {"aws": aws.model_dump(exclude={"profile"}), "pipeline": config.pipeline.model_dump()}
    with workspace.create(KIND, parent=inputs.dataset, config=recorded, info=info) as w:
        fileio.write_json(w.path / DEFINITION_FILE, json.loads(definition_json))
    artifact = w.artifact
    if definition_only:
        task.finish(info.status)
        return artifact
    try:
        action = upsert(config, definition_json, role)
        execution = start(config)
    except NcfError as exc:
        workspace.update(artifact, info=info.updated(status="failed", error=str(exc)))
        raise
    artifact = workspace.update(artifact, info=info.updated(action=action, execution_arn=execution, status="Executing"))
    if not wait:
        task.finish(artifact.manifest.info.status)
        return artifact
    outcome = follow(config, execution, task, on_step)
    registered = next((row["arn"] for row in outcome["steps"] if row["step"] == definition.REGISTER), None)
    artifact = workspace.update(artifact, info=artifact.manifest.info.updated(**outcome, model_package_arn=registered))
    if outcome["status"] != "Succeeded":
        raise failure(outcome, execution, config)
    task.finish(outcome["status"])
    return artifact
