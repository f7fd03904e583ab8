"""Shared fixtures: a temp workspace, moto's real server on 127.0.0.1, and ncfctl as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A fresh work directory, also exported as NCFCTL_WORKDIR for in-process service calls."""
    path = tmp_path / "output"
    monkeypatch.setenv("NCFCTL_WORKDIR", str(path))
    return path


@pytest.fixture
def run_cli(workdir):
    """Run ``ncfctl ARGS`` as a real subprocess against the temp workspace."""

    def run(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600):
        full_env = {**os.environ, "NCFCTL_WORKDIR": str(workdir), "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "ncfctl", *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=workdir.parent,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ncfctl {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    return run


@pytest.fixture(scope="session")
def moto_server():
    """moto's ThreadedMotoServer on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """Fake credentials + every ncfctl AWS client pointed at the moto server; resets moto state."""
    import httpx

    httpx.post(f"{moto_server}/moto-api/reset")
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "NCFCTL_AWS__ENDPOINT_URL": moto_server,
        "NCFCTL_AWS__REGION": "us-east-1",
        "NCFCTL_AWS__BUCKET": "ncfctl-test",
        "NCFCTL_AWS__ROLE_ARN": "arn:aws:iam::123456789012:role/SageMakerRole",
        "NCFCTL_AWS__POLL_SECONDS": "0.05",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket="ncfctl-test")
    return values
