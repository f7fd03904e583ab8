"""``ncfctl deploy``: one entry point over the local and SageMaker backends, and lookup of deployments.

Deployments are ``deployment`` artifacts whose ``info.backend`` says where they run and whose
``info.status`` is ``running``, ``creating``, ``failed``, ``stopped`` or ``deleted``. ``deploy status``,
``deploy stop``, ``deploy delete`` and ``ncfctl invoke`` act on the newest running one unless given an id.
"""

from __future__ import annotations

from typing import Any

from ncfctl.config import Config
from ncfctl.errors import ArtifactNotFoundError, NcfError
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.serving import deploy_local, deploy_sagemaker
from ncfctl.workspace import Artifact, Workspace

DEPLOY_HINT = "deploy an image first, or name a deployment with `deployment`"


def choose_backend(config: Config, workspace: Workspace, image: str | None) -> str:
    """``deploy.backend: auto``: SageMaker only when the image is in ECR and AWS credentials exist."""
    if config.deploy.backend != "auto":
        return config.deploy.backend
    source = workspace.get(image, "image") if image else workspace.latest("image")
    return "sagemaker" if deploy_sagemaker.can_deploy(config, source) else "local"


def deploy(
    config: Config,
    workspace: Workspace,
    image: str | None = None,
    progress: Progress = NO_PROGRESS,
    model_package: str | None = None,
) -> Artifact:
    """Deploy an image (default: the latest) or a registered model package (SageMaker only).

    One ``deploy`` progress task follows the rollout and ends with the deployment's status.
    """
    if model_package:
        if image or config.deploy.backend == "local":
            raise NcfError(
                "`model_package` deploys a registered version on SageMaker: drop `image` / deploy.backend local",
                settings=("model_package", "image", "deploy.backend"),
            )
        backend = "sagemaker"
    else:
        backend = choose_backend(config, workspace, image)
    if backend == "local" and (config.deploy.serverless or config.deploy.capture_percent is not None):
        raise NcfError(
            "deploy.serverless and deploy.capture_percent are SageMaker endpoint settings "
            "(set deploy.backend sagemaker)",
            settings=("deploy.serverless", "deploy.capture_percent", "deploy.backend"),
        )
    task = progress.task("deploy")
    if backend == "sagemaker":
        artifact = deploy_sagemaker.deploy_sagemaker(config, workspace, image, progress, task, model_package)
    else:

        def waiting(elapsed: float, code: int | None) -> None:
            task.update(status=f"waiting for /ping ({elapsed:.1f} s, last {code or 'no answer'})")

        artifact = deploy_local.start_local(config, workspace, image, on_wait=waiting)
    task.finish(artifact.manifest.info.status or "")
    return artifact


LIVE = ("running",)


def find_deployment(workspace: Workspace, ref: str | None, statuses: tuple[str, ...] | None = LIVE) -> Artifact:
    """``ref``, else the newest deployment whose status is one of ``statuses`` (None: any status)."""
    if ref:
        return workspace.get(ref, "deployment")
    found = next(
        (
            deployment
            for deployment in reversed(workspace.list("deployment"))
            if statuses is None or deployment.manifest.info.status in statuses
        ),
        None,
    )
    if found is None:
        what = "deployment" if statuses is None else "running deployment"
        raise ArtifactNotFoundError(f"no {what} in {workspace.root}", hint=DEPLOY_HINT, settings=("deployment",))
    return found


def status(config: Config, workspace: Workspace, ref: str | None = None) -> dict[str, Any]:
    """The recorded deployment plus its live state (process + /ping, or SageMaker's view)."""
    deployment = find_deployment(workspace, ref) if ref else _newest(workspace)
    info = deployment.manifest.info
    live = (
        deploy_local.local_status(deployment)
        if info.backend == "local"
        else deploy_sagemaker.sagemaker_status(config, deployment)
    )
    return {"deployment": deployment.id, **info.recorded(), "live": live}


def _newest(workspace: Workspace) -> Artifact:
    """For a status report: the newest running deployment, else the newest at all (to say it stopped)."""
    try:
        return find_deployment(workspace, None)
    except NcfError:
        return find_deployment(workspace, None, statuses=None)


def stop(config: Config, workspace: Workspace, ref: str | None = None) -> dict[str, Any]:
    """Stop a local deployment by its recorded pid (also one still ``creating``: a deploy killed during start-up)."""
    deployment = find_deployment(workspace, ref, statuses=(*LIVE, "creating"))
    if deployment.manifest.info.backend != "local":
        raise NcfError(f"deployment {deployment.id} is on SageMaker: delete the endpoint instead of stopping it")
    stopped = deploy_local.stop_local(config, workspace, deployment)
    return {"deployment": stopped.id, **stopped.manifest.info.recorded()}


def delete(config: Config, workspace: Workspace, ref: str | None = None) -> dict[str, Any]:
    """Delete a SageMaker endpoint: the deployment's, else the configured ``aws.endpoint_name``.

    Works without a local record too, so an endpoint left by a failed or foreign deploy can be removed.
    """
    endpoint = config.aws.endpoint_name
    if ref:
        deployment = workspace.get(ref, "deployment")
        if deployment.manifest.info.backend != "sagemaker":
            raise NcfError(f"deployment {deployment.id} is local: stop it instead (there is no endpoint to delete)")
        endpoint = deployment.manifest.info.endpoint_name
    return {"endpoint_name": endpoint, **deploy_sagemaker.delete_sagemaker(config, workspace, endpoint)}
