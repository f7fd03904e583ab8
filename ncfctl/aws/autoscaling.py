"""Application Auto Scaling for a SageMaker endpoint variant (target tracking on invocations).

SageMaker scales a variant's instance count through Application Auto Scaling: register the
variant as a scalable target with min/max capacity, then a target-tracking policy on the
predefined ``SageMakerVariantInvocationsPerInstance`` metric (invocations per instance per
minute). The target must be deregistered before the endpoint is deleted, otherwise the
orphaned target keeps trying to scale a variant that no longer exists.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions

from ncfctl.aws.clients import client, error_message
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def policy_name(endpoint: str) -> str:
    return f"{endpoint}-invocations-per-instance"


def configure(
    aws: AwsConfig,
    endpoint: str,
    variant: str,
    *,
    min_instances: int,
    max_instances: int,
    target_invocations: float,
    scale_in_cooldown: int = 300,
    scale_out_cooldown: int = 60,
) -> dict:
    """Register the variant and attach the target-tracking policy; returns what was configured.

    Scale out fast (60 s) and in slowly (300 s): a recommender's traffic ramps quickly and a
    premature scale-in costs latency, not just money.
    """
    if min_instances > max_instances:
        raise NcfError(
            f"deploy.min_instances {min_instances} is above deploy.max_instances {max_instances}",
            settings=("deploy.min_instances", "deploy.max_instances"),
        )
    scaling = client(aws, "application-autoscaling")
    rid = resource_id(endpoint, variant)
    try:
        scaling.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=DIMENSION,
            MinCapacity=min_instances,
            MaxCapacity=max_instances,
        )
        policy = scaling.put_scaling_policy(
            PolicyName=policy_name(endpoint),
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=DIMENSION,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(target_invocations),
                "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
                "ScaleInCooldown": scale_in_cooldown,
                "ScaleOutCooldown": scale_out_cooldown,
            },
        )
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"Application Auto Scaling for {rid}: {error_message(exc)}") from None
    return {
        "resource_id": rid,
        "min_instances": min_instances,
        "max_instances": max_instances,
        "target_invocations": float(target_invocations),
        "policy_arn": policy["PolicyARN"],
    }


def _registered(aws: AwsConfig, endpoint: str, variant: str) -> tuple[Any, str, dict | None, list[dict]]:
    """(client, resource id, the variant's scalable target or None, its scaling policies)."""
    scaling = client(aws, "application-autoscaling")
    rid = resource_id(endpoint, variant)
    try:
        targets = scaling.describe_scalable_targets(
            ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION
        )["ScalableTargets"]
        if not targets:
            return scaling, rid, None, []
        policies = scaling.describe_scaling_policies(
            ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION
        )["ScalingPolicies"]
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"Application Auto Scaling for {rid}: {error_message(exc)}") from None
    return scaling, rid, targets[0], policies


def current(aws: AwsConfig, endpoint: str, variant: str) -> dict | None:
    """The variant's registered scaling (min/max capacity, target value), or None when there is none."""
    _, _, target, policies = _registered(aws, endpoint, variant)
    if target is None:
        return None
    tracking = [
        p["TargetTrackingScalingPolicyConfiguration"] for p in policies if p["PolicyType"] == "TargetTrackingScaling"
    ]
    return {
        "min_instances": target["MinCapacity"],
        "max_instances": target["MaxCapacity"],
        "target_invocations": tracking[0]["TargetValue"] if tracking else None,
    }


def restore(aws: AwsConfig, endpoint: str, variant: str, settings: dict) -> dict:
    """Register again what :func:`current` read (after an update that had to remove it).

    A target-tracking policy comes back as it was; a range without one ncfctl knows comes back as
    the range alone.
    """
    if settings.get("target_invocations") is not None:
        return configure(aws, endpoint, variant, **settings)
    rid = resource_id(endpoint, variant)
    try:
        client(aws, "application-autoscaling").register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=DIMENSION,
            MinCapacity=settings["min_instances"],
            MaxCapacity=settings["max_instances"],
        )
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"Application Auto Scaling for {rid}: {error_message(exc)}") from None
    return {**settings, "resource_id": rid}


def remove(aws: AwsConfig, endpoint: str, variant: str) -> bool:
    """Delete the policies and deregister the variant; False when no scaling was registered."""
    scaling, rid, target, policies = _registered(aws, endpoint, variant)
    if target is None:
        return False
    try:
        for policy in policies:
            scaling.delete_scaling_policy(
                PolicyName=policy["PolicyName"], ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION
            )
        scaling.deregister_scalable_target(ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"Application Auto Scaling for {rid}: {error_message(exc)}") from None
    return True
