"""Load test the serving container with ``wrk``: req/s, p50/p99, errors and server memory, per worker count.

For each worker count (``--workers``, default 1 and 2) the server runs alone, as the plain process
the image runs (``python -m ncf_serving serve``, ``NCF_WORKERS`` set), on a free loopback port.
``wrk``, a C load generator (Debian package ``wrk``), drives it over ``--connections`` keep-alive
connections for ``--duration`` seconds per request form; a Python client costs more CPU per
request than the server and measured it 2-3x too slow. The forms, with random valid raw ids of
the bundle (pre-encoded bodies that ``wrk_bodies.lua`` cycles through):

* ``top10``: ``{"user_id": u, "top_k": 10}`` (seen items excluded: the fast path)
* ``pair``: ``{"user_id": u, "item_id": i}`` (the runtime model)

Any non-2xx answer, connect/read/write error or timeout counts as an error. Client and server
share the machine (``--cpus`` pins both to given CPUs); the CPU each used is reported per phase,
and the server's CPU time per request, which does not depend on the share of a busy machine the
server got. Rounds (``--rounds``) alternate the
worker counts (1, 2, 1, 2, ...) so they see the same background load; the table gives each
figure's median over rounds. After each round's load the memory of every server process is read:
RSS, PSS (each shared page split between the processes that map it) and USS (pages no other
process maps). The server's memory is the sum of its processes' PSS: the master, and the workers
sharing the bundle's memory-mapped arrays and the libraries the master imported.

Without ``--bundle`` the default synthetic bundle (``synthetic_bundle.py``; ``--items`` scales its
catalogue) is built in a temp folder. Usage::

    python benchmarks/load_test.py
    python benchmarks/load_test.py --bundle output/neo/<compiled-id> --duration 30 --rounds 3 --json
    python benchmarks/load_test.py --cpus 0,1 --wrk /opt/wrk/wrk   # server and wrk pinned to CPUs 0 and 1
    python benchmarks/load_test.py --in-process 3000   # no HTTP: CPU per request of the app itself
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from ncf_serving.bundle import IDS_DIR, read_arrays
from ncf_serving.ids import IdMap

LUA = Path(__file__).resolve().with_name("wrk_bodies.lua")
FORMS = ("top10", "pair")
BODIES = 20_000
# A phase's figures that the summary gives as medians over rounds
FIGURES = (
    "requests_per_s",
    "p50_ms",
    "p99_ms",
    "server_cpu_percent",
    "client_cpu_percent",
    "server_cpu_us_per_request",
)
MB = 2**20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="serving bundle (default: build the synthetic one)")
    parser.add_argument("--items", type=int, default=None, help="catalogue size of the synthetic bundle")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, e.g. 1,2,4")
    parser.add_argument("--duration", type=int, default=15, help="seconds per request form")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--client-threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cpus", help="pin the server and wrk to these CPUs, e.g. 0,1 (default: no pinning)")
    parser.add_argument("--wrk", default="wrk", help="the wrk binary, if not wrk on PATH")
    parser.add_argument(
        "--in-process", type=int, metavar="N", help="instead: N requests per form through the ASGI app, no HTTP"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser.parse_args()


def write_bodies(bundle: Path, folder: Path) -> dict[str, Path]:
    """One file of random request bodies per form, in the raw ids the server speaks."""
    ids = read_arrays(bundle / IDS_DIR, ("user_ids", "item_ids", "user_order", "item_order"))
    users, items = IdMap(ids["user_ids"], ids["user_order"]), IdMap(ids["item_ids"], ids["item_order"])
    rng = np.random.default_rng(0)
    some_users = users.to_public(rng.integers(0, len(users), BODIES))
    some_items = items.to_public(rng.integers(0, len(items), BODIES))
    bodies = {
        "top10": [{"user_id": u, "top_k": 10} for u in some_users],
        "pair": [{"user_id": u, "item_id": i} for u, i in zip(some_users, some_items, strict=True)],
    }
    paths = {}
    for form, documents in bodies.items():
        paths[form] = folder / f"{form}.jsonl"
        paths[form].write_text("".join(json.dumps(d, separators=(",", ":")) + "\n" for d in documents))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``python -m ncf_serving serve`` with ``workers`` workers on a free loopback port."""

    def __init__(self, bundle: Path, workers: int, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "NCF_WORKERS": str(workers), "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "ncf_serving", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*command, "--model-dir", str(bundle)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        started = time.perf_counter()
        while not self._ready():
            if self.proc.poll() is not None or time.perf_counter() - started > 300:
                self.proc.kill()
                tail = log_path.read_text(errors="replace").splitlines()[-5:]
                raise SystemExit(f"server with {workers} workers did not become ready:\n" + "\n".join(tail))
            time.sleep(0.1)
        self.ready_s = time.perf_counter() - started

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def processes(self) -> list[psutil.Process]:
        master = psutil.Process(self.proc.pid)
        return [master, *master.children(recursive=True)]

    def cpu_seconds(self) -> list[float]:
        """CPU seconds used so far by each process: the master, then each worker."""
        return [sum(process.cpu_times()[:2]) for process in self.processes()]

    def memory(self) -> dict:
        """RSS/PSS/USS (MB) of the master and each worker, and the server's total PSS."""
        processes = []
        for role, process in zip(("master", *["worker"] * 64), self.processes(), strict=False):
            info = process.memory_full_info()
            processes.append(
                {
                    "role": role,
                    "pid": process.pid,
                    **{k: round(getattr(info, k) / MB, 1) for k in ("rss", "pss", "uss")},
                }
            )
        return {"pss_total_mb": round(sum(p["pss"] for p in processes), 1), "processes": processes}

    def stop(self) -> dict:
        started = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        return {"exit_code": code, "stop_s": round(time.perf_counter() - started, 2)}


def run_wrk(url: str, bodies: Path, args: argparse.Namespace, duration: int) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [
        args.wrk, f"-t{args.client_threads}", f"-c{args.connections}", f"-d{duration}s", "--timeout", "5s",
        "-s", str(LUA), url, "--", str(bodies),
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))
    seconds = summary["duration_us"] / 1e6
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "requests_per_s": round(summary["requests"] / seconds, 1),
        "p50_ms": round(summary["p50_us"] / 1e3, 3),
        "p99_ms": round(summary["p99_us"] / 1e3, 3),
        "errors": sum(summary["errors"].values()),
        "error_kinds": {k: v for k, v in summary["errors"].items() if v},
        "requests": summary["requests"],
        "client_cpu_percent": round(100 * client_cpu / seconds, 1),
    }


