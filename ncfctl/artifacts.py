"""What each kind of artifact records about itself: its manifest ``info``, one pydantic model per kind.

A manifest's ``info`` is validated against the model of the manifest's ``kind`` when it is read and
when it is written, so a service cannot record a misspelt or mistyped field and a command never reads
one that is not declared here. The field names are the JSON keys on disk (manifests written before
these models existed load unchanged). Only the fields a service actually set are written back
(``exclude_unset``): a local deployment does not grow a column of SageMaker ``null``\\ s.

Nested records (training history, pruning settings, per-layer rows...) stay plain JSON objects:
their columns are documented where they are made (``ncfctl.training.loop``, ``ncfctl.pruning.report``).

:class:`ReuseKey` is how a service says which of its inputs make an existing artifact reusable;
``ncfctl.pipeline`` asks the service for it rather than keeping its own list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict

Stage = Literal["trained", "pruned", "finetuned", "registered"]
Runtime = Literal["onnxruntime", "dlr", "torchscript"]
DeploymentStatus = Literal["creating", "running", "failed", "stopped", "deleted"]


class ArtifactInfo(BaseModel):
    """Base of every kind's ``info``: undeclared fields are refused, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    kind: ClassVar[str]  # the manifest kind this info belongs to
    folder: ClassVar[str]  # the workspace folder holding artifacts of that kind

    def updated(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied (how a service records a later state)."""
        return self.model_validate({**self.recorded(), **changes})

    def recorded(self) -> dict[str, Any]:
        """The fields as written to disk and printed by ``--json``: only those that were set."""
        return self.model_dump(mode="json", exclude_unset=True)

    def __contains__(self, name: object) -> bool:
        """Refused: on a model, ``"pid" in info`` would quietly be False (a leftover of dict-shaped info)."""
        raise TypeError(f"{type(self).__name__} fields are attributes: test `info.{name} is not None`")


class DatasetInfo(ArtifactInfo):
    """``ncfctl data`` (``ncfctl.data.prepare``): the sizes every reader needs, and how it was split."""

    kind = "dataset"
    folder = "data"

    dataset: str | None = None  # source name (synthetic, ml-1m, ...)
    num_users: int | None = None
    num_items: int | None = None
    explicit: bool = False
    split: str | None = None
    source: str | None = None  # where the raw log came from
    min_rating: float | None = None
    seed: int | None = None
    test_ratio: float | None = None  # ratio splits only
    ratio_order: str | None = None


class ModelInfo(ArtifactInfo):
    """``ncfctl train / prune / finetune`` and registered versions; which fields are set depends on ``stage``."""

    kind = "model"
    folder = "models"

    stage: Stage | None = None
    model_type: str | None = None
    task: str | None = None
    dataset: str | None = None  # the dataset artifact id
    # trained (ncfctl.training.service.register_model)
    best_epoch: int | None = None
    stopped_early: bool | None = None
    val_metrics: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None  # popularity (or item mean) test metrics
    history: list[dict[str, Any]] | None = None
    train_seconds: float | None = None
    test_seconds: float | None = None
    threads: int | None = None
    nproc: int | None = None
    device: str | None = None
    backend: str | None = None
    pretrain: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None  # ALS/BPR: the regularization chosen on validation
    sagemaker_job: str | None = None  # trained by a SageMaker job (ncfctl.training.sagemaker_job)
    model_data: str | None = None  # that job's model.tar.gz, or a registered version's
    billable_seconds: int | None = None  # what SageMaker billed: less than training_seconds with spot
    training_seconds: int | None = None
    spot: bool | None = None
    # pruned and fine-tuned (ncfctl.pruning.service)
    source_model: str | None = None
    layers: list[dict[str, Any]] | None = None
    size: dict[str, Any] | None = None
    curve: list[dict[str, Any]] | None = None
    curve_metric: str | None = None
    pruning: dict[str, Any] | None = None
    stages: list[dict[str, Any]] | None = None
    val_baselines: dict[str, Any] | None = None
    finetune_between_steps: list[dict[str, Any]] | None = None
    finetune: dict[str, Any] | None = None
    # registered (ncfctl.compile.registered)
    model_package_arn: str | None = None
    model_package_version: int | None = None
    model_package_status: str | None = None


class CompiledInfo(ArtifactInfo):
    """``ncfctl neo compile`` (``ncfctl.compile.service``): a serving bundle and how it was made."""

    kind = "compiled"
    folder = "neo"

    source_model: str | None = None
    stage: Stage | None = None
    model_type: str | None = None
    task: str | None = None
    dataset: str | None = None
    target: str | None = None
    target_description: str | None = None
    backend: Literal["local", "sagemaker"] | None = None
    backend_reason: str | None = None
    framework: str | None = None
    retrieval: Literal["exact", "ann"] | None = None
    retrieval_reason: str | None = None
    # the compiler's report (ncfctl.compile.base.CompileOutput.info)
    compiler: str | None = None
    optimization: str | None = None
    framework_version: str | None = None
    opset: int | None = None
    jobs: list[str] | None = None  # SageMaker Neo: one job per static batch size
    inputs: list[str] | None = None
    outputs: list[str] | None = None
    exported_operators: list[str] | None = None
    operators: list[str] | None = None
    runtime: Runtime | None = None
    batch_sizes: list[int | None] | None = None
    threads: int | None = None
    servable: bool = True  # by ncfctl's linux/amd64 CPU serving image


class ImageInfo(ArtifactInfo):
    """``ncfctl build-image`` (``ncfctl.serving.build_image``): a build context, built or not."""

    kind = "image"
    folder = "images"

    compiled: str | None = None
    context: str = "context"
    model_dir: str | None = None
    runtime: Runtime | None = None
    task: str | None = None
    num_users: int | None = None
    num_items: int | None = None
    backend: Literal["docker", "buildah", "codebuild", "none"] | None = None
    built: bool | None = None
    image: str | None = None  # local tag
    image_uri: str | None = None  # ECR, once pushed
    builder: str | None = None
    build_error: str | None = None
    # CodeBuild
    source_uri: str | None = None
    codebuild_project: str | None = None
    project: str | None = None
    build_id: str | None = None
    build_seconds: float | None = None
    logs_url: str | None = None


class DeploymentInfo(ArtifactInfo):
    """``ncfctl deploy`` (``ncfctl.serving.deploy_local`` / ``deploy_sagemaker``); fields by ``backend``."""

    kind = "deployment"
    folder = "deployments"

    backend: Literal["local", "sagemaker"] | None = None
    model_package_arn: str | None = None  # sagemaker, deployed from the Model Registry
    model_package_version: int | None = None
    image: str | None = None
    compiled: str | None = None
    # local
    url: str | None = None
    model_dir: str | None = None
    log: str | None = None
    status: DeploymentStatus | None = None
    pid: int | None = None
    pid_started: float | None = None
    runtime: Runtime | None = None
    deployer: dict[str, Any] | None = None  # pid and start time of the ncfctl deploy that spawned it
    workers: int | None = None  # as the server reports them
    threads: int | None = None
    # sagemaker
    action: Literal["created", "updated"] | None = None
    endpoint_name: str | None = None
    model_name: str | None = None
    endpoint_config_name: str | None = None
    previous_endpoint_config: str | None = None
    retained_variant_properties: list[str] | None = None
    variant: str | None = None
    image_uri: str | None = None
    model_data: str | None = None
    region: str | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    serverless: dict[str, Any] | None = None
    data_capture: str | None = None
    capture_percent: int | None = None
    autoscaling: dict[str, Any] | None = None
    endpoint_status: str | None = None
    # how it ended
    error: str | None = None
    stopped: str | None = None
    stop: str | None = None  # how the local server was stopped: terminated | killed | not running
    deleted: str | None = None


class BenchmarkInfo(ArtifactInfo):
    """``ncfctl bench`` (``ncfctl.bench.service``)."""

    kind = "benchmark"
    folder = "comparison"

    dataset: str | None = None
    baseline: str | None = None  # the original model's id
    variants: list[str] | None = None  # ids in row order


class SageMakerPipelineInfo(ArtifactInfo):
    """``ncfctl pipeline --backend sagemaker`` (``ncfctl.pipeline_sagemaker.run``)."""

    kind = "sagemaker-pipeline"
    folder = "pipelines"

    backend: Literal["sagemaker"] = "sagemaker"
    pipeline_name: str | None = None
    model_package_group: str | None = None
    dataset: str | None = None
    serving_image: str | None = None
    parameters: dict[str, Any] | None = None
    uploaded: int | None = None  # files uploaded to S3 this time
    group_created: bool | None = None
    status: str | None = None  # definition only | upserting | failed | Executing | Succeeded | Failed | Stopped
    inputs: list[str] | None = None  # definition only: what would be uploaded
    error: str | None = None
    action: Literal["created", "updated"] | None = None
    execution_arn: str | None = None
    failure_reason: str | None = None
    steps: list[dict[str, Any]] | None = None
    model_package_arn: str | None = None


class RecommendationsInfo(ArtifactInfo):
    """``ncfctl recommend --all-users`` (``ncfctl.serving.recommend``, ``ncfctl.serving.batch_transform``)."""

    kind = "recommendations"
    folder = "recommendations"

    backend: Literal["local", "sagemaker"] | None = None
    source: str | None = None  # compiled id or model package ARN
    top_k: int | None = None
    exclude_seen: bool | None = None
    users: int | None = None
    transform_job: str | None = None
    input: str | None = None


INFO_TYPES: dict[str, type[ArtifactInfo]] = {
    cls.kind: cls
    for cls in (
        DatasetInfo,
        ModelInfo,
        CompiledInfo,
        ImageInfo,
        DeploymentInfo,
        BenchmarkInfo,
        SageMakerPipelineInfo,
        RecommendationsInfo,
    )
}


@dataclass(frozen=True)
class ReuseKey:
    """What a service records about the inputs of an artifact, and which of it decides reuse.

    ``config`` is exactly what the service writes as the manifest's ``config``; an existing
    artifact with the same parent can stand in for a new one when its recorded values of
    ``compared`` (default: all of ``config``) are equal and its ``info`` has every ``where`` value.
    The service builds its manifest from this object, so what it records and what the pipeline
    compares cannot drift apart.
    """

    kind: str
    config: dict[str, Any]
    compared: tuple[str, ...] | None = None
    where: dict[str, Any] = field(default_factory=dict)

    def sections(self) -> dict[str, Any]:
        """The part of ``config`` an artifact must match to be reused."""
        names = self.config if self.compared is None else self.compared
        return {name: self.config[name] for name in names}
