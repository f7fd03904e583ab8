"""The real server under faults: broken bodies, slow and idle connections, wrong paths and ports, no phone-home.

Each test starts ``python -m ncf_serving serve`` on a loopback port and speaks raw sockets where
a well-behaved HTTP client could not produce the fault.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import ServingProcess
from ncf_serving.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

from ncfctl.config import load_config
from ncfctl.serving.server_env import server_environment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from slow_clients import slow_connections  # noqa: E402 - the benchmark's probe, on sys.path just above

READ_SECONDS = 1  # NCF_REQUEST_READ_SECONDS for the shared server
HEAD = b"POST /invocations HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    served = ServingProcess(
        tiny_bundle, tmp_path_factory.mktemp("faults") / "server.log", {"NCF_REQUEST_READ_SECONDS": str(READ_SECONDS)}
    )
    served.wait_ready()
    yield served
    served.stop()


def requests_total(server: ServingProcess) -> dict[str, int]:
    """``ncf_requests_total`` for ``/invocations``, by status (summed over kinds and workers)."""
    text = httpx.get(f"{server.url}/metrics").text
    totals: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ncf_requests_total" and sample.labels.get("path") == "/invocations":
                status = sample.labels["status"]
                totals[status] = totals.get(status, 0) + int(sample.value)
    return totals


def log_lines(server: ServingProcess) -> list[dict]:
    """The server's JSON log lines, without the access lines of the tests' own ``/metrics`` reads."""
    time.sleep(0.2)  # let the server flush
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("path") != "/metrics"]


def raw_exchange(server: ServingProcess, data: bytes, wait: float = 0.2) -> bytes:
    """Send ``data``, then close after ``wait`` seconds; whatever the server answered meanwhile."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(data)
        sock.settimeout(wait)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""


def test_a_client_that_disconnects_mid_body_is_one_line_and_no_500(server):
    before, lines_before = requests_total(server), len(log_lines(server))
    for _ in range(20):
        raw_exchange(server, HEAD + b'Content-Length: 1000\r\n\r\n{"user_id": 1', wait=0.05)
    after = requests_total(server)
    assert after.get("499", 0) - before.get("499", 0) == 20 and "500" not in after
    new = log_lines(server)[lines_before:]
    assert [(line["logger"], line["status"]) for line in new] == [("ncf_serving.access", 499)] * 20
    assert "Traceback" not in server.log()


def test_a_malformed_chunked_body_is_a_400_in_one_line(server):
    before, lines_before = requests_total(server), len(log_lines(server))
    for _ in range(5):
        answer = raw_exchange(server, HEAD + b"Transfer-Encoding: chunked\r\n\r\nZZZ\r\nnot hex\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")
    after = requests_total(server)
    assert after.get("400", 0) - before.get("400", 0) == 5 and "500" not in after
    new = log_lines(server)[lines_before:]
    assert len(new) == 5 and {(line["logger"], line["status"]) for line in new} == {("ncf_serving.access", 400)}


def test_a_malformed_request_head_is_still_logged(server):
    lines_before = len(log_lines(server))
    assert raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert [line["message"] for line in log_lines(server)[lines_before:]] == ["Invalid HTTP request received."]


@pytest.mark.slow
def test_idle_and_slowloris_connections_are_closed_after_the_read_deadline(server):
    before, lines_before = requests_total(server), len(log_lines(server))
    closed = slow_connections("127.0.0.1", server.port, 300, seconds=READ_SECONDS + 5)
    for kind, times in closed.items():
        assert None not in times, f"{times.count(None)} {kind} connections still open"
        assert min(times) >= READ_SECONDS - 0.1 and max(times) <= READ_SECONDS + 3, (kind, min(times), max(times))
    assert requests_total(server).get("408", 0) - before.get("408", 0) == 100  # stalled bodies, one line each
    new = log_lines(server)[lines_before:]
    assert sum(line["message"] == "request head not complete in time" for line in new) == 100
    assert httpx.get(f"{server.url}/ping").status_code == 200