def measure(bundle: Path, workers: int, bodies: dict[str, Path], args: argparse.Namespace, log: Path) -> dict:
    """One round for one worker count: start, warm up, each form, memory, SIGTERM."""
    server = Server(bundle, workers, log)
    try:
        run_wrk(server.url, bodies["top10"], args, 2)  # warm-up: connections, page cache, allocator
        phases = {}
        for form in FORMS:
            before, wall = server.cpu_seconds(), time.perf_counter()
            phase = phases[form] = run_wrk(server.url, bodies[form], args, args.duration)
            after = server.cpu_seconds()
            used = [end - start for end, start in zip(after, before, strict=False)]
            cpu = sum(used) if len(after) == len(before) else sum(after) - sum(before)  # (a worker replaced)
            phase["server_cpu_percent"] = round(100 * cpu / (time.perf_counter() - wall), 1)
            # what a request costs the server, whatever share of the CPUs it got on a busy machine
            phase["server_cpu_us_per_request"] = round(1e6 * cpu / max(phase["requests"], 1), 1)
            # the workers share one listening socket: wrk's connections go to whichever accepted them
            phase["worker_cpu_shares"] = [round(worker / max(cpu, 1e-9), 2) for worker in used[1:]]
        memory = server.memory()
    finally:
        stopped = server.stop()
    return {"workers": workers, "ready_s": round(server.ready_s, 2), "phases": phases, "memory": memory, **stopped}


def in_process_cost(bundle: Path, bodies: dict[str, Path], requests: int, folder: Path) -> dict[str, float]:
    """CPU µs per request of one worker's ASGI app called in this process with uvicorn's scope (no HTTP,
    no client; access lines written to a file): what the app costs, whatever share of the CPUs it gets."""
    for part in ("metrics", "ready"):
        (folder / part).mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder / "metrics")  # before the app imports prometheus_client
    from ncf_serving.app import create_app
    from ncf_serving.logs import configure_logging
    from ncf_serving.metrics import Metrics
    from ncf_serving.readiness import Readiness
    from ncf_serving.settings import Settings
    from threadpoolctl import threadpool_limits

    def failed(error: str) -> None:
        print(f"error: the model did not load: {error}", file=sys.stderr)
        os._exit(1)  # from the loader thread

    configure_logging()
    logging.getLogger().handlers[0].setStream((folder / "access.log").open("w"))  # open until exit
    settings = Settings(model_dir=bundle, workers=1, threads=1)
    app = create_app(settings, Readiness(folder / "ready", 1), Metrics(folder / "metrics", lambda: []), failed)
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]

    async def call(method: str, path: str, body: bytes = b"") -> int:
        scope = {
            "type": "http", "http_version": "1.1", "method": method, "path": path, "raw_path": path.encode(),
            "root_path": "", "query_string": b"", "state": {}, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
            "headers": [*headers, (b"content-length", str(len(body)).encode())], "scheme": "http",
        }  # fmt: skip
        sent = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"]

    async def measure() -> dict[str, float]:
        startup: asyncio.Queue = asyncio.Queue()
        startup.put_nowait({"type": "lifespan.startup"})
        asyncio.create_task(app({"type": "lifespan", "state": {}}, startup.get, startup.put))  # loads the model
        while await call("GET", "/ping") != 200:
            await asyncio.sleep(0.05)
        cost = {}
        for form, path in bodies.items():
            lines = [line.encode() for line in path.read_text().splitlines()]
            started = time.process_time()
            for n in range(requests):
                assert await call("POST", "/invocations", lines[n % len(lines)]) == 200
            cost[form] = round(1e6 * (time.process_time() - started) / requests, 1)
        return cost

    with threadpool_limits(1):  # numpy came in before the server's thread settings could apply
        return asyncio.run(measure())


