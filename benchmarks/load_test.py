"""Load test a running ncf_serving endpoint: concurrent clients, requests/s, p50/p99, errors, server peak RSS.

Two phases of ``--duration`` seconds each (default 30), with ``--concurrency`` keep-alive clients
(asyncio + httpx) sending random valid requests:

* ``pair``:  ``{"user_id": u, "item_id": i}``
* ``top10``: ``{"user_id": u, "top_k": 10}`` (seen items excluded: the fast path)

Valid raw ids come from the bundle being served (``--bundle``: its ``ids.npz``). Any non-200 or
transport failure counts as an error. The server's resident memory is sampled during the run and
its peak taken from the kernel (``VmHWM``: the high-water mark since the process started, so it
includes loading). The client runs in this one process; its own CPU use is reported so a
client-bound result is visible as such. Usage::

    python -m ncf_serving serve --model-dir BUNDLE --port 8080 &
    python benchmarks/load_test.py http://127.0.0.1:8080 --bundle BUNDLE
    python benchmarks/load_test.py http://127.0.0.1:8080 --bundle BUNDLE --duration 10 --concurrency 16 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
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


async def phase(url: str, make_body, duration: float, concurrency: int) -> dict:
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.perf_counter() + duration
    rng = np.random.default_rng(0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                body = make_body(rng)
                start = time.perf_counter()
                try:
                    response = await client.post("/invocations", json=body)
                    key = str(response.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                latencies.append(time.perf_counter() - start)
                statuses[key] = statuses.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1e3
    ok = statuses.get("200", 0)
    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "errors": len(latencies) - ok,
        "statuses": statuses,
    }


async def sample_rss(process: psutil.Process | None, peaks: list[int], stop: asyncio.Event) -> None:
    while process is not None and not stop.is_set():
        try:
            peaks.append(process.memory_info().rss)
        except psutil.Error:
            return
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict:
    users, items = raw_ids(args.bundle)
    pid = args.pid or listening_pid(args.url)
    server = psutil.Process(pid) if pid else None
    me = psutil.Process()
    me.cpu_times()
    bodies = {
        "pair": lambda rng: {"user_id": users[rng.integers(len(users))], "item_id": items[rng.integers(len(items))]},
        "top10": lambda rng: {"user_id": users[rng.integers(len(users))], "top_k": 10},
    }
    samples: list[int] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(server, samples, stop))
    results = {}
    for name, make_body in bodies.items():
        cpu_before, wall_before = sum(me.cpu_times()[:2]), time.perf_counter()
        results[name] = await phase(args.url, make_body, args.duration, args.concurrency)
        results[name]["client_cpu_percent"] = round(
            100 * (sum(me.cpu_times()[:2]) - cpu_before) / (time.perf_counter() - wall_before), 1
        )
    stop.set()
    await sampler
    return {
        "url": args.url,
        "concurrency": args.concurrency,
        "duration_s_per_phase": args.duration,
        "phases": results,
        "server_pid": pid,
        "server_rss_sampled_max_mb": round(max(samples) / 2**20, 1) if samples else None,
        "server_peak_rss_mb": round(peak_rss_bytes(pid) / 2**20, 1) if pid and peak_rss_bytes(pid) else None,
        "cpu_count": psutil.cpu_count(),
        "load_average_1m": round(psutil.getloadavg()[0], 2),
    }


def main() -> int:
    args = parse_args()
    report = asyncio.run(run(args))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.url}: {args.concurrency} concurrent clients, {args.duration:g} s per phase")
        for name, r in report["phases"].items():
            print(
                f"  {name:6s} {r['requests_per_s']:8.1f} req/s  p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  "
                f"errors {r['errors']}  (client CPU {r['client_cpu_percent']}%)"
            )
        print(
            f"  server pid {report['server_pid']}: peak RSS {report['server_peak_rss_mb']} MB "
            f"(sampled max {report['server_rss_sampled_max_mb']} MB); load average {report['load_average_1m']}"
        )
    return 0 if all(r["errors"] == 0 for r in report["phases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
