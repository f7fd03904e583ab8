"""``ncfctl deploy --backend local``: the image's build context served as a background process.

The server is exactly what the image would run (the context's own copy of ``ncf_serving`` first on
``PYTHONPATH``, the context's ``model/`` as the model directory) on ``serving.host``, so what is
tested locally is what ships: a master process and its workers (``serving.workers``, passed as
``NCF_WORKERS``; default one per vCPU). It runs in its own session, outliving the CLI, and writes
its log into the deployment artifact. The artifact records the master's pid *and* its start time
(a pid alone can be recycled by an unrelated process, and ``deploy stop`` must never signal one of
those), and the workers and threads per worker the server reports.

The artifact is committed (status ``creating``) as soon as the server is spawned, before the wait
for ``/ping``, so a deploy killed during start-up (even by SIGKILL) leaves a record that
``deploy stop`` acts on; the record also names the deploying ncfctl process, so a later ``deploy``
recognises such an abandoned start-up and stops its server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from ncfctl.artifacts import DeploymentInfo, ReuseKey
from ncfctl.config import Config
from ncfctl.errors import NcfError
from ncfctl.serving.build_image import MODEL_DIR
from ncfctl.serving.server_env import server_environment
from ncfctl.workspace import Artifact, Workspace

SERVER_MODULE = "ncf_serving.serve"
SERVER_LOG = "server.log"
IMAGE_HINT = "build an image first, or name one with `image`"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Fail early on a taken port: otherwise /ping could be answered by whatever already listens there."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise NcfError(
                f"deploy.port {port}: {host}:{port} is not free ({exc.strerror})",
                hint="set deploy.port 0",
                settings=("deploy.port",),
            ) from None


def _log_line(line: str) -> tuple[bool, str]:
    """(is it an error?, short text) for one log line: the server's JSON lines or plain text."""
    try:
        doc = json.loads(line)
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        return bool(re.search(r"\b(error|exception|traceback)\b", line, re.IGNORECASE)), line
    text = str(doc.get("message", line))
    if doc.get("error"):
        text += f": {doc['error']}"
    return str(doc.get("level", "")).lower() in {"error", "critical", "fatal"}, text


def log_excerpt(path: Path, lines: int = 2) -> str:
    """The last error lines of the server log (else its last lines), joined into one line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            tail = [_log_line(ln.strip()) for ln in deque((ln for ln in fh if ln.strip()), maxlen=200)]
    except OSError:
        return "no log"
    errors = [text for is_error, text in tail if is_error]
    return " | ".join(errors[-lines:] or [text for _, text in tail[-lines:]]) or "empty log"


def server_command(host: str, port: int, model_dir: Path) -> list[str]:
    return [sys.executable, "-m", SERVER_MODULE, "--host", host, "--port", str(port), "--model-dir", str(model_dir)]


def spawn_server(config: Config, context: Path, port: int, log_path: Path) -> subprocess.Popen:
    """Start the server detached (own session): Ctrl-C on a later command does not reach it."""
    env = {
        **os.environ,
        **server_environment(config.serving),
        "PYTHONPATH": os.pathsep.join(p for p in (str(context), os.environ.get("PYTHONPATH", "")) if p),
        "PYTHONUNBUFFERED": "1",
    }
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            server_command(config.serving.host, port, context / MODEL_DIR),
            cwd=context,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def ping(url: str, timeout: float = 2.0) -> int | None:
    """``GET /ping`` status code, or None when nothing answers."""
    try:
        return httpx.get(f"{url}/ping", timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout: float, on_wait=None) -> float:
    """Poll ``/ping`` until 200; seconds taken. Dies or times out -> one line with the log's tail."""
    start = time.monotonic()
    while True:
        code = proc.poll()
        if code is not None:
            raise NcfError(f"server exited with code {code} before /ping answered: {log_excerpt(log_path)}")
        status = ping(url, timeout=1.0)
        elapsed = time.monotonic() - start
        if status == 200:
            return elapsed
        if on_wait is not None:
            on_wait(elapsed, status)
        if elapsed > timeout:
            raise NcfError(
                f"server did not answer /ping with 200 within {timeout:g} s (last: {status}): {log_excerpt(log_path)}",
                hint="raise deploy.start_timeout",
            )
        time.sleep(0.2)


