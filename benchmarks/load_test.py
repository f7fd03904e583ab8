"""Load test a running ncf_serving endpoint: concurrent clients, requests/s, p50/p99, errors, server peak RSS.

Two phases of ``--duration`` seconds each (default 30), with ``--concurrency`` keep-alive clients
(one thread and one ``http.client`` connection each: the standard library's client costs ~0.2 ms
CPU per request here, httpx ~0.6 ms, and the client shares the machine with the server) sending
random valid requests:

* ``pair``:  ``{"user_id": u, "item_id": i}``
* ``top10``: ``{"user_id": u, "top_k": 10}`` (seen items excluded: the fast path)

Valid raw ids come from the bundle being served (``--bundle``: its ``ids.npz``). Any non-200 or
transport failure counts as an error. The server's resident memory is sampled during the run and
its peak taken from the kernel (``VmHWM``: the high-water mark since the process started, so it
includes loading). Client and server CPU use are reported per phase, so a client-bound or
starved result is visible as such. Usage::

    python -m ncf_serving serve --model-dir BUNDLE --port 8080 &
    python benchmarks/load_test.py http://127.0.0.1:8080 --bundle BUNDLE
    python benchmarks/load_test.py http://127.0.0.1:8080 --bundle BUNDLE --duration 10 --concurrency 16 --json
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import psutil
from ncf_serving.ids import IdMap


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--bundle", required=True, type=Path, help="the served bundle folder (for valid raw ids)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pid", type=int, help="server pid for RSS (default: whoever listens on the URL's port)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args()


def listening_pid(url: str) -> int | None:
    port = urlparse(url).port
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def peak_rss_bytes(pid: int) -> int | None:
    """The kernel's resident-set high-water mark of ``pid`` (Linux), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def raw_ids(bundle: Path) -> tuple[list, list]:
    """The bundle's raw ids as the server speaks them (integers when every id is one)."""
    with np.load(bundle / "ids.npz", allow_pickle=False) as ids:
        return IdMap(ids["user_ids"]).public, IdMap(ids["item_ids"]).public


def phase(url: str, make_body, duration: float, concurrency: int) -> dict:
    """Run ``concurrency`` keep-alive clients for ``duration`` seconds; latency and status of every request."""
    parsed = urlparse(url)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    statuses: list[dict[str, int]] = [{} for _ in range(concurrency)]
    deadline = time.perf_counter() + duration
    headers = {"Content-Type": "application/json"}

    def client(n: int) -> None:
        rng = np.random.default_rng(n)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        while time.perf_counter() < deadline:
            body = json.dumps(make_body(rng))
            start = time.perf_counter()
            try:
                connection.request("POST", "/invocations", body, headers)
                response = connection.getresponse()
                response.read()
                key = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                key = type(exc).__name__
                connection.close()
            latencies[n].append(time.perf_counter() - start)
            statuses[n][key] = statuses[n].get(key, 0) + 1
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = np.concatenate([np.asarray(values) for values in latencies]) * 1e3
    merged: dict[str, int] = {}
    for counts in statuses:
        for key, count in counts.items():
            merged[key] = merged.get(key, 0) + count
    return {
        "requests": int(ms.size),
        "requests_per_s": round(ms.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "errors": int(ms.size) - merged.get("200", 0),
        "statuses": merged,
    }


class RssSampler(threading.Thread):
    """Samples the server's resident memory every 0.2 s (a cross-check of the kernel's VmHWM)."""

    def __init__(self, process: psutil.Process | None):
        super().__init__(daemon=True)
        self.process = process
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while self.process is not None and not self.done.is_set():
            try:
                self.samples.append(self.process.memory_info().rss)
            except psutil.Error:
                return
            self.done.wait(0.2)


def cpu_seconds(process: psutil.Process | None) -> float:
    if process is None:
        return float("nan")
    times = process.cpu_times()
    return times.user + times.system


def run(args: argparse.Namespace) -> dict:
    users, items = raw_ids(args.bundle)
    pid = args.pid or listening_pid(args.url)
    server = psutil.Process(pid) if pid else None
    me = psutil.Process()
    bodies = {
        "pair": lambda rng: {"user_id": users[rng.integers(len(users))], "item_id": items[rng.integers(len(items))]},
        "top10": lambda rng: {"user_id": users[rng.integers(len(users))], "top_k": 10},
    }
    sampler = RssSampler(server)
    sampler.start()
    results = {}
    for name, make_body in bodies.items():
        client_cpu, server_cpu, wall = cpu_seconds(me), cpu_seconds(server), time.perf_counter()
        results[name] = phase(args.url, make_body, args.duration, args.concurrency)
        wall = time.perf_counter() - wall
        results[name]["client_cpu_percent"] = round(100 * (cpu_seconds(me) - client_cpu) / wall, 1)
        results[name]["server_cpu_percent"] = round(100 * (cpu_seconds(server) - server_cpu) / wall, 1)
    sampler.done.set()
    sampler.join()
    peak = peak_rss_bytes(pid) if pid else None
    return {
        "url": args.url,
        "concurrency": args.concurrency,
        "duration_s_per_phase": args.duration,
        "phases": results,
        "server_pid": pid,
        "server_rss_sampled_max_mb": round(max(sampler.samples) / 2**20, 1) if sampler.samples else None,
        "server_peak_rss_mb": round(peak / 2**20, 1) if peak else None,
        "cpu_count": psutil.cpu_count(),
        "load_average_1m": round(psutil.getloadavg()[0], 2),
    }


def main() -> int:
    args = parse_args()
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.url}: {args.concurrency} concurrent clients, {args.duration:g} s per phase")
        for name, r in report["phases"].items():
            print(
                f"  {name:6s} {r['requests_per_s']:8.1f} req/s  p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  "
                f"errors {r['errors']}  (CPU: server {r['server_cpu_percent']}%, client {r['client_cpu_percent']}%)"
            )
        print(
            f"  server pid {report['server_pid']}: peak RSS {report['server_peak_rss_mb']} MB "
            f"(sampled max {report['server_rss_sampled_max_mb']} MB); load average {report['load_average_1m']}"
        )
    return 0 if all(r["errors"] == 0 for r in report["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
