"""AWS CodeBuild: build and push the serving image where a Docker engine exists (the design doc's flow).

The project is created on first use with an S3 source (and updated when the configured image,
compute type, role or timeout change); every build overrides the source with the context zip it
was started for, so one project serves every ``build-image`` run. CodeBuild runs as its own
service role (``aws.codebuild_role_arn``, trusted by ``codebuild.amazonaws.com``): the SageMaker
execution role is trusted by SageMaker only, so CodeBuild could not assume it. CodeBuild's S3
source must be a ZIP archive (a tar.gz is rejected), with ``buildspec.yml`` at its root.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import botocore.exceptions

from ncfctl.aws.clients import client, error_message
from ncfctl.aws.waiting import poll
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress

TERMINAL_OK = "SUCCEEDED"
TERMINAL_FAILED = {"FAILED", "FAULT", "STOPPED", "TIMED_OUT"}


@dataclass(frozen=True)
class BuildOutcome:
    build_id: str
    status: str
    seconds: float
    logs_url: str | None


def project_settings(aws: AwsConfig, role_arn: str, timeout_minutes: int) -> dict:
    """The project fields ncfctl owns; ``privilegedMode`` is required for ``docker build`` inside CodeBuild."""
    return {
        "environment": {
            "type": "LINUX_CONTAINER",
            "image": aws.codebuild_image,
            "computeType": aws.codebuild_compute_type,
            "privilegedMode": True,
        },
        "serviceRole": role_arn,
        "timeoutInMinutes": timeout_minutes,
    }


def _differs(existing: dict, wanted: dict) -> list[str]:
    """The owned fields whose live value is not the configured one (environment compared key by key)."""
    changed = [k for k, v in wanted["environment"].items() if existing.get("environment", {}).get(k) != v]
    changed += [k for k in ("serviceRole", "timeoutInMinutes") if existing.get(k) != wanted[k]]
    return changed


def ensure_project(
    aws: AwsConfig,
    name: str,
    *,
    source_location: str,
    role_arn: str,
    timeout_minutes: int,
) -> str:
    """Create the project, or update it when its image, compute type, role or timeout changed.

    Returns ``created``, ``updated (<fields>)`` or ``unchanged``: a project created by an earlier
    run with other settings would otherwise keep building with them.
    """
    codebuild = client(aws, "codebuild")
    wanted = project_settings(aws, role_arn, timeout_minutes)
    try:
        found = codebuild.batch_get_projects(names=[name])["projects"]
        if found:
            changed = _differs(found[0], wanted)
            if not changed:
                return "unchanged"
            codebuild.update_project(name=name, **wanted)
            return f"updated ({', '.join(changed)})"
        codebuild.create_project(
            name=name,
            description="ncfctl build-image: NCF serving image -> ECR",
            source={"type": "S3", "location": source_location},
            artifacts={"type": "NO_ARTIFACTS"},
            **wanted,
        )
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"CodeBuild project '{name}' (aws.codebuild_project): {error_message(exc)}") from None
    return "created"


def start_build(aws: AwsConfig, project: str, *, source_location: str, env: Mapping[str, str]) -> str:
    """Start a build of ``source_location`` (``bucket/key.zip``) with plain-text environment overrides."""
    try:
        build = client(aws, "codebuild").start_build(
            projectName=project,
            sourceTypeOverride="S3",
            sourceLocationOverride=source_location,
            environmentVariablesOverride=[{"name": k, "value": v, "type": "PLAINTEXT"} for k, v in env.items()],
        )["build"]
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"CodeBuild StartBuild for project '{project}': {error_message(exc)}") from None
    return build["id"]


def _describe(aws: AwsConfig, build_id: str) -> dict:
    try:
        builds = client(aws, "codebuild").batch_get_builds(ids=[build_id])["builds"]
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"CodeBuild build '{build_id}': {error_message(exc)}") from None
    if not builds:
        raise NcfError(f"CodeBuild build '{build_id}' not found")
    return builds[0]


def _failed_phase(build: dict) -> str:
    for phase in build.get("phases", []):
        if phase.get("phaseStatus") in TERMINAL_FAILED:
            detail = "; ".join(c.get("message", "") for c in phase.get("contexts", []) if c.get("message"))
            return f"phase {phase['phaseType']} {phase['phaseStatus']}" + (f": {detail}" if detail else "")
    return f"build status {build.get('buildStatus')}"


def wait_for_build(aws: AwsConfig, build_id: str, progress: Progress = NO_PROGRESS) -> BuildOutcome:
    """Poll ``BatchGetBuilds`` every ``aws.poll_seconds`` until the build ends (there is no waiter).

    CodeBuild enforces the project's own timeout, so the wait always ends. A failed build raises
    one line naming the failed phase and where the logs are.
    """
    start = time.monotonic()
    task = progress.task(f"codebuild {aws.codebuild_project}")

    def check() -> BuildOutcome | None:
        build = _describe(aws, build_id)
        status = build.get("buildStatus", "IN_PROGRESS")
        task.update(status=f"{status} ({build.get('currentPhase', '?')})")
        logs_url = build.get("logs", {}).get("deepLink")
        if status in TERMINAL_FAILED:
            where = f" (logs: {logs_url})" if logs_url else ""
            raise NcfError(f"CodeBuild build {build_id} {status}: {_failed_phase(build)}{where}")
        return BuildOutcome(build_id, status, time.monotonic() - start, logs_url) if status == TERMINAL_OK else None

    outcome = poll(check, aws.poll_seconds)
    task.finish(outcome.status)
    return outcome
