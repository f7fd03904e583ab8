"""Amazon ECR: the repository an image is pushed to, and the registry login docker needs.

``build-image --push`` and the CodeBuild backend both need the repository to exist before the
push, so :func:`ensure_repository` creates it on first use (scan on push, immutable tags off so
``latest`` can move).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import botocore.exceptions

from ncfctl.aws.clients import client, error_message
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError


@dataclass(frozen=True)
class RegistryLogin:
    """What ``docker login`` needs; ``password`` is a 12-hour token and must never be logged."""

    registry: str
    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryLogin(registry={self.registry!r}, username={self.username!r}, password=***)"


def ensure_repository(aws: AwsConfig, name: str) -> str:
    """The repository URI (``<account>.dkr.ecr.<region>.amazonaws.com/<name>``), creating it if missing."""
    ecr = client(aws, "ecr")
    try:
        return ecr.describe_repositories(repositoryNames=[name])["repositories"][0]["repositoryUri"]
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
            raise NcfError(f"ECR repository '{name}' (aws.ecr_repository): {error_message(exc)}") from None
    try:
        created = ecr.create_repository(
            repositoryName=name,
            imageScanningConfiguration={"scanOnPush": True},
            imageTagMutability="MUTABLE",
        )
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"cannot create ECR repository '{name}' (aws.ecr_repository): {error_message(exc)}") from None
    return created["repository"]["repositoryUri"]


def registry_login(aws: AwsConfig) -> RegistryLogin:
    """Decode ECR's authorization token (``base64("AWS:<password>")``) for ``docker login``."""
    try:
        data = client(aws, "ecr").get_authorization_token()["authorizationData"][0]
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"ECR GetAuthorizationToken: {error_message(exc)}") from None
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = data["proxyEndpoint"].removeprefix("https://").removeprefix("http://")
    return RegistryLogin(registry=registry, username=username, password=password)
