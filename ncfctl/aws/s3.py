"""S3 transfers that report their bytes as progress, and ``s3://`` URI handling."""

from __future__ import annotations

import os
from pathlib import Path

import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from ncfctl.aws.clients import client, error_message
from ncfctl.config import AwsConfig
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress

TRANSFER = TransferConfig(multipart_threshold=64 * 1024 * 1024, max_concurrency=4)


def parse_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    bucket, _, key = uri[5:].partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise NcfError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    return bucket, key


def uri(bucket: str, *parts: str) -> str:
    return "s3://" + "/".join([bucket, *(p.strip("/") for p in parts if p)])


def check_bucket(aws: AwsConfig, bucket: str) -> None:
    """One clear line if the bucket does not exist or is not ours."""
    try:
        client(aws, "s3").head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in {"404", "NoSuchBucket", "NotFound"}:
            raise NcfError(f"S3 bucket '{bucket}' does not exist (config key aws.bucket)") from None
        raise NcfError(f"S3 bucket '{bucket}': {error_message(exc)}") from None


def upload_file(aws: AwsConfig, path: str | os.PathLike, target_uri: str, progress: Progress = NO_PROGRESS) -> str:
    """Upload ``path`` to ``target_uri``, one progress task counting its bytes."""
    path = Path(path)
    bucket, key = parse_uri(target_uri)
    task = progress.task(f"upload {path.name}", total=path.stat().st_size)
    try:
        client(aws, "s3").upload_file(str(path), bucket, key, Config=TRANSFER, Callback=task.advance)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"upload {path} -> {target_uri}: {error_message(exc)}") from None
    except Exception as exc:  # S3UploadFailedError wraps ClientError text
        raise NcfError(f"upload {path} -> {target_uri}: {exc}") from None
    return target_uri


def delete_object(aws: AwsConfig, target_uri: str) -> None:
    """Remove an object this run uploaded (cleanup after a later step failed)."""
    bucket, key = parse_uri(target_uri)
    try:
        client(aws, "s3").delete_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"delete {target_uri}: {error_message(exc)}") from None


def download_file(aws: AwsConfig, source_uri: str, path: str | os.PathLike, progress: Progress = NO_PROGRESS) -> Path:
    """Download ``source_uri`` to ``path`` (written to a temp name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    bucket, key = parse_uri(source_uri)
    s3 = client(aws, "s3")
    try:
        size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        task = progress.task(f"download {Path(key).name}", total=size)
        tmp = path.with_name(f".{path.name}.part")
        s3.download_file(bucket, key, str(tmp), Config=TRANSFER, Callback=task.advance)
        os.replace(tmp, path)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"download {source_uri}: {error_message(exc)}") from None
    return path
