"""``ncfctl deploy --backend sagemaker``: an ECR image + bundle, or a registered model package -> an endpoint.

Two sources: an image artifact (``build-image`` pushed it; the bundle is uploaded as
``model.tar.gz``, which SageMaker extracts into ``/opt/ml/model``, so it holds the bundle's files
at its root) or a version from the Model Registry (``--model-package``: it names its image and
bundle itself, and must be Approved). Either runs on instances (real-time, optional autoscaling)
or serverless (``--serverless``: memory and concurrency instead of instances), optionally with
data capture of a share of requests and responses to S3.

Everything that can be refused is refused before anything is uploaded or created: missing
settings, an instance the serving image cannot run on, a Neo bundle compiled for another
instance family. The deployment artifact is committed (status ``creating``) as soon as the
SageMaker resources exist, before the minutes-long wait for InService, so an interrupted or
failed wait still leaves a record that names what was created and ``deploy delete`` can clean it up.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ncfctl import safetar
from ncfctl.artifacts import DeploymentInfo
from ncfctl.aws import autoscaling, endpoints, registry, s3
from ncfctl.aws.clients import has_credentials, require, require_credentials
from ncfctl.config import Config
from ncfctl.errors import NcfError
from ncfctl.progress import Progress, Task
from ncfctl.serving.build_image import MODEL_DIR, bundle_spec
from ncfctl.serving.server_env import server_environment
from ncfctl.targets import check_serving_pair
from ncfctl.workspace import Artifact, Workspace

MAX_NAME = 63  # SageMaker model / endpoint-config names
CAPTURE_CONTENT_TYPES = ["application/json", "application/jsonlines"]


def image_uri_of(config: Config, image: Artifact | None) -> str | None:
    """The ECR image to host: ``aws.image_uri`` if set, else the one build-image pushed."""
    if config.aws.image_uri:
        return config.aws.image_uri
    return image.manifest.info.image_uri if image is not None else None


def can_deploy(config: Config, image: Artifact | None) -> bool:
    """Whether ``deploy.backend: auto`` picks SageMaker: an image in ECR and credentials to use it."""
    return image_uri_of(config, image) is not None and has_credentials(config.aws)


def resource_name(endpoint: str, stamp: str) -> str:
    """``<endpoint>-<stamp>`` cut to SageMaker's 63 characters, keeping the unique stamp."""
    return f"{endpoint[: MAX_NAME - len(stamp) - 1].rstrip('-')}-{stamp}"


def pack_model(model_dir: Path, target: Path) -> Path:
    files = [(p, p.relative_to(model_dir).as_posix()) for p in sorted(model_dir.rglob("*")) if p.is_file()]
    if not files:
        raise NcfError(f"{model_dir} is empty: nothing to deploy")
    return safetar.pack(target, files)


def data_capture_config(config: Config, bucket: str) -> dict[str, Any] | None:
    """``DataCaptureConfig`` for ``deploy.capture_percent`` (requests and responses, JSON as text)."""
    percent = config.deploy.capture_percent
    if percent is None:
        return None
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": percent,
        "DestinationS3Uri": s3.uri(bucket, config.aws.prefix, "data-capture", config.aws.endpoint_name),
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        "CaptureContentTypeHeader": {"JsonContentTypes": CAPTURE_CONTENT_TYPES},
    }


def _hosting(config: Config) -> dict[str, Any]:
    """Instances or serverless, checked: serverless has no instances to autoscale."""
    deploy = config.deploy
    scaling = deploy.min_instances, deploy.max_instances
    if (scaling[0] is None) != (scaling[1] is None):
        raise NcfError(
            "autoscaling needs both deploy.min_instances and deploy.max_instances",
            settings=("deploy.min_instances", "deploy.max_instances"),
        )
    if not deploy.serverless:
        return {"instance_type": config.aws.instance_type, "instance_count": config.aws.instance_count}
    if scaling[0] is not None:
        raise NcfError(
            "deploy.serverless scales by itself: drop deploy.min_instances/deploy.max_instances (or deploy.serverless)",
            settings=("deploy.serverless", "deploy.min_instances", "deploy.max_instances"),
        )
    return {"serverless": {"MemorySizeInMB": deploy.memory_mb, "MaxConcurrency": deploy.max_concurrency}}


