"""boto3 sessions and clients built from ``config.aws`` (region, profile, endpoint_url, retries).

``endpoint_url`` points every client at one endpoint (moto's server in tests). Credentials are
never logged; :func:`require_credentials` turns "no credentials" into one clear line.
"""

from __future__ import annotations

from functools import cache

import boto3
import botocore
import botocore.config
import botocore.exceptions

from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError

RETRIES = botocore.config.Config(retries={"max_attempts": 8, "mode": "adaptive"}, connect_timeout=10, read_timeout=60)


@cache
def _session(profile: str | None, region: str) -> boto3.session.Session:
    try:
        return boto3.session.Session(profile_name=profile, region_name=region)
    except botocore.exceptions.ProfileNotFound as exc:
        raise NcfError(f"aws.profile: {exc}") from None


def session(aws: AwsConfig) -> boto3.session.Session:
    return _session(aws.profile, aws.region)


def client(aws: AwsConfig, service: str):
    """A boto3 client for ``service`` with adaptive retries and the configured endpoint."""
    return session(aws).client(service, endpoint_url=aws.endpoint_url, config=RETRIES)


def has_credentials(aws: AwsConfig) -> bool:
    try:
        return session(aws).get_credentials() is not None
    except NcfError:
        return False


@cache
def _known_regions() -> frozenset[str]:
    """Every region botocore's endpoint data lists for SageMaker, in every partition (aws, aws-cn, aws-us-gov, ...)."""
    session = boto3.session.Session()
    return frozenset(
        region
        for partition in session.get_available_partitions()
        for region in session.get_available_regions("sagemaker", partition_name=partition)
    )


def check_region(aws: AwsConfig) -> None:
    """One line for a region SageMaker does not have (a typo would otherwise surface as a connection error)."""
    if aws.region not in _known_regions():
        raise NcfError(
            f"aws.region '{aws.region}' is not a SageMaker region known to botocore {botocore.__version__}",
            hint="e.g. us-east-1, eu-west-1, ap-east-1, cn-north-1; upgrade boto3 for a region newer than it",
        )


def require_credentials(aws: AwsConfig, what: str) -> None:
    check_region(aws)
    if not has_credentials(aws):
        raise NcfError(
            f"{what} needs AWS credentials and none were found",
            hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or aws.profile",
        )


def require(value: str | None, key: str, what: str) -> str:
    """A required AWS setting, or one line naming the config key and its env variable."""
    if not value:
        env = "NCFCTL_" + key.upper().replace(".", "__")
        raise NcfError(f"{what} needs config key '{key}' (set it in the config file or {env})")
    return value


def call(what: str, fn, **kwargs):
    """``fn(**kwargs)``; a service error becomes one line ``SageMaker <what>: <Code>: <Message>``."""
    try:
        return fn(**kwargs)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"SageMaker {what}: {error_message(exc)}") from None


def not_found(exc: botocore.exceptions.ClientError) -> bool:
    """SageMaker's "no such resource": ``ResourceNotFound``, or a ``ValidationException`` "Could not find ..."."""
    err = exc.response.get("Error", {})
    code, message = err.get("Code", ""), err.get("Message", "")
    return code in {"ResourceNotFound", "ResourceNotFoundException"} or (
        code == "ValidationException" and "Could not find" in message
    )


def error_message(exc: botocore.exceptions.ClientError) -> str:
    err = exc.response.get("Error", {})
    return f"{err.get('Code', 'Error')}: {err.get('Message', str(exc))}"
