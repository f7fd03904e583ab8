"""``buildah``: build (and push) the serving image without a Docker daemon.

Where no Docker engine runs (CI containers, locked-down hosts) buildah builds the same Dockerfile
as a plain process: ``buildah bud`` with the ``vfs`` storage driver and ``chroot`` isolation,
which need neither a daemon, overlayfs nor user namespaces (the ``STORAGE_DRIVER`` and
``BUILDAH_ISOLATION`` environment variables, buildah's own, choose others). The host's CA bundle
is mounted read-only into ``RUN`` steps so ``pip`` trusts the same certificates as the host
(e.g. behind a TLS-inspecting proxy); it is a build-time mount and does not end up in the image.
The registry password reaches ``buildah login`` on stdin, never a command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from ncfctl.aws.ecr import RegistryLogin
from ncfctl.serving.docker_engine import PLATFORM, EngineStatus, stream_command

HOST_CERTS = Path("/etc/ssl/certs")


def global_flags() -> list[str]:
    """``--storage-driver`` for every buildah call (``STORAGE_DRIVER``, default vfs)."""
    return ["--storage-driver", os.environ.get("STORAGE_DRIVER", "vfs")]


def command(*args: str) -> list[str]:
    return [shutil.which("buildah") or "buildah", *global_flags(), *args]


def status(timeout: float) -> EngineStatus:
    """Whether buildah is installed and runs here (``buildah version`` within ``timeout``)."""
    if shutil.which("buildah") is None:
        return EngineStatus(False, "no buildah on PATH")
    try:
        proc = subprocess.run(command("version"), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return EngineStatus(False, f"`buildah version` did not answer within {timeout:g} s")
    if proc.returncode != 0:
        said = (proc.stderr + proc.stdout).splitlines()
        reason = next((ln.strip() for ln in said if ln.strip()), f"exit {proc.returncode}")
        return EngineStatus(False, f"buildah does not run here: {reason}")
    version = next((ln.split(":", 1)[1].strip() for ln in proc.stdout.splitlines() if ln.startswith("Version:")), "")
    return EngineStatus(True, f"buildah {version}".strip())


def has_image(name: str, timeout: float) -> bool:
    """Whether buildah's storage already holds the image ``name`` (a build from it needs no registry)."""
    try:
        proc = subprocess.run(command("inspect", "--type", "image", name), capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def build_command(context: Path, tag: str, build_args: Mapping[str, str]) -> list[str]:
    args = [
        "bud",
        "--isolation",
        os.environ.get("BUILDAH_ISOLATION", "chroot"),
        "--network",
        "host",
        "--platform",
        PLATFORM,
        "--tag",
        tag,
    ]
    if HOST_CERTS.is_dir():
        args += ["--volume", f"{HOST_CERTS}:{HOST_CERTS}:ro"]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    return command(*args, str(context))


def build(context: Path, tag: str, build_args: Mapping[str, str], on_line: Callable[[str], None] | None = None) -> None:
    """``buildah bud`` the context into local storage as ``tag``."""
    stream_command(build_command(context, tag, build_args), f"buildah bud {context}", on_line)


def push(local_tag: str, remote_tag: str, login: RegistryLogin, on_line: Callable[[str], None] | None = None) -> None:
    """Log in to the registry (password on stdin) and push the local image to ``remote_tag``."""
    stream_command(
        command("login", "--username", login.username, "--password-stdin", login.registry),
        f"buildah login {login.registry}",
        on_line,
        stdin=login.password,
    )
    stream_command(command("push", local_tag, f"docker://{remote_tag}"), f"buildah push {remote_tag}", on_line)