def _source(config: Config, workspace: Workspace, image: str | None, model_package: str | None) -> dict[str, Any]:
    """What the model serves, checked against where it will run: image + bundle, or a package."""
    aws = config.aws
    instance_type = None if config.deploy.serverless else aws.instance_type
    if model_package:
        group = require(aws.model_package_group, "aws.model_package_group", "deploying a registered model package")
        described = registry.resolve(aws, group, model_package)
        arn = described["ModelPackageArn"]
        if described.get("ModelApprovalStatus") != registry.APPROVED:
            raise NcfError(
                f"model package {arn} is {described.get('ModelApprovalStatus')}, not Approved",
                hint=f"approve version {described.get('ModelPackageVersion')} in the Model Registry",
            )
        metadata = described.get("CustomerMetadataProperties", {})
        check_serving_pair(arn, metadata.get("target"), metadata.get("runtime", "onnxruntime"), instance_type)
        version = described.get("ModelPackageVersion")
        return {"parent": arn, "info": {"model_package_arn": arn, "model_package_version": version}}
    source = workspace.resolve(image, "image", "push an image to ECR first (image.push, or image.backend codebuild)")
    image_uri = image_uri_of(config, source)
    if image_uri is None:
        raise NcfError(
            f"image {source.id} is not in ECR (built with backend '{source.manifest.info.backend}')",
            hint="build it with image.push or image.backend codebuild, or set aws.image_uri",
            settings=("image.push", "image.backend"),
        )
    model_dir = source.verify(f"{source.manifest.info.context}/{MODEL_DIR}")
    spec = bundle_spec(model_dir)
    check_serving_pair(source.manifest.info.compiled or source.id, spec.target, spec.runtime, instance_type)
    return {
        "parent": source.id,
        "model_dir": model_dir,
        "image_uri": image_uri,
        "info": {"image": source.id, "compiled": source.manifest.info.compiled},
    }