def server_plan(url: str) -> dict[str, int] | None:
    """The running server's worker processes and threads per worker (its ``/metrics`` gauges), or None."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{url}/metrics", timeout=5.0).text
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    except (httpx.HTTPError, ValueError):
        return None
    if "ncf_workers" not in samples or "ncf_worker_threads" not in samples:
        return None
    return {"workers": int(samples["ncf_workers"]), "threads": int(samples["ncf_worker_threads"])}


def stop_process(proc: psutil.Process, grace: float) -> str:
    """SIGTERM (the server drains its workers), then SIGKILL to it and its workers after ``grace`` seconds."""
    try:
        proc.terminate()
        proc.wait(grace)
        return "terminated"
    except psutil.TimeoutExpired:
        for process in [*proc.children(recursive=True), proc]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        proc.wait(5)
        return "killed"
    except psutil.NoSuchProcess:
        return "already gone"


def process_identity(proc: psutil.Process) -> dict[str, Any]:
    return {"pid": proc.pid, "started": proc.create_time()}


def same_process(pid: Any, started: Any) -> psutil.Process | None:
    """Process ``pid`` if it still runs and started at ``started`` (else the pid was recycled or it ended)."""
    try:
        proc = psutil.Process(int(pid))
        if abs(proc.create_time() - float(started)) > 0.01 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError, ValueError):
        return None


def our_process(info: DeploymentInfo) -> psutil.Process | None:
    """The recorded server process if it still runs and is still ours (same start time, our module)."""
    proc = same_process(info.pid, info.pid_started)
    try:
        return proc if proc is not None and SERVER_MODULE in " ".join(proc.cmdline()) else None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def stop_abandoned_starts(config: Config, workspace: Workspace) -> None:
    """Stop servers whose ``deploy`` died before ``/ping`` answered (a deploy still waiting is left alone)."""
    for deployment in workspace.list("deployment"):
        info = deployment.manifest.info
        if info.backend != "local" or info.status != "creating":
            continue
        deployer = info.deployer or {}
        if same_process(deployer.get("pid"), deployer.get("started")) is not None:
            continue
        proc = our_process(info)
        how = stop_process(proc, config.deploy.stop_grace) if proc is not None else "not running"
        error = f"start-up abandoned: ncfctl deploy (pid {deployer.get('pid')}) ended before /ping answered"
        workspace.update(deployment, info=info.updated(status="failed", error=error, stop=how))


def local_reuse_key(config: Config) -> ReuseKey:
    """Any running server of the same image will do, whatever its settings (the pipeline also pings it)."""
    recorded = {"deploy": config.deploy.model_dump(), "serving": config.serving.model_dump()}
    return ReuseKey("deployment", recorded, compared=(), where={"status": "running"})


def start_local(config: Config, workspace: Workspace, image: str | None = None, on_wait=None) -> Artifact:
    """Serve an image's build context on ``serving.host``; the committed ``deployment`` artifact."""
    source = workspace.resolve(image, "image", IMAGE_HINT, settings=("image",))
    context = source.verify(source.manifest.info.context)  # the server code and the bundle
    if not (context / MODEL_DIR).is_dir():
        raise NcfError(f"image {source.id} has no build context with a model at {context / MODEL_DIR}")
    stop_abandoned_starts(config, workspace)
    host = config.serving.host
    if config.deploy.port:
        check_port_free(host, config.deploy.port)
    port = config.deploy.port or free_port(host)
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"  # a wildcard bind is reached via loopback
    proc = None
    try:
        with workspace.create(
            "deployment",
            parent=source.id,
            config=local_reuse_key(config).config,
            info=DeploymentInfo(backend="local", image=source.id, compiled=source.manifest.info.compiled),
        ) as writer:
            log_path = workspace.kind_dir("deployment") / writer.id / SERVER_LOG  # where it lands on commit
            proc = spawn_server(config, context, port, writer.path / SERVER_LOG)
            server = process_identity(psutil.Process(proc.pid))
            writer.manifest.info = writer.manifest.info.updated(
                url=url,
                model_dir=str(context / MODEL_DIR),
                log=str(log_path),
                status="creating",
                pid=server["pid"],
                pid_started=server["started"],
                runtime=source.manifest.info.runtime,
                deployer=process_identity(psutil.Process()),
            )
    except BaseException:  # no record was committed: nothing else would ever stop this server
        if proc is not None and proc.poll() is None:
            stop_process(psutil.Process(proc.pid), config.deploy.stop_grace)
        raise
    deployment = writer.artifact  # committed: from here on `deploy stop` and a later deploy know this server
    info = deployment.manifest.info
    try:
        ready = wait_ready(url, proc, log_path, config.deploy.start_timeout, on_wait)
    except BaseException as exc:
        if proc.poll() is None:  # timed out or interrupted while still running
            stop_process(psutil.Process(proc.pid), config.deploy.stop_grace)
        error = str(exc) if isinstance(exc, NcfError) else f"interrupted ({type(exc).__name__})"
        workspace.update(deployment, info=info.updated(status="failed", error=error))
        if isinstance(exc, NcfError):  # keep the attempt and its log: that is where the reason is
            raise NcfError(f"{exc.message} (log: {log_path})", hint=exc.hint) from None
        raise
    return workspace.update(
        deployment,
        info=info.updated(status="running", **(server_plan(url) or {})),
        metrics={"startup_seconds": round(ready, 3)},
    )


def local_status(deployment: Artifact) -> dict[str, Any]:
    """Process and ``/ping`` state of a local deployment."""
    info = deployment.manifest.info
    alive = our_process(info) is not None
    code = ping(info.url) if alive else None
    state = "running" if code == 200 else "unhealthy" if alive else "stopped"
    return {"state": state, "process": "alive" if alive else "gone", "ping": code}


def stop_local(config: Config, workspace: Workspace, deployment: Artifact) -> Artifact:
    """Stop the recorded server (only if it is still ours) and mark the deployment stopped."""
    proc = our_process(deployment.manifest.info)
    how = stop_process(proc, config.deploy.stop_grace) if proc is not None else "not running"
    return workspace.update(
        deployment,
        info=deployment.manifest.info.updated(status="stopped", stopped=datetime.now(UTC).isoformat(), stop=how),
    )
