"""The multi-worker server as a real process tree: readiness across workers, a killed worker replaced
without losing a request, SIGTERM draining every worker, metrics summed over workers, shared arrays."""

from __future__ import annotations

import json
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from ncf_serving.checksums import hash_folder
from prometheus_client.parser import text_string_to_metric_families

WORKERS = {"NCF_WORKERS": "2"}
TOP_K = {"user_id": "u1", "top_k": 5}


def workers_of(server, count: int = 2, timeout: float = 30.0) -> list[psutil.Process]:
    """The master's worker processes, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(server.proc.pid).children()
        if len(children) == count:
            return children
        time.sleep(0.01)
    raise AssertionError(f"expected {count} workers, got {psutil.Process(server.proc.pid).children()}")


def gauge(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def access_pids(server) -> set[int]:
    lines = [json.loads(line) for line in server.log().splitlines() if '"ncf_serving.access"' in line]
    return {line["pid"] for line in lines if line["path"] == "/invocations"}


@pytest.mark.slow
def test_ping_waits_until_every_worker_is_ready(serving_process, tiny_bundle):
    server = serving_process(tiny_bundle, env={**WORKERS, "NCF_WARMUP_ROUNDS": "4000"}, wait=False)
    slow = workers_of(server)[1]
    slow.suspend()  # this worker stays "loading" until resumed; the other one loads and warms up
    try:
        wait_for(lambda: gauge(server.url, "ncf_workers_ready") == 1, what="the first worker to be ready")
        for _ in range(5):  # answered by the ready worker, which still says 503: its sibling is not ready
            response = httpx.get(f"{server.url}/ping", timeout=5)
            assert (response.status_code, response.json()) == (503, {"status": "loading"})
        assert gauge(server.url, "ncf_model_ready") == 0
    finally:
        slow.resume()
    server.wait_ready()
    assert gauge(server.url, "ncf_workers_ready") == 2 and gauge(server.url, "ncf_model_ready") == 1


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_no_request_is_lost(serving_process, tiny_bundle):
    # A long warm-up keeps the replacement loading for seconds: a request it took before being ready would be a 503.
    server = serving_process(tiny_bundle, env={**WORKERS, "NCF_WARMUP_ROUNDS": "4000"})
    victim = workers_of(server)[0]
    statuses: list[int] = []

    def ask() -> None:  # a new connection per request: the kernel hands it to any worker that accepts
        statuses.append(httpx.post(f"{server.url}/invocations", json=TOP_K, timeout=10).status_code)
        assert httpx.get(f"{server.url}/ping", timeout=10).status_code == 200  # healthy throughout

    def replaced() -> bool:
        pids = {w.pid for w in psutil.Process(server.proc.pid).children()}
        return len(pids) == 2 and victim.pid not in pids and gauge(server.url, "ncf_workers_ready") == 2

    for _ in range(20):
        ask()
    victim.kill()
    victim.wait(10)
    deadline = time.monotonic() + 90
    while len(statuses) < 100 or not replaced():  # bounded by the deadline
        assert time.monotonic() < deadline, "the replacement worker never became ready"
        ask()
    replacement = max(workers_of(server), key=lambda worker: worker.create_time())
    for _ in range(300):  # until the replacement has served some
        ask()
        if replacement.pid in access_pids(server):
            break
    assert set(statuses) == {200}, {code: statuses.count(code) for code in set(statuses)}
    assert replacement.pid in access_pids(server)
    log = server.log()
    assert f"Worker (pid:{victim.pid}) was sent SIGKILL!" in log and f'"worker_pid": {victim.pid}' in log
    assert f"Booting worker with pid: {replacement.pid}" in log


@pytest.mark.slow
def test_sigterm_drains_every_worker_and_exits_0(serving_process, tiny_bundle):
    server = serving_process(tiny_bundle, env=WORKERS)
    workers = workers_of(server)

    def keep_asking(_: int) -> list[int | str]:
        seen: list[int | str] = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while len(seen) < 2000 and server.proc.poll() is None:
                try:
                    seen.append(client.post("/invocations", json=TOP_K).status_code)
                except httpx.TransportError as exc:  # refused once the socket is closed: that is the drain
                    seen.append(type(exc).__name__)
                    break
        return seen

    with ThreadPoolExecutor(4) as pool:
        results = pool.map(keep_asking, range(4))
        time.sleep(0.5)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(30)
        seen = [status for result in results for status in result]
    assert code == 0 and time.monotonic() - started < 15
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    assert 200 in seen and all(status == 200 or isinstance(status, str) for status in seen)  # never a 5xx
    last = json.loads(server.log().strip().splitlines()[-1])
    assert (last["message"], last["exit_code"], last["signal"]) == ("server stopped", 0, "SIGTERM")


@pytest.mark.slow
def test_metrics_count_the_requests_of_every_worker(serving_process, tiny_bundle):
    server = serving_process(tiny_bundle, env=WORKERS)
    sent = 0

    def one(_: int) -> int:  # a new connection each time: the kernel hands it to either worker
        return httpx.post(f"{server.url}/invocations", json=TOP_K, timeout=10).status_code

    with ThreadPoolExecutor(4) as pool:
        deadline = time.monotonic() + 60
        while len(access_pids(server)) < 2:
            assert time.monotonic() < deadline, "every request went to one worker"
            assert set(pool.map(one, range(20))) == {200}
            sent += 20
            time.sleep(0.1)  # let the access log lines land
    assert len(access_pids(server)) == 2
    assert gauge(server.url, "ncf_workers") == 2
    text = httpx.get(f"{server.url}/metrics").text
    counted = {
        s.labels["status"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "ncf_requests_total" and s.labels["path"] == "/invocations"
    }
    assert counted == {"200": sent}


def _bundle_mappings(pid: int, bundle: Path) -> dict[str, dict[str, int]]:
    """Rss/Pss/Private_Dirty (kB) of each of the bundle's files mapped by ``pid``."""
    mappings: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            path = fields[5] if len(fields) > 5 else ""
            current = mappings.setdefault(path, {}) if path.startswith(str(bundle)) else None
        elif current is not None and fields[0] in ("Rss:", "Pss:", "Private_Dirty:"):
            current[fields[0][:-1]] = current.get(fields[0][:-1], 0) + int(fields[1])
    return mappings


@pytest.mark.slow
def test_the_bundle_arrays_are_one_copy_shared_by_the_workers(serving_process, tiny_bundle, tmp_path):
    import onnx

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    model = onnx.load(str(bundle / "model.onnx"))  # weights outside the graph, as `ncfctl neo compile` writes them
    onnx.save_model(model, str(bundle / "model.onnx"), save_as_external_data=True, location="model.onnx.data")
    spec = json.loads((bundle / "serving.json").read_text())
    spec["files"] = hash_folder(bundle, exclude=["serving.json"])  # what compile records for these files
    (bundle / "serving.json").write_text(json.dumps(spec))
    server = serving_process(bundle, env=WORKERS)
    by_worker = [_bundle_mappings(w.pid, bundle.resolve()) for w in workers_of(server)]
    shared = {str(p.resolve()) for p in [*bundle.glob("*/*.npy"), bundle / "model.onnx.data"]}
    for mappings in by_worker:
        assert set(mappings) == shared  # every array and weight is mapped from its file, none copied into the heap
        for table in ("fastpath/item_pre.npy", "model.onnx.data"):
            pages = mappings[str((bundle / table).resolve())]
            assert pages["Rss"] > 0 and pages["Pss"] < pages["Rss"]  # its pages count half to each worker
        assert all(m.get("Private_Dirty", 0) == 0 for m in mappings.values())  # and none was copied on write
