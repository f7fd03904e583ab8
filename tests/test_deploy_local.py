"""``ncfctl deploy --backend local`` end to end: a REAL server subprocess on a free loopback port.

build-image -> deploy -> invoke (every form, through the CLI subprocess) -> --status -> --stop,
plus the failure paths: a server that dies on a broken model, a taken port, and a recorded pid
that now belongs to some other process (which --stop must leave alone).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import psutil
import pytest
from conftest import rerecord

from ncfctl.serving.deploy_local import our_process
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
        proc = our_process(deployment.manifest.info) if "pid" in deployment.manifest.info else None
        if proc is not None:
            proc.kill()


def cli_json(run_cli, *args: str) -> dict:
    return json.loads(run_cli(*args, "--json").stdout)


def onnx_score(model_dir, user: int, item: int) -> float:
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    (scores,) = session.run(None, {"user": np.array([user]), "item": np.array([item])})
    return float(scores[0])


def test_deploy_invoke_status_stop(run_cli, image, tmp_path):
    deployed = cli_json(run_cli, "deploy", "--backend", "local", "--port", "0")
    url, model_dir = deployed["url"], Path(image["context"]) / "model"
    assert deployed["status"] == "running" and deployed["image"] == image["image_artifact"]
    assert url.startswith("http://127.0.0.1:") and httpx.get(f"{url}/ping").status_code == 200
    assert psutil.pid_exists(deployed["pid"])

    pair = cli_json(run_cli, "invoke", "--user", "u1", "--item", "i3")
    assert pair["deployment"] == deployed["deployment"] and pair["target"] == url
    response = pair["results"][0]["response"]
    assert response["user_id"] == "u1" and response["item_id"] == "i3"
    assert response["score"] == pytest.approx(onnx_score(model_dir, 1, 3), abs=1e-5)

    top = cli_json(run_cli, "invoke", "--user", "u1", "--top-k", "5")["results"][0]["response"]
    scores = [i["score"] for i in top["items"]]
    assert len(top["items"]) == 5 and scores == sorted(scores, reverse=True)
    with np.load(model_dir / "seen_items.npz") as seen:
        seen_u1 = {f"i{i}" for i in seen["indices"][seen["indptr"][1] : seen["indptr"][2]]}
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

    status = cli_json(run_cli, "deploy", "--status")
    assert status["live"] == {"state": "running", "process": "alive", "ping": 200}

    stopped = cli_json(run_cli, "deploy", "--stop")
    assert stopped["status"] == "stopped" and stopped["stop"] == "terminated"  # SIGTERM was enough
    assert not psutil.pid_exists(deployed["pid"]) or psutil.Process(deployed["pid"]).status() == psutil.STATUS_ZOMBIE
    log = Path(deployed["log"]).read_text()
    assert '"message": "server stopped"' in log and '"signal": "SIGTERM"' in log  # graceful shutdown
    assert cli_json(run_cli, "deploy", "--status")["live"]["state"] == "stopped"


def test_server_that_dies_reports_its_log_tail(run_cli, image, workdir):
    (Path(image["context"]) / "model" / "fastpath.npz").unlink()  # the server cannot load this bundle
    rerecord(Workspace(workdir).get(image["image_artifact"]))  # past ncfctl's own check: the server's must catch it
    proc = run_cli("deploy", "--backend", "local", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    message = " ".join(proc.stderr.split())  # undo Rich's wrapping
    assert "server exited with code 1 before /ping answered: model failed to load:" in message
    assert "fastpath.npz: is missing" in message
    (failed,) = Workspace(workdir).list("deployment")  # the attempt is recorded, with the server's log
    assert failed.manifest.info["status"] == "failed" and f"(log: {failed.path / 'server.log'})" in message
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
            stopped = cli_json(run_cli, "deploy", "--stop", "--deployment", w.artifact.id)
            assert stopped["stop"] == "not running" and stopped["status"] == "stopped"
            assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
