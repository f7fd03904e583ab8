"""``ncfctl deploy --backend local`` end to end: a REAL server subprocess on a free loopback port.

build-image -> deploy -> invoke (every form, through the CLI) -> deploy status -> deploy stop,
plus the failure paths: a server that dies on a broken model, a taken port, and a recorded pid
that now belongs to some other process (which `deploy stop` must leave alone).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import psutil
import pytest
from conftest import rerecord

from ncfctl.serving.deploy_local import SERVER_MODULE, our_process
from ncfctl.workspace import Workspace

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}


@pytest.fixture
def image(compiled_artifact, workdir):
    """The image artifact (build context only, as with no Docker engine); stops any server left behind."""
    from ncfctl.config import load_config
    from ncfctl.serving.build_image import build_image

    built = build_image(load_config(overrides={"image.backend": "none"}), Workspace(workdir))
    yield {"image_artifact": built.artifact.id, "context": str(built.context)}
    for deployment in Workspace(workdir).list("deployment"):
        proc = our_process(deployment.manifest.info)
        if proc is not None:
            for process in [*proc.children(recursive=True), proc]:  # the server's workers outlive a killed master
                process.kill()


def cli_json(run_cli, *args: str) -> dict:
    return json.loads(run_cli(*args, "--json").stdout)


def onnx_score(model_dir, user: int, item: int) -> float:
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"user": np.array([user]), "item": np.array([item])})
    return float(scores[0])


def test_deploy_invoke_status_stop(run_cli, image, tmp_path):
    deployed = cli_json(run_cli, "deploy", "--backend", "local", "--port", "0", "--workers", "3")
    url, model_dir = deployed["url"], Path(image["context"]) / "model"
    assert deployed["status"] == "running" and deployed["image"] == image["image_artifact"]
    assert url.startswith("http://127.0.0.1:") and httpx.get(f"{url}/ping").status_code == 200
    workers = psutil.Process(deployed["pid"]).children()
    assert deployed["workers"] == len(workers) == 3 and deployed["threads"] >= 1  # --workers reached the server

    pair = cli_json(run_cli, "invoke", "--user", "u1", "--item", "i3")
    assert pair["deployment"] == deployed["id"] and pair["target"] == url
    response = pair["results"][0]["response"]
    assert response["user_id"] == "u1" and response["item_id"] == "i3"
    assert response["score"] == pytest.approx(onnx_score(model_dir, 1, 3), abs=1e-5)

    top = cli_json(run_cli, "invoke", "--user", "u1", "--top-k", "5")["results"][0]["response"]
    scores = [i["score"] for i in top["items"]]
    assert len(top["items"]) == 5 and scores == sorted(scores, reverse=True)
    indptr, indices = (
        np.load(model_dir / "seen_items" / "indptr.npy"),
        np.load(model_dir / "seen_items" / "indices.npy"),
    )
    seen_u1 = {f"i{i}" for i in indices[indptr[1] : indptr[2]]}
    assert seen_u1 and not seen_u1 & {i["item_id"] for i in top["items"]}

    requests = tmp_path / "requests.jsonl"
    lines = [
        {"user_id": "u2", "item_id": "i5"},
        {"instances": [{"user_id": "u2", "item_id": "i5"}, {"user_id": "u3", "item_id": "i6"}]},
        {"user_id": "u1", "top_k": 40, "exclude_seen": False},
    ]
    requests.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    replies = cli_json(run_cli, "invoke", "--file", str(requests))["results"]
    assert [r["request"] for r in replies] == lines
    assert replies[1]["response"]["scores"][0] == pytest.approx(replies[0]["response"]["score"], abs=1e-6)
    assert seen_u1 <= {i["item_id"] for i in replies[2]["response"]["items"]}  # seen items kept when asked
    table = run_cli("invoke", "--user", "u1", "--top-k", "3", env={"COLUMNS": "200"}).stdout
    assert "rank" in table and table.count(" u1 ") == 3 and f"({url})" in table

    unknown = run_cli("invoke", "--user", "nobody", "--item", "i3", env={"COLUMNS": "300"}, check=False)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert "answered 422: user_id: unknown user 'nobody'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1

    status = cli_json(run_cli, "deploy", "status")
    assert status["live"] == {"state": "running", "process": "alive", "ping": 200}

    stopped = cli_json(run_cli, "deploy", "stop")
    assert stopped["status"] == "stopped" and stopped["stop"] == "terminated"  # SIGTERM was enough
    for pid in [deployed["pid"], *(w.pid for w in workers)]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    log = Path(deployed["log"]).read_text()
    assert '"message": "server stopped"' in log and '"signal": "SIGTERM"' in log  # graceful shutdown
    assert cli_json(run_cli, "deploy", "status")["live"]["state"] == "stopped"


def test_server_that_dies_reports_its_log_tail(run_cli, image, workdir):
    (Path(image["context"]) / "model" / "fastpath" / "out_bias.npy").unlink()  # the server cannot load this bundle
    rerecord(Workspace(workdir).get(image["image_artifact"]))  # past ncfctl's own check: the server's must catch it
    proc = run_cli("deploy", "--backend", "local", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())  # undo Rich's wrapping
    assert "server exited with code 1 before /ping answered: model failed to load:" in message
    assert "fastpath/out_bias.npy: is missing" in message
    (failed,) = Workspace(workdir).list("deployment")  # the attempt is recorded, with the server's log
    assert failed.manifest.info.status == "failed" and f"(log: {failed.path / 'server.log'})" in message
    assert '"level": "error"' in (failed.path / "server.log").read_text()
    proc = run_cli("invoke", "--user", "u1", "--item", "i1", check=False)
    assert proc.returncode == 2 and "no running deployment" in proc.stderr


def test_taken_port_is_refused(run_cli, image):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("deploy", "--backend", "local", "--port", str(port), check=False)
    assert proc.returncode == 2 and f"--port {port}: 127.0.0.1:{port} is not free" in proc.stderr


def test_stop_leaves_a_foreign_process_alone(run_cli, workdir):
    """A recycled pid (same number, other program or other start time) must never be signalled."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = psutil.Process(sleeper.pid).create_time()
        for recorded_start in (started, started - 100):
            info = {"backend": "local", "status": "running", "url": "http://127.0.0.1:9", "pid": sleeper.pid}
            with Workspace(workdir).create("deployment", info={**info, "pid_started": recorded_start}) as w:
                pass
            stopped = cli_json(run_cli, "deploy", "stop", "--deployment", w.artifact.id)
            assert stopped["stop"] == "not running" and stopped["status"] == "stopped"
            assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def _gone(proc: psutil.Process, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def _deploy_killed_during_start_up(workdir) -> psutil.Process:
    """Run `ncfctl deploy` with a very long warm-up, SIGKILL it once its server listens; the server left behind."""
    env = {**os.environ, "NCFCTL_WORKDIR": str(workdir), "NCF_WARMUP_ROUNDS": "10000000"}
    command = [sys.executable, "-m", "ncfctl", "deploy", "--backend", "local"]
    deploy = subprocess.Popen(
        command, env=env, cwd=workdir.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            assert deploy.poll() is None and time.monotonic() < deadline, "deploy ended before its server listened"
            servers = [p for p in psutil.Process(deploy.pid).children() if SERVER_MODULE in " ".join(p.cmdline())]
            if servers and any(c.status == psutil.CONN_LISTEN for c in servers[0].net_connections()):
                return servers[0]  # listening, /ping 503 while it warms up: deploy is waiting for it
            time.sleep(0.05)
    finally:
        deploy.kill()
        deploy.wait()


@pytest.mark.slow
def test_a_deploy_killed_during_start_up_leaves_no_unknown_server(run_cli, image, workdir):
    """SIGKILL of `ncfctl deploy` while its server warms up: `deploy stop` stops it, and so does a later deploy."""
    orphans = []
    try:
        orphans.append(_deploy_killed_during_start_up(workdir))
        stopped = cli_json(run_cli, "deploy", "stop")
        assert stopped["pid"] == orphans[0].pid and stopped["stop"] == "terminated" and _gone(orphans[0])

        orphans.append(_deploy_killed_during_start_up(workdir))
        deployed = cli_json(run_cli, "deploy", "--backend", "local")
        assert deployed["status"] == "running" and _gone(orphans[1])
        (abandoned,) = [d for d in Workspace(workdir).list("deployment") if d.manifest.info.pid == orphans[1].pid]
        assert abandoned.manifest.info.status == "failed" and abandoned.manifest.info.stop == "terminated"
        assert "start-up abandoned: ncfctl deploy (pid" in abandoned.manifest.info.error
        assert cli_json(run_cli, "deploy", "stop")["id"] == deployed["id"]
    finally:
        for orphan in orphans:
            if orphan.is_running():
                orphan.kill()
