"""The ``docker`` CLI, driven as a subprocess: engine detection, build, login, push.

The CLI (not the Docker SDK) is used because it is what users already have configured: BuildKit,
contexts, credential helpers and remote engines all work unchanged. Every call has a timeout or
streams output, so a missing or wedged engine never hangs ``ncfctl``; the registry password goes
to ``docker login`` on stdin, never on a command line or in a log.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ncfctl.aws.ecr import RegistryLogin
from ncfctl.errors import NcfError

PLATFORM = "linux/amd64"  # SageMaker CPU instances (ml.c5 and friends) are x86-64


@dataclass(frozen=True)
class EngineStatus:
    available: bool
    detail: str  # server version when available, else why not


def engine_status(timeout: float) -> EngineStatus:
    """Ask the engine for its version; a missing client, a refused socket or a timeout all mean no engine."""
    docker = shutil.which("docker")
    if docker is None:
        return EngineStatus(False, "no docker client on PATH")
    try:
        proc = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return EngineStatus(False, f"`docker info` did not answer within {timeout:g} s")
    version = proc.stdout.strip()
    if proc.returncode != 0 or not version or "error" in version.lower():
        reason = next((ln.strip() for ln in proc.stderr.splitlines() if ln.strip()), f"exit {proc.returncode}")
        return EngineStatus(False, reason)
    return EngineStatus(True, version)


def stream_command(
    argv: Sequence[str], what: str, on_line: Callable[[str], None] | None, stdin: str | None = None
) -> None:
    """Run ``argv``, feeding each output line to ``on_line``; a failure raises its last lines."""
    tail: deque[str] = deque(maxlen=5)
    with subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        if stdin is not None:
            proc.stdin.write(stdin)
            proc.stdin.close()
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                tail.append(line)
                if on_line is not None:
                    on_line(line)
        code = proc.wait()
    if code != 0:
        last = " | ".join(tail) or "no output"
        raise NcfError(f"{what} failed (exit {code}): {last}")


def _stream(args: Sequence[str], what: str, on_line: Callable[[str], None] | None, stdin: str | None = None) -> None:
    stream_command([shutil.which("docker") or "docker", *args], what, on_line, stdin)


def build(context: Path, tag: str, build_args: Mapping[str, str], on_line: Callable[[str], None] | None = None) -> None:
    """``docker build`` the context for SageMaker's platform."""
    args = ["build", "--platform", PLATFORM, "--tag", tag]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    _stream([*args, str(context)], f"docker build {context}", on_line)


def push(local_tag: str, remote_tag: str, login: RegistryLogin, on_line: Callable[[str], None] | None = None) -> None:
    """Log in to the registry (password on stdin), tag the local image and push it."""
    _stream(
        ["login", "--username", login.username, "--password-stdin", login.registry],
        f"docker login {login.registry}",
        on_line,
        stdin=login.password,
    )
    _stream(["tag", local_tag, remote_tag], f"docker tag {local_tag} {remote_tag}", on_line)
    _stream(["push", remote_tag], f"docker push {remote_tag}", on_line)