def deploy_sagemaker(
    config: Config,
    workspace: Workspace,
    image: str | None,
    progress: Progress,
    task: Task,
    model_package: str | None = None,
) -> Artifact:
    """Create model + endpoint config, create or update the endpoint, wait for InService, autoscale.

    ``progress`` shows the model upload; ``task`` (the caller's ``deploy`` row) the endpoint's state.
    """
    aws = config.aws
    what = "a SageMaker deployment"
    require_credentials(aws, what)
    bucket = require(aws.bucket, "aws.bucket", what)
    role = require(aws.role_arn, "aws.role_arn", what)
    hosting = _hosting(config)
    source = _source(config, workspace, image, model_package)
    s3.check_bucket(aws, bucket)

    with workspace.create(
        "deployment",
        parent=source["parent"],
        config={"deploy": config.deploy.model_dump(), "aws": aws.model_dump(exclude={"profile"})},
        info=DeploymentInfo(backend="sagemaker", **source["info"]),
    ) as writer:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + writer.id.rsplit("-", 1)[-1]
        model_data = None
        if "model_dir" in source:
            with tempfile.TemporaryDirectory(prefix="ncfctl-model-") as tmp:
                archive = pack_model(source["model_dir"], Path(tmp) / "model.tar.gz")
                model_data = s3.upload_file(
                    aws, archive, s3.uri(bucket, aws.prefix, "deployments", writer.id, "model.tar.gz"), progress
                )
        plan = endpoints.EndpointPlan(
            endpoint_name=aws.endpoint_name,
            model_name=resource_name(aws.endpoint_name, stamp),
            config_name=resource_name(aws.endpoint_name, stamp),
            role_arn=role,
            environment=server_environment(config.serving),
            image_uri=source.get("image_uri"),
            model_data_url=model_data,
            model_package_arn=writer.manifest.info.model_package_arn,
            data_capture=data_capture_config(config, bucket),
            **hosting,
        )
        try:
            rollout = endpoints.start(aws, plan)
        except NcfError:
            if model_data is not None:
                s3.delete_object(aws, model_data)
            raise
        writer.manifest.info = writer.manifest.info.updated(
            status="creating",
            action=rollout.action,
            endpoint_name=plan.endpoint_name,
            model_name=plan.model_name,
            endpoint_config_name=plan.config_name,
            previous_endpoint_config=rollout.previous_config,
            retained_variant_properties=rollout.retained or None,
            variant=endpoints.VARIANT,
            image_uri=plan.image_uri,
            model_data=model_data,
            region=aws.region,
            instance_type=plan.instance_type,
            instance_count=None if plan.serverless else plan.instance_count,
            serverless=dict(plan.serverless) if plan.serverless else None,
            data_capture=plan.data_capture["DestinationS3Uri"] if plan.data_capture else None,
            capture_percent=config.deploy.capture_percent,
            autoscaling=None,
        )
    artifact = writer.artifact
    task.update(status=f"endpoint {plan.endpoint_name} {rollout.action}; waiting for InService")
    try:
        described = endpoints.finish(aws, rollout)
        info: dict[str, Any] = {"status": "running", "endpoint_status": described.get("EndpointStatus")}
        scaling = config.deploy.min_instances, config.deploy.max_instances
        if scaling[0] is not None:
            info["autoscaling"] = autoscaling.configure(
                aws,
                plan.endpoint_name,
                endpoints.VARIANT,
                min_instances=scaling[0],
                max_instances=scaling[1],
                target_invocations=config.deploy.target_invocations,
            )
        elif rollout.suspended_scaling is not None and not plan.serverless:
            info["autoscaling"] = autoscaling.restore(
                aws, plan.endpoint_name, endpoints.VARIANT, rollout.suspended_scaling
            )
    except (NcfError, KeyboardInterrupt) as exc:
        endpoints.abandon(aws, rollout)
        message = "interrupted while waiting for InService" if isinstance(exc, KeyboardInterrupt) else str(exc)
        workspace.update(artifact, info=artifact.manifest.info.updated(status="failed", error=message))
        raise
    return workspace.update(artifact, info=artifact.manifest.info.updated(**info))


def sagemaker_status(config: Config, deployment: Artifact) -> dict[str, Any]:
    """Live endpoint status from SageMaker (the artifact's status may be stale)."""
    name = deployment.manifest.info.endpoint_name
    described = endpoints.describe_endpoint(config.aws, name)
    if described is None:
        return {"state": "deleted", "endpoint_status": None}
    variants = described.get("ProductionVariants", [])
    return {
        "state": "running" if described["EndpointStatus"] == "InService" else described["EndpointStatus"].lower(),
        "endpoint_status": described["EndpointStatus"],
        "endpoint_config": described.get("EndpointConfigName"),
        "instances": sum(v.get("CurrentInstanceCount", 0) for v in variants) if variants else None,
        "failure_reason": described.get("FailureReason"),
    }


def delete_sagemaker(config: Config, workspace: Workspace, endpoint_name: str) -> dict[str, Any]:
    """Remove autoscaling, the endpoint, its config and models; mark every deployment of it deleted."""
    aws = config.aws
    require_credentials(aws, "deleting a SageMaker endpoint")
    removed_scaling = autoscaling.remove(aws, endpoint_name, endpoints.VARIANT)
    deleted = endpoints.delete_endpoint(aws, endpoint_name)
    for artifact in workspace.list("deployment"):
        info = artifact.manifest.info
        if info.endpoint_name == endpoint_name and info.status != "deleted":
            workspace.update(artifact, info=info.updated(status="deleted", deleted=datetime.now(UTC).isoformat()))
    return {**deleted, "autoscaling_removed": removed_scaling}