def test_the_deadline_is_per_request_not_per_connection(server):
    """A keep-alive client sending requests for longer than the deadline keeps its connection."""
    with httpx.Client(base_url=server.url) as client:
        for _ in range(4):
            assert client.post("/invocations", json={"user_id": "u1", "top_k": 3}).status_code == 200
            time.sleep(READ_SECONDS / 2)
        assert client.get("/ping").status_code == 200
        assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [("POST", "/invocations/", 404, "path"), ("POST", "/nothing", 404, "path"), ("GET", "/invocations", 405, "method")],
)
def test_unknown_routes_are_json_4xx_never_a_redirect(server, method, path, status, field):
    response = httpx.request(method, f"{server.url}{path}", json={"user_id": "u1", "top_k": 3})
    assert response.status_code == status and response.json()["field"] == field
    assert "POST /invocations" in response.json()["error"] and "location" not in response.headers


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (["--port", "99999"], {}, "error: --port=99999 must be between 0 and 65535"),
        (["--port", "-1"], {}, "error: --port=-1 must be between 0 and 65535"),
        (["--port", "http"], {}, "error: --port='http' is not an integer"),
        ([], {"NCF_PORT": "99999"}, "error: environment variable NCF_PORT=99999 must be between 0 and 65535"),
    ],
)
def test_an_out_of_range_port_is_refused_in_one_line(tmp_path, flags, env, message):
    command = [sys.executable, "-m", "ncf_serving", "serve", "--host", "127.0.0.1", "--model-dir", str(tmp_path)]
    proc = subprocess.run(
        [*command, *flags], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=60
    )
    assert (proc.returncode, proc.stderr.strip()) == (2, message)


def test_onnxruntime_telemetry_is_off_in_the_server(tiny_bundle, tmp_path):
    """ORT 1.32 writes a device id and an event cache under ~/.cache when its telemetry starts."""
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "ORT_DISABLE_TELEMETRY": "0"}
    served = ServingProcess(tiny_bundle, tmp_path / "server.log", env)
    try:
        served.wait_ready()
        assert httpx.post(f"{served.url}/invocations", json={"user_id": "u1", "top_k": 3}).status_code == 200
    finally:
        served.stop()
    assert [str(p.relative_to(home)) for p in home.rglob("*")] == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to see connection attempts")
def test_serving_opens_no_outbound_connection(tiny_bundle, tmp_path):
    """Under strace: loading the onnxruntime model and serving for 15 s makes no connect() off this host.

    ORT 1.32's telemetry uploader first looks up its collector about 9 s after the import (DNS,
    port 53); 15 s covers that and its retry. psutil samples the sockets meanwhile too.
    """
    trace = tmp_path / "connect.trace"
    wrapper = ("strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace))
    served = ServingProcess(tiny_bundle, tmp_path / "server.log", {"HOME": str(tmp_path)}, wrapper=wrapper)
    foreign = set()
    try:
        served.wait_ready()
        assert httpx.post(f"{served.url}/invocations", json={"user_id": "u1", "top_k": 3}).status_code == 200
        (server,) = psutil.Process(served.proc.pid).children()  # strace's tracee: the server
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for conn in server.net_connections(kind="inet"):
                if conn.status != psutil.CONN_LISTEN and conn.raddr and conn.raddr.ip not in ("127.0.0.1", "::1"):
                    foreign.add(conn.raddr)
            time.sleep(0.05)
    finally:
        for tracee in psutil.Process(served.proc.pid).children():  # strace detaches on SIGTERM: stop the server first
            tracee.terminate()
            tracee.wait(30)
        served.stop()
    attempts = [line for line in trace.read_text().splitlines() if "connect(" in line]
    outbound = [
        line
        for line in attempts
        if "htons(53)" in line or ("AF_INET" in line and not re.search(r'"127\.0\.0\.1"|"::1"', line))
    ]
    assert outbound == [] and foreign == set()


def test_ncfctl_passes_its_read_deadline_to_the_server():
    environment = server_environment(load_config().serving)
    assert Settings.from_env(environment).request_read_seconds == Settings(model_dir=Path()).request_read_seconds == 20
