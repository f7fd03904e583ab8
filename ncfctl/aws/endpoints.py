"""SageMaker real-time hosting: Model -> EndpointConfig -> Endpoint, created or updated in place.

An endpoint's configuration is immutable, so every deploy creates a fresh model and endpoint
config (names carry a timestamp) and then creates the endpoint or points the existing one at the
new config (``UpdateEndpoint`` is a blue/green swap with no downtime). Deleting tears down the
endpoint together with the config and models it actually uses, read back from SageMaker rather
than from local records that may be stale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import botocore.exceptions

from ncfctl.aws.clients import client, error_message
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError

VARIANT = "AllTraffic"


@dataclass(frozen=True)
class EndpointPlan:
    """Everything one deploy creates; names are unique per deploy except the endpoint's."""

    endpoint_name: str
    model_name: str
    config_name: str
    image_uri: str
    model_data_url: str
    role_arn: str
    instance_type: str
    instance_count: int
    environment: Mapping[str, str]


def _call(what: str, fn: Callable, **kwargs):
    try:
        return fn(**kwargs)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"SageMaker {what}: {error_message(exc)}") from None


def describe_endpoint(aws: AwsConfig, name: str) -> dict | None:
    """The endpoint's description, or None when it does not exist."""
    try:
        return client(aws, "sagemaker").describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError as exc:
        err = exc.response.get("Error", {})
        if err.get("Code") == "ValidationException" and "Could not find endpoint" in err.get("Message", ""):
            return None
        raise NcfError(f"SageMaker DescribeEndpoint '{name}': {error_message(exc)}") from None


def create_model_and_config(aws: AwsConfig, plan: EndpointPlan) -> None:
    """CreateModel (image + model data in S3) and CreateEndpointConfig (one variant)."""
    sagemaker = client(aws, "sagemaker")
    _call(
        f"CreateModel '{plan.model_name}'",
        sagemaker.create_model,
        ModelName=plan.model_name,
        ExecutionRoleArn=plan.role_arn,
        PrimaryContainer={
            "Image": plan.image_uri,
            "ModelDataUrl": plan.model_data_url,
            "Environment": dict(plan.environment),
        },
    )
    _call(
        f"CreateEndpointConfig '{plan.config_name}'",
        sagemaker.create_endpoint_config,
        EndpointConfigName=plan.config_name,
        ProductionVariants=[
            {
                "VariantName": VARIANT,
                "ModelName": plan.model_name,
                "InstanceType": plan.instance_type,
                "InitialInstanceCount": plan.instance_count,
            }
        ],
    )


def create_or_update_endpoint(aws: AwsConfig, plan: EndpointPlan) -> str:
    """Point the endpoint at ``plan.config_name``; returns ``"created"`` or ``"updated"``."""
    sagemaker = client(aws, "sagemaker")
    existing = describe_endpoint(aws, plan.endpoint_name)
    if existing is None:
        _call(
            f"CreateEndpoint '{plan.endpoint_name}'",
            sagemaker.create_endpoint,
            EndpointName=plan.endpoint_name,
            EndpointConfigName=plan.config_name,
        )
        return "created"
    if existing["EndpointStatus"] not in {"InService", "Failed"}:
        raise NcfError(
            f"SageMaker endpoint '{plan.endpoint_name}' is {existing['EndpointStatus']}; "
            "wait until it is InService before deploying again"
        )
    _call(
        f"UpdateEndpoint '{plan.endpoint_name}'",
        sagemaker.update_endpoint,
        EndpointName=plan.endpoint_name,
        EndpointConfigName=plan.config_name,
    )
    return "updated"


def wait_in_service(aws: AwsConfig, name: str) -> dict:
    """Block on the ``endpoint_in_service`` waiter (polling every ``aws.poll_seconds``).

    Hosting takes minutes; the waiter gives up after an hour. On failure the message carries
    SageMaker's ``FailureReason`` (e.g. the container failing its ``/ping`` health check).
    """
    waiter = client(aws, "sagemaker").get_waiter("endpoint_in_service")
    try:
        waiter.wait(
            EndpointName=name,
            WaiterConfig={"Delay": aws.poll_seconds, "MaxAttempts": max(1, int(3600 / aws.poll_seconds))},
        )
    except botocore.exceptions.WaiterError:
        described = describe_endpoint(aws, name) or {}
        status = described.get("EndpointStatus", "missing")
        reason = described.get("FailureReason", "no failure reason given")
        raise NcfError(f"SageMaker endpoint '{name}' did not reach InService ({status}): {reason}") from None
    return describe_endpoint(aws, name) or {}


def delete_endpoint(aws: AwsConfig, name: str) -> dict[str, list[str]]:
    """Delete the endpoint, its endpoint config and the models that config serves; returns what went."""
    sagemaker = client(aws, "sagemaker")
    existing = describe_endpoint(aws, name)
    if existing is None:
        raise NcfError(f"SageMaker endpoint '{name}' does not exist")
    config_name = existing["EndpointConfigName"]
    config = _call(
        f"DescribeEndpointConfig '{config_name}'", sagemaker.describe_endpoint_config, EndpointConfigName=config_name
    )
    models = [v["ModelName"] for v in config["ProductionVariants"]]
    _call(f"DeleteEndpoint '{name}'", sagemaker.delete_endpoint, EndpointName=name)
    _call(f"DeleteEndpointConfig '{config_name}'", sagemaker.delete_endpoint_config, EndpointConfigName=config_name)
    for model in models:
        _call(f"DeleteModel '{model}'", sagemaker.delete_model, ModelName=model)
    return {"endpoints": [name], "endpoint_configs": [config_name], "models": models}
