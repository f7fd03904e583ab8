"""SageMaker Model Registry: the versions of ``aws.model_package_group``, their metrics and approval.

The SageMaker Pipeline registers every model that passes its HR@10 gate as a new version
(``PendingManualApproval``) whose artifact is a servable bundle and whose ``ModelMetrics`` point
at the evaluation report in S3; a person approves or rejects it here, and ``deploy
--model-package latest-approved`` serves the newest approved one. A version is named by its ARN,
its version number in the group, or ``latest`` / ``latest-approved``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import botocore.exceptions

from ncfctl.aws import s3
from ncfctl.aws.clients import call, client, error_message
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError

APPROVED, REJECTED, PENDING = "Approved", "Rejected", "PendingManualApproval"
LATEST, LATEST_APPROVED = "latest", "latest-approved"


def _group_missing(exc: botocore.exceptions.ClientError) -> bool:
    message = exc.response.get("Error", {}).get("Message", "")
    return "does not exist" in message or "Could not find" in message or "not found" in message.lower()


def describe_group(aws: AwsConfig, group: str) -> dict[str, Any] | None:
    """The group's description, or None when it does not exist."""
    try:
        return client(aws, "sagemaker").describe_model_package_group(ModelPackageGroupName=group)
    except botocore.exceptions.ClientError as exc:
        if _group_missing(exc):
            return None
        raise NcfError(f"SageMaker DescribeModelPackageGroup '{group}': {error_message(exc)}") from None


def require_group(aws: AwsConfig, group: str) -> dict[str, Any]:
    described = describe_group(aws, group)
    if described is None:
        raise NcfError(
            f"model package group '{group}' does not exist in {aws.region} (config key aws.model_package_group)",
            hint="the SageMaker pipeline creates it and registers versions",
        )
    return described


def ensure_group(aws: AwsConfig, group: str) -> tuple[str, bool]:
    """The group's ARN, creating the group if missing; True when it was created."""
    described = describe_group(aws, group)
    if described is not None:
        return described["ModelPackageGroupArn"], False
    created = call(
        f"CreateModelPackageGroup '{group}'",
        client(aws, "sagemaker").create_model_package_group,
        ModelPackageGroupName=group,
        ModelPackageGroupDescription="NCF recommender versions registered by ncfctl's SageMaker Pipeline",
        Tags=[{"Key": "created-by", "Value": "ncfctl"}],
    )
    return created["ModelPackageGroupArn"], True


def list_versions(aws: AwsConfig, group: str, status: str | None = None) -> list[dict[str, Any]]:
    """Every version's summary, newest first (optionally only those with approval ``status``)."""
    require_group(aws, group)
    paginator = client(aws, "sagemaker").get_paginator("list_model_packages")
    args: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "ModelPackageType": "Versioned",
        "SortBy": "CreationTime",
        "SortOrder": "Descending",
    }
    if status:
        args["ModelApprovalStatus"] = status
    try:
        return [s for page in paginator.paginate(**args) for s in page.get("ModelPackageSummaryList", [])]
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"SageMaker ListModelPackages '{group}': {error_message(exc)}") from None


def describe(aws: AwsConfig, arn: str) -> dict[str, Any]:
    return call(f"DescribeModelPackage '{arn}'", client(aws, "sagemaker").describe_model_package, ModelPackageName=arn)


def resolve(aws: AwsConfig, group: str, ref: str) -> dict[str, Any]:
    """The described version ``ref`` names: an ARN, a version number, ``latest`` or ``latest-approved``."""
    if ref.startswith("arn:"):
        return describe(aws, ref)
    if ref in (LATEST, LATEST_APPROVED):
        versions = list_versions(aws, group, APPROVED if ref == LATEST_APPROVED else None)
        if not versions:
            what = "approved version" if ref == LATEST_APPROVED else "version"
            raise NcfError(
                f"model package group '{group}' has no {what}",
                hint="`ncfctl registry list` shows the versions; `ncfctl registry approve VERSION` approves one",
            )
        return describe(aws, versions[0]["ModelPackageArn"])
    if ref.isdigit():
        for summary in list_versions(aws, group):
            if summary.get("ModelPackageVersion") == int(ref):
                return describe(aws, summary["ModelPackageArn"])
        raise NcfError(f"model package group '{group}' has no version {ref}")
    raise NcfError(f"model package '{ref}': expected an ARN, a version number, '{LATEST}' or '{LATEST_APPROVED}'")


def evaluation(aws: AwsConfig, described: dict[str, Any]) -> dict[str, Any] | None:
    """The evaluation report the version's ``ModelMetrics`` point at, read from S3 (None if none)."""
    uri = described.get("ModelMetrics", {}).get("ModelQuality", {}).get("Statistics", {}).get("S3Uri")
    if not uri:
        return None
    bucket, key = s3.parse_uri(uri)
    try:
        body = client(aws, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"evaluation report {uri}: {error_message(exc)}") from None
    try:
        return json.loads(body)
    except ValueError as exc:
        raise NcfError(f"evaluation report {uri} is not JSON: {exc}") from None


def set_approval(aws: AwsConfig, arn: str, status: str, note: str | None = None) -> dict[str, Any]:
    """Approve or reject a version; returns it described again."""
    args: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if note:
        args["ApprovalDescription"] = note
    call(f"UpdateModelPackage '{arn}'", client(aws, "sagemaker").update_model_package, **args)
    return describe(aws, arn)


def version_rows(aws: AwsConfig, group: str, status: str | None = None) -> list[dict[str, Any]]:
    """Every version (newest first) as :func:`version_row`, with the metrics of its evaluation report."""
    described = [describe(aws, summary["ModelPackageArn"]) for summary in list_versions(aws, group, status)]
    return [version_row(d, evaluation(aws, d)) for d in described]


def _when(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


def version_row(described: dict[str, Any], report: dict[str, Any] | None = None) -> dict[str, Any]:
    """One version as ``registry list`` / ``show`` print it: approval, metrics, what it serves."""
    containers = described.get("InferenceSpecification", {}).get("Containers", [{}])
    metadata = described.get("CustomerMetadataProperties", {})
    metrics = (report or {}).get("metrics", {})
    return {
        "version": described.get("ModelPackageVersion"),
        "status": described.get("ModelApprovalStatus"),
        "created": _when(described.get("CreationTime")),
        "hr": metrics.get("hr"),
        "ndcg": metrics.get("ndcg"),
        "k": metrics.get("k"),
        "runtime": metadata.get("runtime"),
        "target": metadata.get("target"),
        "arn": described.get("ModelPackageArn"),
        "image": containers[0].get("Image"),
        "model_data": containers[0].get("ModelDataUrl"),
        "approval_description": described.get("ApprovalDescription"),
        "metadata": metadata,
    }