def summarize(runs: list[dict], workers: list[int]) -> dict:
    """Median over rounds of each figure, per worker count and form (errors: the sum)."""
    table = {}
    for count in workers:
        mine = [run for run in runs if run["workers"] == count]
        table[count] = {
            form: {
                **{key: round(statistics.median(run["phases"][form][key] for run in mine), 3) for key in FIGURES},
                "errors": sum(run["phases"][form]["errors"] for run in mine),
            }
            for form in FORMS
        }
        table[count]["pss_total_mb"] = statistics.median(run["memory"]["pss_total_mb"] for run in mine)
    return table


def print_report(report: dict) -> None:
    print(
        f"{report['bundle']}: wrk {report['connections']} connections, {report['client_threads']} thread, "
        f"{report['duration_s']:g} s per form, {report['rounds']} rounds (medians); CPUs {report['cpus']}, "
        f"load average {report['load_average_1m']} before"
    )
    print(
        f"{'workers':>7}  {'request':7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  "
        "CPU server/client  server CPU per request"
    )
    for count, row in report["summary"].items():
        for form in FORMS:
            r = row[form]
            print(
                f"{count:>7}  {form:7} {r['requests_per_s']:9,.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                f"{r['errors']:6d}  {r['server_cpu_percent']:.0f}% / {r['client_cpu_percent']:.0f}%"
                f"  {r['server_cpu_us_per_request']:.0f} µs"
            )
    for count in [count for count in report["summary"] if count > 1]:
        for form in FORMS:
            shares = [run["phases"][form]["worker_cpu_shares"] for run in report["runs"] if run["workers"] == count]
            print(f"  {count} workers, {form}: each worker's share of the server CPU per round {shares}")
    print("server memory after load (MB; PSS total = master + workers):")
    for count, row in report["summary"].items():
        last = next(run for run in reversed(report["runs"]) if run["workers"] == count)
        each = ", ".join(
            f"{p['role']} rss {p['rss']} pss {p['pss']} uss {p['uss']}" for p in last["memory"]["processes"]
        )
        print(f"  {count} workers: PSS {row['pss_total_mb']:.1f} ({each})")
    counts = list(report["summary"])
    if len(counts) > 1:
        base = report["summary"][counts[0]]["pss_total_mb"]
        for count in counts[1:]:
            print(f"  {count} vs {counts[0]} workers: {report['summary'][count]['pss_total_mb'] / base:.2f}x memory")


def main() -> int:
    args = parse_args()
    args.wrk = shutil.which(args.wrk)
    if args.wrk is None and args.in_process is None:
        print("error: wrk not found: install it (apt-get install wrk) or give --wrk PATH", file=sys.stderr)
        return 2
    if args.cpus:
        try:
            os.sched_setaffinity(0, {int(cpu) for cpu in args.cpus.split(",")})  # the server and wrk inherit it
        except (ValueError, OSError) as exc:
            print(f"error: --cpus {args.cpus}: {exc}", file=sys.stderr)
            return 2
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        folder = Path(tmp)
        if args.bundle is None:
            from synthetic_bundle import write_synthetic_bundle  # torch and ncfctl: only to build one

            bundle = write_synthetic_bundle(folder / "bundle", items=args.items)
        else:
            bundle = args.bundle
        bodies = write_bodies(bundle, folder)
        load = round(psutil.getloadavg()[0], 2)
        if args.in_process:
            cost = in_process_cost(bundle, bodies, args.in_process, folder / "in-process")
            print(json.dumps({"cpu_us_per_request": cost, "requests": args.in_process, "load_average_1m": load}))
            return 0
        runs = []
        for _ in range(args.rounds):
            for count in workers:
                runs.append(measure(bundle, count, bodies, args, folder / "server.log"))
    report = {
        "bundle": str(args.bundle or f"synthetic bundle ({args.items or 'default'} items)"),
        "connections": args.connections,
        "client_threads": args.client_threads,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "cpus": ",".join(map(str, sorted(os.sched_getaffinity(0)))),  # what the server and wrk ran on
        "load_average_1m": load,
        "summary": summarize(runs, workers),
        "runs": runs,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if all(run["phases"][f]["errors"] == 0 and run["exit_code"] == 0 for run in runs for f in FORMS) else 1


if __name__ == "__main__":
    sys.exit(main())
