"""``ncfctl deploy --backend sagemaker``: an ECR image + the bundle as ``model.tar.gz`` -> a real-time endpoint.

The deployment artifact is committed (status ``creating``) as soon as the SageMaker resources
exist, before the minutes-long wait for InService, so an interrupted or failed wait still leaves
a record that names what was created and ``--delete`` can clean it up. SageMaker extracts
``ModelDataUrl`` into ``/opt/ml/model``, so the tarball holds the bundle's files at its root.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ncfctl import safetar
from ncfctl.aws import autoscaling, endpoints, s3
from ncfctl.aws.clients import has_credentials, require, require_credentials
from ncfctl.config import Config
from ncfctl.errors import NcfError
from ncfctl.serving.build_image import CONTEXT_DIR, MODEL_DIR
from ncfctl.serving.server_env import server_environment
from ncfctl.workspace import Artifact, Workspace

MAX_NAME = 63  # SageMaker model / endpoint-config names


def image_uri_of(config: Config, image: Artifact | None) -> str | None:
    """The ECR image to host: ``aws.image_uri`` if set, else the one build-image pushed."""
    if config.aws.image_uri:
        return config.aws.image_uri
    return image.manifest.info.get("image_uri") if image is not None else None


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


def deploy_sagemaker(
    config: Config,
    workspace: Workspace,
    image: str | None = None,
    progress=None,
    on_status: Callable[[str], None] | None = None,
) -> Artifact:
    """Create model + endpoint config, create or update the endpoint, wait for InService, autoscale."""
    aws = config.aws
    what = "deploy --backend sagemaker"
    source = workspace.resolve(image, "image", "run `ncfctl build-image --push` (or --backend codebuild) first")
    image_uri = image_uri_of(config, source)
    if image_uri is None:
        raise NcfError(
            f"image {source.id} is not in ECR (built with backend '{source.manifest.info.get('backend')}')",
            hint="ncfctl build-image --push or --backend codebuild, or set aws.image_uri",
        )
    require_credentials(aws, what)
    bucket = require(aws.bucket, "aws.bucket", what)
    role = require(aws.role_arn, "aws.role_arn", what)
    scaling = config.deploy.min_instances, config.deploy.max_instances
    if (scaling[0] is None) != (scaling[1] is None):
        raise NcfError("autoscaling needs both --min-instances and --max-instances")
    model_dir = source.verify(f"{source.manifest.info.get('context', CONTEXT_DIR)}/{MODEL_DIR}")
    s3.check_bucket(aws, bucket)

    with workspace.create(
        "deployment",
        parent=source.id,
        config={"deploy": config.deploy.model_dump(), "aws": aws.model_dump(exclude={"profile"})},
        info={"backend": "sagemaker", "image": source.id, "compiled": source.manifest.info.get("compiled")},
    ) as writer:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + writer.id.rsplit("-", 1)[-1]
        with tempfile.TemporaryDirectory(prefix="ncfctl-model-") as tmp:
            archive = pack_model(model_dir, Path(tmp) / "model.tar.gz")
            model_data = s3.upload_file(
                aws, archive, s3.uri(bucket, aws.prefix, "deployments", writer.id, "model.tar.gz"), progress
            )
        plan = endpoints.EndpointPlan(
            endpoint_name=aws.endpoint_name,
            model_name=resource_name(aws.endpoint_name, stamp),
            config_name=resource_name(aws.endpoint_name, stamp),
            image_uri=image_uri,
            model_data_url=model_data,
            role_arn=role,
            instance_type=aws.instance_type,
            instance_count=aws.instance_count,
            environment=server_environment(config.serving),
        )
        endpoints.create_model_and_config(aws, plan)
        action = endpoints.create_or_update_endpoint(aws, plan)
        writer.manifest.info.update(
            status="creating",
            action=action,
            endpoint_name=plan.endpoint_name,
            model_name=plan.model_name,
            endpoint_config_name=plan.config_name,
            variant=endpoints.VARIANT,
            image_uri=image_uri,
            model_data=model_data,
            region=aws.region,
            instance_type=plan.instance_type,
            instance_count=plan.instance_count,
            autoscaling=None,
        )
    artifact = writer.artifact
    if on_status is not None:
        on_status(f"endpoint {plan.endpoint_name} {action}; waiting for InService")
    try:
        described = endpoints.wait_in_service(aws, plan.endpoint_name)
        info: dict[str, Any] = {"status": "running", "endpoint_status": described.get("EndpointStatus")}
        if scaling[0] is not None:
            info["autoscaling"] = autoscaling.configure(
                aws,
                plan.endpoint_name,
                endpoints.VARIANT,
                min_instances=scaling[0],
                max_instances=scaling[1],
                target_invocations=config.deploy.target_invocations,
            )
    except NcfError as exc:
        workspace.update(artifact, info={**artifact.manifest.info, "status": "failed", "error": str(exc)})
        raise
    return workspace.update(artifact, info={**artifact.manifest.info, **info})


def sagemaker_status(config: Config, deployment: Artifact) -> dict[str, Any]:
    """Live endpoint status from SageMaker (the artifact's status may be stale)."""
    name = deployment.manifest.info["endpoint_name"]
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
    require_credentials(aws, "deploy --delete")
    removed_scaling = autoscaling.remove(aws, endpoint_name, endpoints.VARIANT)
    deleted = endpoints.delete_endpoint(aws, endpoint_name)
    for artifact in workspace.list("deployment"):
        info = artifact.manifest.info
        if info.get("endpoint_name") == endpoint_name and info.get("status") != "deleted":
            workspace.update(artifact, info={**info, "status": "deleted", "deleted": datetime.now(UTC).isoformat()})
    return {**deleted, "autoscaling_removed": removed_scaling}
