"""SageMaker real-time and serverless hosting: Model -> EndpointConfig -> Endpoint, created or updated in place.

An endpoint's configuration is immutable, so every deploy creates a fresh model and endpoint
config (names carry a timestamp) and then creates the endpoint or points the existing one at the
new config (``UpdateEndpoint`` is a blue/green swap with no downtime). A deploy is a
:class:`Rollout` in two halves, so the caller can record what exists in between:

* :func:`start` creates the model and config and creates or updates the endpoint. Before an
  update it removes the variant's autoscaling (SageMaker refuses to change the instance type of a
  scalable target, and a policy scaling the old fleet mid-swap fights the update) and asks
  SageMaker to retain the live variant's properties, so a variant the autoscaler scaled out keeps
  its instance count; the count is reset only when the instance type (or serverless/instances)
  changes. Data capture is never retained: the new config says what to capture.
* :func:`finish` waits for InService and checks the endpoint really serves the new config (a
  failed update rolls back to the old one and still ends InService), then deletes the previous
  config and its models. :func:`abandon` undoes a failed update: the new model and config go,
  the old autoscaling comes back. Nothing is orphaned either way.

Deleting tears down the endpoint together with the config and models it actually uses, read back
from SageMaker rather than from local records that may be stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import botocore.exceptions

from ncfctl.aws import autoscaling
from ncfctl.aws.clients import call, client, error_message, not_found
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError

VARIANT = "AllTraffic"


@dataclass(frozen=True)
class EndpointPlan:
    """Everything one deploy creates; names are unique per deploy except the endpoint's.

    The model is either an image + model data or a registered model package (which names both).
    ``serverless`` (MemorySizeInMB, MaxConcurrency) replaces the instance type and count.
    """

    endpoint_name: str
    model_name: str
    config_name: str
    role_arn: str
    environment: Mapping[str, str]
    image_uri: str | None = None
    model_data_url: str | None = None
    model_package_arn: str | None = None
    instance_type: str | None = None
    instance_count: int = 1
    serverless: Mapping[str, int] | None = None
    data_capture: Mapping[str, Any] | None = None

    def container(self) -> dict[str, Any]:
        if self.model_package_arn:
            return {"ModelPackageName": self.model_package_arn, "Environment": dict(self.environment)}
        return {"Image": self.image_uri, "ModelDataUrl": self.model_data_url, "Environment": dict(self.environment)}

    def variant(self) -> dict[str, Any]:
        variant: dict[str, Any] = {"VariantName": VARIANT, "ModelName": self.model_name}
        if self.serverless:
            variant["ServerlessConfig"] = dict(self.serverless)
        else:
            variant.update(InstanceType=self.instance_type, InitialInstanceCount=self.instance_count)
        return variant


@dataclass
class Rollout:
    """What :func:`start` did, for :func:`finish` or :func:`abandon`."""

    plan: EndpointPlan
    action: str  # created | updated
    previous_config: str | None = None
    suspended_scaling: dict[str, Any] | None = None  # the autoscaling removed before the update
    retained: list[str] = field(default_factory=list)  # variant properties SageMaker kept


def describe_endpoint(aws: AwsConfig, name: str) -> dict | None:
    """The endpoint's description, or None when it does not exist."""
    try:
        return client(aws, "sagemaker").describe_endpoint(EndpointName=name)
    except botocore.exceptions.ClientError as exc:
        if not_found(exc):
            return None
        raise NcfError(f"SageMaker DescribeEndpoint '{name}': {error_message(exc)}") from None


def _config_variants(aws: AwsConfig, config_name: str) -> list[dict[str, Any]]:
    config = call(
        f"DescribeEndpointConfig '{config_name}'",
        client(aws, "sagemaker").describe_endpoint_config,
        EndpointConfigName=config_name,
    )
    return config["ProductionVariants"]


def create_model_and_config(aws: AwsConfig, plan: EndpointPlan) -> None:
    """CreateModel and CreateEndpointConfig (one variant); a failed config takes its model with it."""
    sagemaker = client(aws, "sagemaker")
    call(
        f"CreateModel '{plan.model_name}'",
        sagemaker.create_model,
        ModelName=plan.model_name,
        ExecutionRoleArn=plan.role_arn,
        PrimaryContainer=plan.container(),
    )
    extra = {"DataCaptureConfig": dict(plan.data_capture)} if plan.data_capture else {}
    try:
        call(
            f"CreateEndpointConfig '{plan.config_name}'",
            sagemaker.create_endpoint_config,
            EndpointConfigName=plan.config_name,
            ProductionVariants=[plan.variant()],
            **extra,
        )
    except NcfError:
        call(f"DeleteModel '{plan.model_name}'", sagemaker.delete_model, ModelName=plan.model_name)
        raise


def delete_model_and_config(aws: AwsConfig, config_name: str, models: list[str] | None = None) -> list[str]:
    """Delete an endpoint config and its models (read from the config unless given); returns the models."""
    sagemaker = client(aws, "sagemaker")
    if models is None:
        models = [variant["ModelName"] for variant in _config_variants(aws, config_name)]
    call(f"DeleteEndpointConfig '{config_name}'", sagemaker.delete_endpoint_config, EndpointConfigName=config_name)
    for model in models:
        call(f"DeleteModel '{model}'", sagemaker.delete_model, ModelName=model)
    return models


def _retention(aws: AwsConfig, previous_config: str, plan: EndpointPlan) -> list[str]:
    """Variant properties to carry over from the live variant: the instance count, if the fleet is the same."""
    old = _config_variants(aws, previous_config)[0]
    same_fleet = not plan.serverless and "ServerlessConfig" not in old and old.get("InstanceType") == plan.instance_type
    return ["DesiredInstanceCount", "DesiredWeight"] if same_fleet else ["DesiredWeight"]


def start(aws: AwsConfig, plan: EndpointPlan) -> Rollout:
    """Create the model and config, then create the endpoint or start its update (see the module doc)."""
    sagemaker = client(aws, "sagemaker")
    existing = describe_endpoint(aws, plan.endpoint_name)
    if existing is not None and existing["EndpointStatus"] not in {"InService", "Failed"}:
        raise NcfError(
            f"SageMaker endpoint '{plan.endpoint_name}' is {existing['EndpointStatus']}; "
            "wait until it is InService before deploying again"
        )
    create_model_and_config(aws, plan)
    if existing is None:
        try:
            call(
                f"CreateEndpoint '{plan.endpoint_name}'",
                sagemaker.create_endpoint,
                EndpointName=plan.endpoint_name,
                EndpointConfigName=plan.config_name,
            )
        except NcfError:
            delete_model_and_config(aws, plan.config_name, [plan.model_name])
            raise
        return Rollout(plan, "created")
    rollout = Rollout(plan, "updated", previous_config=existing["EndpointConfigName"])
    try:
        rollout.retained = _retention(aws, rollout.previous_config, plan)
        rollout.suspended_scaling = autoscaling.current(aws, plan.endpoint_name, VARIANT)
        if rollout.suspended_scaling is not None:
            autoscaling.remove(aws, plan.endpoint_name, VARIANT)
        excluded = [
            p for p in ("DesiredInstanceCount", "DesiredWeight", "DataCaptureConfig") if p not in rollout.retained
        ]
        call(
            f"UpdateEndpoint '{plan.endpoint_name}'",
            sagemaker.update_endpoint,
            EndpointName=plan.endpoint_name,
            EndpointConfigName=plan.config_name,
            RetainAllVariantProperties=True,
            ExcludeRetainedVariantProperties=[{"VariantPropertyType": p} for p in excluded],
        )
    except NcfError:
        abandon(aws, rollout)
        raise
    return rollout


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


def finish(aws: AwsConfig, rollout: Rollout) -> dict:
    """Wait for InService on the new config, then delete the previous config and its models."""
    plan = rollout.plan
    described = wait_in_service(aws, plan.endpoint_name)
    if described.get("EndpointConfigName") != plan.config_name:
        reason = described.get("FailureReason") or "no failure reason given"
        raise NcfError(
            f"SageMaker endpoint '{plan.endpoint_name}' rolled back to {described.get('EndpointConfigName')}: "
            f"the update to {plan.config_name} failed: {reason}"
        )
    if rollout.previous_config and rollout.previous_config != plan.config_name:
        delete_model_and_config(aws, rollout.previous_config)
    return described


def abandon(aws: AwsConfig, rollout: Rollout) -> None:
    """After a failed update: delete the new model and config, put the old autoscaling back."""
    plan = rollout.plan
    if rollout.action != "updated":
        return
    live = describe_endpoint(aws, plan.endpoint_name) or {}
    if live.get("EndpointConfigName") != plan.config_name:
        delete_model_and_config(aws, plan.config_name, [plan.model_name])
    if rollout.suspended_scaling is not None:
        autoscaling.restore(aws, plan.endpoint_name, VARIANT, rollout.suspended_scaling)


def delete_endpoint(aws: AwsConfig, name: str) -> dict[str, list[str]]:
    """Delete the endpoint, its endpoint config and the models that config serves; returns what went."""
    sagemaker = client(aws, "sagemaker")
    existing = describe_endpoint(aws, name)
    if existing is None:
        raise NcfError(f"SageMaker endpoint '{name}' does not exist")
    config_name = existing["EndpointConfigName"]
    call(f"DeleteEndpoint '{name}'", sagemaker.delete_endpoint, EndpointName=name)
    models = delete_model_and_config(aws, config_name)
    return {"endpoints": [name], "endpoint_configs": [config_name], "models": models}
