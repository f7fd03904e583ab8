"""Probe ncfctl with bad inputs, as a user and an attacker would, and count what each one gets back.

Builds a throwaway workspace (a small CSV log whose raw ids include ``7``/``007``, ``10``/``1_0``,
``1``/`` 1``/fullwidth ``１``; a tiny NeuMF; the local compile; an image context; a running local
deployment), then tries 150+ bad inputs in six categories:

* ``server``: malformed, oversized and wrong-typed requests, wrong paths and methods, aborted
  uploads, slow clients, bad server flags and settings, and requests whose answer is checked
  against the model itself;
* ``cli``: bad flags and values on every command, raw ids that ``int()`` would rewrite,
  unreachable AWS endpoints;
* ``config``: bad ``--config`` files and ``NCFCTL_*`` variables (alias bombs, binary, huge values);
* ``files``: corrupted artifacts on disk (flipped bytes, swapped or damaged parquet/npy/model
  files, broken manifests, checkpoints, serving bundles, input tables);
* ``archives``: hostile ``.tar.gz`` files given to :func:`ncfctl.safetar.safe_extract` (links,
  the CVE-2025-4517 pattern, a gzip bomb);
* ``processes``: ``kill -9`` in the middle of commands (orphan servers, ``.staging`` leftovers).

Each probe ends in one outcome:

* ``clear``: a 4xx with a JSON error, a one-line ``Error:`` with exit code 2 (or typer's usage
  error), or, for a valid but tricky input, the right answer (checked against the model);
* ``5xx``: the server answered 5xx (or its metrics counted one, or it died);
* ``traceback``: a traceback on the terminal or in the server log;
* ``unclear``: refused, but not with one clear line (another exit code, a 5 MB line, several lines);
* ``silently wrong``: accepted what it should refuse (exit 0, ``/ping`` 200 on a broken model, an
  archive extracted), answered with a score that differs from the model's, or left a process or
  folder behind.

Prints one table per category and the failures, and exits 1 if any probe ended in ``5xx``,
``traceback``, ``unclear`` or ``silently wrong``. Usage::

    python benchmarks/probe_corpus.py              # a few minutes on 2 cores
    python benchmarks/probe_corpus.py --jobs 4 --keep --json results.json
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import queue
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import psutil
import torch

OUTCOMES = ("clear", "5xx", "traceback", "unclear", "silent")
HEADERS = ("tried", "clear (4xx, one line, right answer)", "5xx", "traceback", "unclear", "silently wrong")
CATEGORIES = ("server", "cli", "config", "files", "archives", "processes")
TRACEBACK = "Traceback (most recent call last)"
MAX_LINE = 1000  # an error line longer than this is not "one clear line"
SLOW_CLIENT_LIMIT_S = 40  # a stalled connection still open after this is one the server never closes
SCORE_TOLERANCE = 1e-4
MANY_MEMBERS = 100_000  # an archive with this many members must hit the member cap
FULLWIDTH_ONE = "\uff11"
SPECIAL_USERS = ("7", "007", "10", "1_0", "1", " 1", FULLWIDTH_ONE, "ü")


@dataclass
class Result:
    category: str
    name: str
    outcome: str
    detail: str = ""


@dataclass
class Probe:
    category: str
    name: str
    run: Callable[[], tuple[str, str]]


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def judge_refusal(proc: subprocess.CompletedProcess | None) -> tuple[str, str]:
    """A command that must refuse: exit 2 with one ``Error:`` line (or a usage error), nothing else."""
    if proc is None:
        return "silent", "no answer before the timeout (hang)"
    text = proc.stdout + proc.stderr
    if TRACEBACK in text:
        return "traceback", last_line(proc.stderr)
    if proc.returncode == 0:
        return "silent", "exit 0: accepted"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    usage = "Usage:" in proc.stderr
    if proc.returncode == 2 and (usage or (len(errors) == 1 and len(errors[0]) <= MAX_LINE)):
        return "clear", (errors[0] if errors else last_line(proc.stderr))[:160]
    longest = max((len(line) for line in proc.stderr.splitlines()), default=0)
    return "unclear", f"exit {proc.returncode}, {len(errors)} error line(s), longest {longest} chars"


class CommandRunner:
    """``ncfctl`` commands in long-lived worker processes, so a probe costs its command, not a
    Python start-up plus the imports. Each worker runs typer's ``CliRunner`` on the real app, whose
    error handling is the console script's own (``ncfctl.cli.app.NcfGroup``); an exception that
    escapes becomes its traceback text, as a terminal would show it. A worker that hangs past the
    timeout is killed and replaced; one that dies reads as a crash."""

    def __init__(self, count: int, env: dict[str, str], cwd: Path):
        self.env, self.cwd = env, cwd
        self.idle: queue.Queue[subprocess.Popen] = queue.Queue()
        for _ in range(count):
            self.idle.put(self._start())

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, __file__, "--worker"], env=self.env, cwd=self.cwd, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def run(self, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess | None:
        worker = self.idle.get()
        try:
            worker.stdin.write(json.dumps({"args": args, "env": env}) + "\n")
            worker.stdin.flush()
            ready, _, _ = select.select([worker.stdout], [], [], timeout)
            line = worker.stdout.readline() if ready else ""
        except OSError:
            line = ""
        if not line:
            worker.kill()
            worker.wait()
            hung = worker.returncode == -signal.SIGKILL and not ready
            worker = self._start()
            self.idle.put(worker)
            return None if hung else subprocess.CompletedProcess(args, -1, "", f"{TRACEBACK}: the process crashed")
        self.idle.put(worker)
        reply = json.loads(line)
        return subprocess.CompletedProcess(args, reply["rc"], reply["stdout"], reply["stderr"])

    def close(self) -> None:
        while not self.idle.empty():
            worker = self.idle.get()
            worker.stdin.close()
            worker.wait(10)


def worker_main() -> int:
    """One worker: read a job per line on stdin, run it in-process, answer one JSON line."""
    from typer.testing import CliRunner

    from ncfctl.cli.app import app

    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # stray writes to fd 1 must not corrupt the protocol
    runner = CliRunner()
    for line in sys.stdin:
        job = json.loads(line)
        result = runner.invoke(app, job["args"], env=job["env"])
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(result.exception))
        protocol.write(json.dumps({"rc": result.exit_code, "stdout": result.stdout, "stderr": stderr}) + "\n")
        protocol.flush()
    return 0


class Lab:
    """The throwaway workspace, the running deployment and the model's own answers."""

    def __init__(self, root: Path, timeout: float):
        self.root = root
        self.base = root / "base"
        self.timeout = timeout
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1",
            "NCFCTL_TRAIN__THREADS": "1",
            "COLUMNS": "200",
        }
        for name in ("AWS_PROFILE", "NCFCTL_CONFIG", "NCFCTL_DEBUG"):
            self.env.pop(name, None)
        self.runner: CommandRunner | None = None  # set by main(); None: every command is a real process

    # -- commands -------------------------------------------------------------------------------
    def cli(
        self,
        *args: str,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        real: bool = False,
    ) -> subprocess.CompletedProcess | None:
        """``ncfctl ARGS``: in a worker, or as a real process (``real``, or no workers); None on a hang."""
        if self.runner is not None and not real:
            overrides = {"NCFCTL_WORKDIR": str(workdir or self.base), **(env or {})}
            return self.runner.run(list(args), overrides, timeout or self.timeout)
        full_env = {**self.env, "NCFCTL_WORKDIR": str(workdir or self.base), **(env or {})}
        try:
            return subprocess.run(
                [sys.executable, "-m", "ncfctl", *args],
                capture_output=True,
                text=True,
                errors="replace",
                env=full_env,
                cwd=self.root,
                timeout=timeout or self.timeout,
            )
        except subprocess.TimeoutExpired:
            return None

    def cli_ok(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        proc = self.cli(*args, real=True, **kwargs)
        if proc is None or proc.returncode != 0:
            detail = "timeout" if proc is None else proc.stderr[-2000:]
            raise SystemExit(f"setup step `ncfctl {' '.join(args)}` failed: {detail}")
        return proc

    def fresh(self, name: str) -> Path:
        """A private copy of the base workspace (minus its deployment) for one probe to damage or change."""
        (self.root / "copies").mkdir(exist_ok=True)
        label = "".join(c if c.isalnum() else "-" for c in name)[:40]
        target = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=self.root / "copies")) / "ws"
        shutil.copytree(self.base, target, ignore=shutil.ignore_patterns("deployments", ".staging"))
        return target

    # -- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        self.write_log(self.root / "log.csv")
        self.cli_ok(
            "data", "--dataset", "csv", "--source", str(self.root / "log.csv"), "--time-col", "ts",
            "--eval-negatives", "20",
        )  # fmt: skip
        self.cli_ok(
            "train", "--epochs", "2", "--factors", "8", "--layers", "16,8", "--batch-size", "256", "--lr", "0.01"
        )
        self.cli_ok("neo", "compile", "--backend", "local")
        self.cli_ok("build-image", "--backend", "none")
        deployed = json.loads(self.cli_ok("deploy", "--backend", "local", "--json").stdout)
        self.deployment, self.url, self.server_pid = deployed["id"], deployed["url"], int(deployed["pid"])
        self.server_log = self.base / "deployments" / self.deployment / "server.log"
        self.load_truth()

    @staticmethod
    def write_log(path: Path) -> None:
        """120 users x 60 items, clustered tastes; the first users carry ids that int() would rewrite."""
        rng = np.random.default_rng(0)
        users, items = 120, 60
        names = list(SPECIAL_USERS) + [f"u{u}" for u in range(len(SPECIAL_USERS), users)]
        lines, stamp = ["user_id,item_id,ts"], 1_000_000
        for user in range(users):
            own = [i for i in range(items) if i % 6 == user % 6]
            picks = rng.choice(own, 20).tolist() + rng.integers(0, items, 10).tolist()
            for item in list(dict.fromkeys(picks))[:14]:
                stamp += 1
                lines.append(f"{names[user]},i{item},{stamp}")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def load_truth(self) -> None:
        """The trained model and its id tables: what every served score must equal."""
        from ncfctl.models import load_model

        [dataset] = [p for p in (self.base / "data").iterdir() if p.is_dir()]
        [model_dir] = [p for p in (self.base / "models").iterdir() if p.is_dir()]
        self.dataset_id, self.model_id = dataset.name, model_dir.name
        self.model = load_model(model_dir / "model.pt")
        self.user_index = {raw: i for i, raw in enumerate(pd.read_parquet(dataset / "user_ids.parquet")["raw_id"])}
        self.item_index = {raw: i for i, raw in enumerate(pd.read_parquet(dataset / "item_ids.parquet")["raw_id"])}
        self.items = list(self.item_index)
        from ncfctl.data.dataset import load_dataset
        from ncfctl.workspace import Workspace

        self.seen_indptr, self.seen_indices = load_dataset(Workspace(self.base).get(self.dataset_id)).seen_items()

    def top_k_candidates(self, user: str, k: int) -> set[str]:
        """Items a right top-``k`` may hold: unseen, scoring at least the model's k-th best (ties allowed)."""
        index = self.user_index[user]
        with torch.inference_mode():
            scores = self.model(torch.full((len(self.items),), index), torch.arange(len(self.items))).numpy()
        scores[self.seen_indices[self.seen_indptr[index] : self.seen_indptr[index + 1]]] = -np.inf
        kth = np.sort(scores)[::-1][k - 1]
        return {self.items[i] for i in np.flatnonzero(scores >= kth - SCORE_TOLERANCE)}

    def true_score(self, user: str, item: str) -> float:
        with torch.inference_mode():
            users = torch.tensor([self.user_index[user]])
            return float(self.model(users, torch.tensor([self.item_index[item]]))[0])

    # -- the server -----------------------------------------------------------------------------
    def server_errors(self) -> tuple[int, int]:
        """(5xx responses counted in /metrics, tracebacks in the server log) so far."""
        fives = 0
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return 10**6, 0
        for line in text.splitlines():
            if line.startswith("ncf_requests_total") and 'status="5' in line:
                fives += int(float(line.rsplit(" ", 1)[1]))
        return fives, self.server_log.read_text(errors="replace").count(TRACEBACK)

    def alive(self) -> bool:
        try:
            return httpx.get(f"{self.url}/ping", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop the deployment and every server a probe caused (found by this lab's folder in their command)."""
        if getattr(self, "deployment", None):
            self.cli("deploy", "stop", "--deployment", self.deployment, real=True)
        for proc in servers_of(self.root):
            with suppress(psutil.NoSuchProcess):
                proc.kill()


# == server probes ==================================================================================


def http_probe(lab: Lab, method: str, path: str, body: bytes | None = None, headers=None, fine=()):
    """Send one request; judge the status, the body and the server's health after it.

    A 4xx with a JSON body is the expected answer; ``fine`` lists other statuses that are right
    for this request (e.g. 200 for a body Python's JSON reader accepts as UTF-16).
    """

    def run() -> tuple[str, str]:
        before = lab.server_errors()
        try:
            response = httpx.request(
                method,
                f"{lab.url}{path}",
                content=body,
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=30,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            return "5xx", f"no response: {type(exc).__name__}"
        after = lab.server_errors()
        if after[1] > before[1]:
            return "traceback", "traceback in the server log"
        if response.status_code >= 500 or after[0] > before[0]:
            return "5xx", f"{response.status_code} {response.text[:120]}"
        if not lab.alive():
            return "5xx", "server stopped answering /ping"
        if response.status_code in fine:
            return "clear", f"{response.status_code} {response.text[:100]}"
        if 400 <= response.status_code < 500:
            try:
                document = response.json()
            except ValueError:
                return "unclear", f"{response.status_code} with a non-JSON body"
            return "clear", f"{response.status_code} {json.dumps(document)[:120]}"
        return "silent", f"{response.status_code} (an error was expected) {response.text[:100]}"

    return run


def raw_probe(lab: Lab, payload: bytes, close_early: bool = False):
    """Bytes straight onto a socket (malformed HTTP, aborted uploads); the server must stay clean."""

    def run() -> tuple[str, str]:
        before = lab.server_errors()
        host, port = lab.url.removeprefix("http://").split(":")
        reply = b""
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(payload)
            if close_early:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
            else:
                with suppress(OSError):
                    reply = sock.recv(4096)
        time.sleep(0.3)  # let the server log whatever the abort caused
        after = lab.server_errors()
        if after[1] > before[1]:
            return "traceback", "traceback in the server log"
        if after[0] > before[0]:
            return "5xx", "counted as a 5xx in /metrics"
        if not lab.alive():
            return "5xx", "server stopped answering /ping"
        status = reply.split(b" ", 2)[1:2]
        if reply and status and status[0].startswith(b"5"):
            return "5xx", reply[:80].decode(errors="replace")
        return "clear", reply[:60].decode(errors="replace") or "closed, nothing counted or logged"

    return run


def served(lab: Lab, document: dict) -> tuple[dict | None, tuple[str, str]]:
    """POST a valid request: ``(its JSON answer, ...)``, or ``(None, the outcome of a non-200)``."""
    body = json.dumps(document).encode()
    response = httpx.post(f"{lab.url}/invocations", content=body, headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        return None, (("5xx" if response.status_code >= 500 else "unclear"), f"{response.status_code} {response.text}")
    return response.json(), ("clear", "")


def score_probe(lab: Lab, user: str, item: str):
    """A valid pair with a tricky raw id: the served score must be the model's score for that id."""

    def run() -> tuple[str, str]:
        answer, outcome = served(lab, {"user_id": user, "item_id": item})
        if answer is None:
            return outcome
        expected = lab.true_score(user, item)
        if abs(answer["score"] - expected) > SCORE_TOLERANCE:
            return "silent", f"served {answer['score']:.5f}, the model says {expected:.5f}"
        return "clear", f"score {answer['score']:.4f} == model"

    return run


def top_k_probe(lab: Lab, user: str, k: int):
    """Top-K must be the model's best unseen items with the model's scores."""

    def run() -> tuple[str, str]:
        answer, outcome = served(lab, {"user_id": user, "top_k": k})
        if answer is None:
            return outcome
        items = answer["items"]
        candidates = lab.top_k_candidates(user, k)
        wrong = [i["item_id"] for i in items if abs(i["score"] - lab.true_score(user, i["item_id"])) > SCORE_TOLERANCE]
        missed = [i["item_id"] for i in items if i["item_id"] not in candidates]
        if wrong or missed or len(items) != k:
            return (
                "silent",
                f"{len(items)} items; scores unlike the model's: {wrong[:3]}; not in its top {k}: {missed[:3]}",
            )
        return "clear", f"{k} items == the model's top {k}"

    return run


class SlowClients:
    """Connections that stall mid-headers or mid-body; checked at the end: has the server closed them?"""

    def __init__(self, lab: Lab, count: int = 8):
        host, port = lab.url.removeprefix("http://").split(":")
        self.started = time.monotonic()
        self.sockets: list[tuple[str, socket.socket]] = []
        partial = {
            "stalled headers": b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: applica",
            "stalled body": b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"user_id"',
        }
        for n in range(count):
            name, payload = list(partial.items())[n % 2]
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(payload)
            self.sockets.append((f"{name} #{n}", sock))

    def probes(self) -> list[Probe]:
        return [Probe("server", f"slow client: {name}", lambda s=sock: self._closed(s)) for name, sock in self.sockets]

    def _closed(self, sock: socket.socket) -> tuple[str, str]:
        deadline = self.started + SLOW_CLIENT_LIMIT_S
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            return "silent", f"still open after {SLOW_CLIENT_LIMIT_S} s: the server never times it out"
        except OSError:
            data = b""
        finally:
            sock.close()
        status = data.split(b" ", 2)[1:2]
        if status and status[0].startswith(b"5"):
            return "5xx", data[:60].decode(errors="replace")
        return "clear", f"closed after {time.monotonic() - self.started:.0f} s {data[:30].decode(errors='replace')}"


def serve_flag_probe(lab: Lab, args: list[str], env: dict[str, str]):
    """``python -m ncf_serving serve`` with a bad flag/setting must exit with one line, not listen."""

    def run() -> tuple[str, str]:
        model_dir = next((lab.base / "images").iterdir()) / "context" / "model"
        command = [sys.executable, "-m", "ncf_serving", "serve", "--model-dir", str(model_dir), *args]
        proc = subprocess.Popen(
            command, env={**lab.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return "silent", f"still serving after 20 s: {last_line(err)}"
        if TRACEBACK in out + err:
            return "traceback", last_line(err)
        if proc.returncode == 0:
            return "silent", "exit 0"
        return "clear", last_line(err)

    return run


def outbound_probe(lab: Lab) -> tuple[str, str]:
    """Serving must open no connection beyond loopback (no telemetry, no phone-home)."""
    connections = psutil.Process(lab.server_pid).net_connections(kind="inet")
    remote = [c.raddr for c in connections if c.raddr and not str(c.raddr.ip).startswith(("127.", "::1"))]
    if remote:
        return "silent", f"outbound connections: {remote}"
    log = lab.server_log.read_text(errors="replace")
    if "telemetry" in log.lower():
        return "silent", "the runtime logs telemetry activity"
    return "clear", f"{len(connections)} socket(s), all loopback"


def server_probes(lab: Lab) -> list[Probe]:
    user, item = "u20", lab.items[3]

    def json_post(name: str, body: bytes, **kwargs) -> Probe:
        return Probe("server", name, http_probe(lab, "POST", "/invocations", body, **kwargs))

    bodies = {
        "not JSON": b"{user_id: 1",
        "empty body": b"",
        "JSON null": b"null",
        "JSON list": b"[1, 2]",
        "JSON string": b'"hello"',
        "unknown key": json.dumps({"user_id": user, "item_id": item, "extra": 1}).encode(),
        "missing item_id": json.dumps({"user_id": user}).encode(),
        "user_id float": json.dumps({"user_id": 1.5, "item_id": item}).encode(),
        "user_id bool": json.dumps({"user_id": True, "item_id": item}).encode(),
        "user_id null": json.dumps({"user_id": None, "item_id": item}).encode(),
        "user_id list": json.dumps({"user_id": [user], "item_id": item}).encode(),
        "user_id object": json.dumps({"user_id": {"id": user}, "item_id": item}).encode(),
        "user_id empty": json.dumps({"user_id": "", "item_id": item}).encode(),
        "user_id 300 chars": json.dumps({"user_id": "u" * 300, "item_id": item}).encode(),
        "unknown user": json.dumps({"user_id": "nobody", "item_id": item}).encode(),
        "unknown item": json.dumps({"user_id": user, "item_id": "i9999"}).encode(),
        "negative int id": json.dumps({"user_id": -1, "item_id": item}).encode(),
        "huge int id": json.dumps({"user_id": 10**30, "item_id": item}).encode(),
        "4300-digit id": b'{"user_id": ' + b"9" * 4300 + b', "item_id": "i1"}',
        "4301-digit id": b'{"user_id": ' + b"9" * 4301 + b', "item_id": "i1"}',
        "NaN literal": b'{"user_id": NaN, "item_id": "i1"}',
        "Infinity literal": b'{"user_id": Infinity, "item_id": "i1"}',
        "deep nesting": b"[" * 50_000 + b"]" * 50_000,
        "top_k 0": json.dumps({"user_id": user, "top_k": 0}).encode(),
        "top_k -5": json.dumps({"user_id": user, "top_k": -5}).encode(),
        "top_k string": json.dumps({"user_id": user, "top_k": "10"}).encode(),
        "top_k float": json.dumps({"user_id": user, "top_k": 10.0}).encode(),
        "top_k bool": json.dumps({"user_id": user, "top_k": True}).encode(),
        "top_k past the limit": json.dumps({"user_id": user, "top_k": 10**6}).encode(),
        "top_k 10**30": json.dumps({"user_id": user, "top_k": 10**30}).encode(),
        "exclude_seen string": json.dumps({"user_id": user, "top_k": 3, "exclude_seen": "no"}).encode(),
        "instances empty": json.dumps({"instances": []}).encode(),
        "instances not a list": json.dumps({"instances": {"user_id": user}}).encode(),
        "instances of strings": json.dumps({"instances": ["a", "b"]}).encode(),
        "instance missing item": json.dumps({"instances": [{"user_id": user}]}).encode(),
        "instances past max_batch": json.dumps({"instances": [{"user_id": user, "item_id": item}] * 20_000}).encode(),
        "instances with unknown id": json.dumps(
            {"instances": [{"user_id": user, "item_id": item}, {"user_id": "x", "item_id": item}]}
        ).encode(),
        "mixed forms": json.dumps({"instances": [], "top_k": 3, "user_id": user}).encode(),
        "body past the size limit": b'{"user_id": "' + b"a" * (7 << 20) + b'"}',
        "latin-1 body": '{"user_id": "caf\u00e9", "item_id": "i1"}'.encode("latin-1"),
        "NUL bytes": b'{"user_id": "\x00", "item_id": "i1"}',
        "duplicate keys": b'{"user_id": "u20", "user_id": 5, "item_id": "i1"}',
    }
    probes = [json_post(f"invocations: {name}", body) for name, body in bodies.items()]
    bom = b"\xef\xbb\xbf" + json.dumps({"user_id": user, "item_id": item}).encode()
    probes.append(json_post("invocations: utf-8 BOM", bom, fine=(200,)))  # Python's JSON reader takes a BOM
    probes.append(
        json_post(
            "invocations: utf-16 body", json.dumps({"user_id": user, "item_id": item}).encode("utf-16"), fine=(200,)
        )
    )
    probes += [
        json_post("invocations: text/plain", b"{}", headers={"Content-Type": "text/plain"}),
        json_post("invocations: no Content-Type", b"{}", headers={"Content-Type": ""}),
        json_post(
            "invocations: form encoded", b"user_id=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ),
        json_post("invocations: multipart", b"--x--", headers={"Content-Type": "multipart/form-data; boundary=x"}),
        Probe("server", "GET /invocations", http_probe(lab, "GET", "/invocations")),
        Probe("server", "PUT /invocations", http_probe(lab, "PUT", "/invocations", b"{}")),
        Probe("server", "DELETE /invocations", http_probe(lab, "DELETE", "/invocations")),
        Probe("server", "POST /invocations/ (trailing slash)", http_probe(lab, "POST", "/invocations/", b"{}")),
        Probe("server", "POST /ping", http_probe(lab, "POST", "/ping", b"{}")),
        Probe("server", "GET /nope", http_probe(lab, "GET", "/nope")),
        Probe("server", "GET /../../etc/passwd", http_probe(lab, "GET", "/%2e%2e/%2e%2e/etc/passwd")),
        Probe("server", "GET /docs (no docs exposed)", http_probe(lab, "GET", "/docs")),
        Probe("server", "GET /openapi.json", http_probe(lab, "GET", "/openapi.json")),
        Probe("server", "huge query string", http_probe(lab, "GET", "/ping?" + "a" * 60_000, fine=(200, 414, 431))),
    ]
    raw = {
        "garbage request line": b"HELLO\r\n\r\n",
        "HTTP/0.9 style": b"GET /ping\r\n\r\n",
        "bad Content-Length": b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        "negative Content-Length": b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "malformed chunked body": b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n",
        "header without colon": b"GET /ping HTTP/1.1\r\nHost x\r\n\r\n",
        "100 KB header": b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    }
    probes += [Probe("server", f"raw: {name}", raw_probe(lab, payload)) for name, payload in raw.items()]
    upload = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    for n in range(3):
        probes.append(Probe("server", f"aborted upload #{n + 1}", raw_probe(lab, upload + b'{"user_id": "u', True)))
    probes.append(
        Probe(
            "server",
            "aborted chunked upload",
            raw_probe(
                lab,
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Transfer-Encoding: chunked\r\n\r\n10\r\n{"user_id": "u',
                True,
            ),
        )
    )
    for raw_id in SPECIAL_USERS:
        probes.append(Probe("server", f"pair score for raw id {raw_id!r}", score_probe(lab, raw_id, item)))
    probes.append(Probe("server", "top-k for raw id '007'", top_k_probe(lab, "007", 5)))
    probes.append(Probe("server", f"top-k for raw id {FULLWIDTH_ONE!r}", top_k_probe(lab, FULLWIDTH_ONE, 5)))
    probes.append(Probe("server", "serves no outbound connection (telemetry)", lambda: outbound_probe(lab)))
    return probes


def serve_flag_probes(lab: Lab) -> list[Probe]:
    """Bad flags and settings for the server process itself (each starts its own; run in parallel)."""
    probes = []
    for args, env, name in (
        (["--port", "99999"], {}, "serve --port 99999"),
        (["--port", "-1"], {}, "serve --port -1"),
        (["--port", "http"], {}, "serve --port http"),
        ([], {"NCF_PORT": "99999"}, "NCF_PORT=99999"),
        ([], {"NCF_MAX_BATCH": "many"}, "NCF_MAX_BATCH=many"),
        ([], {"NCF_MAX_BODY_BYTES": "0"}, "NCF_MAX_BODY_BYTES=0"),
    ):
        probes.append(Probe("server", name, serve_flag_probe(lab, args, env)))
    return probes


# == CLI and config probes ==========================================================================


def refuse(lab: Lab, *args: str, workdir: Path | None = None, env: dict[str, str] | None = None, timeout=None):
    """``ncfctl ARGS`` must refuse; it runs in a private copy of the workspace unless ``workdir`` is given."""

    def run() -> tuple[str, str]:
        where = workdir or lab.fresh("-".join(args)[:30] or "cli")
        return judge_refusal(lab.cli(*args, workdir=where, env=env, timeout=timeout))

    return run


def invoke_probe(lab: Lab, raw_id: str, item: str):
    """``ncfctl invoke --user RAW`` must score that raw id, exactly as typed."""

    def run() -> tuple[str, str]:
        proc = lab.cli("invoke", "--user", raw_id, "--item", item, "--json")
        if proc is None or proc.returncode != 0:
            return judge_refusal(proc) if proc is None or TRACEBACK in proc.stderr else ("unclear", proc.stderr[-160:])
        (result,) = json.loads(proc.stdout)["results"]
        served, expected = result["response"]["score"], lab.true_score(raw_id, item)
        if abs(served - expected) > SCORE_TOLERANCE:
            sent = result["request"]["user_id"]
            return "silent", f"sent {sent!r}: score {served:.4f}, the model's for {raw_id!r} is {expected:.4f}"
        return "clear", f"score {served:.4f} == model"

    return run


TINY_DATA = {  # a synthetic dataset that takes a second (for probes that get as far as writing one)
    "NCFCTL_DATA__SYNTHETIC__USERS": "60",
    "NCFCTL_DATA__SYNTHETIC__ITEMS": "40",
    "NCFCTL_DATA__SYNTHETIC__INTERACTIONS": "2000",
    "NCFCTL_DATA__SYNTHETIC__MIN_PER_USER": "5",
    "NCFCTL_DATA__EVAL_NEGATIVES": "5",
}
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "probe",
    "AWS_SECRET_ACCESS_KEY": "probe",
    "NCFCTL_AWS__ENDPOINT_URL": "http://127.0.0.1:9",  # the discard port: nothing answers
    "NCFCTL_AWS__REGION": "us-east-1",
    "NCFCTL_AWS__BUCKET": "probe-bucket",
    "NCFCTL_AWS__ROLE_ARN": "arn:aws:iam::123456789012:role/Probe",
    "NCFCTL_AWS__CODEBUILD_ROLE_ARN": "arn:aws:iam::123456789012:role/Probe",
    "NCFCTL_AWS__IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ncf:probe",
}


def aws_probe(lab: Lab, *args: str):
    """Every AWS command against an endpoint that refuses connections: one line, exit 2."""

    def run() -> tuple[str, str]:
        workdir = lab.fresh(f"aws-{'-'.join(a.strip('-') for a in args)[:40]}-{time.monotonic_ns()}")
        info = {"backend": "sagemaker", "status": "running", "endpoint_name": "ncf-probe", "region": "us-east-1"}
        from ncfctl.workspace import Workspace

        with Workspace(workdir).create("deployment", info=info):
            pass
        return judge_refusal(lab.cli(*args, workdir=workdir, env=AWS_ENV, timeout=240))

    return run


def cli_probes(lab: Lab) -> list[Probe]:
    item = lab.items[3]
    bad = {
        "train --epochs 0": ("train", "--epochs", "0"),
        "train --epochs -1": ("train", "--epochs", "-1"),
        "train --epochs abc": ("train", "--epochs", "abc"),
        "train --batch-size 0": ("train", "--batch-size", "0"),
        "train --lr inf": ("train", "--lr", "inf"),
        "train --lr nan": ("train", "--lr", "nan"),
        "train --lr 0": ("train", "--lr", "0"),
        "train --lr -1": ("train", "--lr", "-1"),
        "train --lr 1e400": ("train", "--lr", "1e400"),
        "train --lr 1e30 (diverges)": ("train", "--epochs", "1", "--factors", "8", "--layers", "16,8", "--lr", "1e30"),
        "train --top-k 0": ("train", "--top-k", "0"),
        "train --top-k 21 (>= candidates)": (
            "train",
            "--epochs",
            "1",
            "--factors",
            "8",
            "--layers",
            "16,8",
            "--top-k",
            "21",
        ),
        "train --top-k 100000": ("train", "--epochs", "1", "--top-k", "100000"),
        "train --layers 16,x": ("train", "--layers", "16,x"),
        "train --layers 15,8": ("train", "--layers", "15,8"),
        "train --layers 0,8": ("train", "--layers", "0,8"),
        "train --layers ''": ("train", "--layers", ""),
        "train --factors 0": ("train", "--factors", "0"),
        "train --dropout 1.5": ("train", "--dropout", "1.5"),
        "train --negatives 0": ("train", "--negatives", "0"),
        "train --model foo": ("train", "--model", "foo"),
        "train --task foo": ("train", "--task", "foo"),
        "train --nproc 0": ("train", "--nproc", "0"),
        "train --dataset-id nope": ("train", "--dataset-id", "nope"),
        "train --eval-only nope": ("train", "--eval-only", "nope"),
        "train --pretrain-gmf alone": ("train", "--pretrain-gmf", "x"),
        "train --resume (other settings)": ("train", "--resume", "--lr", "0.05", "--epochs", "3"),
        "data --seed -1": ("data", "--seed", "-1"),
        "data --seed 2**64": ("data", "--seed", str(2**64)),
        "data --test-ratio 1.5": ("data", "--test-ratio", "1.5"),
        "data --eval-negatives 0": ("data", "--eval-negatives", "0"),
        "data --eval-negatives 100000": (
            "data",
            "--eval-negatives",
            "100000",
            "--dataset",
            "csv",
            "--source",
            "log.csv",
        ),
        "data --dataset foo": ("data", "--dataset", "foo"),
        "data --source missing": ("data", "--dataset", "csv", "--source", "/nonexistent.csv"),
        "data --dataset csv, no --source": ("data", "--dataset", "csv"),
        "data --split foo": ("data", "--split", "foo"),
        "data --min-rating abc": ("data", "--min-rating", "abc"),
        "data --user-col nope": ("data", "--dataset", "csv", "--source", "log.csv", "--user-col", "nope"),
        "prune --rate 0": ("prune", "--rate", "0"),
        "prune --rate 1": ("prune", "--rate", "1"),
        "prune --rate -0.1": ("prune", "--rate", "-0.1"),
        "prune --method foo": ("prune", "--method", "foo"),
        "prune --steps 0": ("prune", "--steps", "0"),
        "prune --model nope": ("prune", "--model", "nope"),
        "finetune --fraction 2": ("finetune", "--fraction", "2"),
        "finetune --lr inf": ("finetune", "--lr", "inf"),
        "finetune nope": ("finetune", "nope"),
        "finetune --epochs 0": ("finetune", "--epochs", "0"),
        "neo compile --target foo": ("neo", "compile", "--target", "foo"),
        "neo compile --batch-size 0": ("neo", "compile", "--batch-size", "0"),
        "neo compile --framework foo": ("neo", "compile", "--framework", "foo"),
        "neo compile --model nope": ("neo", "compile", "--model", "nope"),
        "neo status nope": ("neo", "status", "nope"),
        "build-image --compiled nope": ("build-image", "--compiled", "nope"),
        "build-image --backend foo": ("build-image", "--backend", "foo"),
        "build-image --backend none --push": ("build-image", "--backend", "none", "--push"),
        "deploy --port 99999": ("deploy", "--port", "99999"),
        "deploy --port -1": ("deploy", "--port", "-1"),
        "deploy --image nope": ("deploy", "--image", "nope"),
        "deploy --backend foo": ("deploy", "--backend", "foo"),
        "deploy stop --port 1": ("deploy", "stop", "--port", "1"),
        "deploy --min-instances alone": ("deploy", "--backend", "sagemaker", "--min-instances", "1"),
        "invoke (no flags)": ("invoke",),
        "invoke --user only": ("invoke", "--user", "u1"),
        "invoke --top-k 0": ("invoke", "--user", "u1", "--top-k", "0"),
        "invoke unknown user": ("invoke", "--user", "nobody", "--item", item),
        "invoke --top-k past the server limit": ("invoke", "--user", "u20", "--top-k", "100000"),
        "invoke --file missing": ("invoke", "--file", "/nonexistent.jsonl"),
        "invoke --deployment nope": ("invoke", "--user", "u1", "--item", item, "--deployment", "nope"),
        **({} if torch.cuda.is_available() else {"train --device cuda (none here)": ("train", "--device", "cuda")}),
        "bench --compare nope": ("bench", "--compare", "nope"),
        "unknown command": ("frobnicate",),
        "unknown option": ("train", "--frobnicate"),
    }
    needs_deployment = {"invoke unknown user", "invoke --top-k past the server limit"}
    probes = [
        Probe("cli", name, refuse(lab, *args, workdir=lab.base if name in needs_deployment else None))
        for name, args in bad.items()
    ]
    files = {
        "latin-1": '{"user_id": "caf\u00e9", "item_id": "i1"}\n'.encode("latin-1"),
        "utf-16": '{"user_id": "u1", "item_id": "i1"}\n'.encode("utf-16"),
        "deep nesting": b"[" * 100_000 + b"]" * 100_000 + b"\n",
        "4301-digit integer": b'{"user_id": ' + b"9" * 4301 + b', "item_id": "i1"}\n',
        "not an object": b"[1, 2]\n",
        "not JSON": b"{user_id: 1}\n",
        "empty": b"\n\n",
        "binary": bytes(range(256)),
    }
    for name, content in files.items():
        path = lab.root / f"requests-{name.replace(' ', '-')}.jsonl"
        path.write_bytes(content)
        probes.append(Probe("cli", f"invoke --file {name}", refuse(lab, "invoke", "--file", str(path))))
    for raw_id in ("007", "7", "1_0", "10", " 1", FULLWIDTH_ONE):
        probes.append(Probe("cli", f"invoke --user {raw_id!r} scores that user", invoke_probe(lab, raw_id, item)))
    for args in (
        ("neo", "compile", "--backend", "sagemaker"),
        ("train", "--backend", "sagemaker", "--epochs", "1"),
        ("build-image", "--backend", "codebuild"),
        ("deploy", "--backend", "sagemaker"),
        ("deploy", "status"),
        ("deploy", "delete"),
        ("invoke", "--user", "u1", "--item", "i1"),
    ):
        probes.append(Probe("cli", f"unreachable AWS: {' '.join(args)}", aws_probe(lab, *args)))
    return probes


def config_probes(lab: Lab) -> list[Probe]:
    folder = lab.root / "configs"
    folder.mkdir()
    bomb = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 10)]
    files: dict[str, bytes] = {
        "binary": bytes(range(256)) * 8,
        "not a mapping": b"- 1\n- 2\n",
        "invalid YAML": b"train: [\n",
        "alias bomb": ("\n".join(bomb) + "\n").encode(),
        "recursive alias": b"a: &a [*a]\n",
        "2 MB": b"# padding\n" * 200_000,
        "unknown key": b"train:\n  epohcs: 3\n",
        "unknown section": b"nope:\n  x: 1\n",
        "wrong type": b"train:\n  epochs: many\n",
        "section is a scalar": b"train: 5\n",
        "lr .inf": b"train:\n  lr: .inf\n",
        "lr .nan": b"train:\n  lr: .nan\n",
        "5 MB bad value": b"train:\n  epochs: '" + b"x" * (5 << 20 >> 3) + b"'\n",
        "python tag": b"train: !!python/object/apply:os.system ['true']\n",
        "latin-1 text": "train:\n  task: 'caf\u00e9'\n".encode("latin-1"),
        "seed -1": b"seed: -1\n",
        "port 70000": b"serving:\n  port: 70000\n",
        "users 1": b"data:\n  synthetic:\n    users: 1\n",
    }
    probes = []
    for name, content in files.items():
        path = folder / f"{name.replace(' ', '-')}.yaml"
        path.write_bytes(content)
        probes.append(Probe("config", f"--config {name}", refuse(lab, "--config", str(path), "data", timeout=60)))
    probes += [
        Probe("config", "--config missing", refuse(lab, "--config", "/nonexistent.yaml", "data")),
        Probe("config", "--config a directory", refuse(lab, "--config", str(folder), "data")),
        Probe("config", "--config /dev/zero", refuse(lab, "--config", "/dev/zero", "data", timeout=60)),
    ]
    envs = {
        "NCFCTL_TRAIN__EPOCHS='['": {"NCFCTL_TRAIN__EPOCHS": "["},
        "NCFCTL_TRAIN__EPOCHS=abc": {"NCFCTL_TRAIN__EPOCHS": "abc"},
        "NCFCTL_TRAIN__EPOCHS=0": {"NCFCTL_TRAIN__EPOCHS": "0"},
        "NCFCTL_TRAIN__LR=.inf": {"NCFCTL_TRAIN__LR": ".inf"},
        "NCFCTL_FINETUNE__LR=-1": {"NCFCTL_FINETUNE__LR": "-1"},
        "NCFCTL_SEED=-1": {"NCFCTL_SEED": "-1"},
        "NCFCTL_WORKDIR=/dev/null": {"NCFCTL_WORKDIR": "/dev/null"},
        "NCFCTL_WORKDIR=/proc/version (a file)": {"NCFCTL_WORKDIR": "/proc/version"},
        "NCFCTL_WORKDIR unwritable": {"NCFCTL_WORKDIR": "/proc/ncfctl-probe"},
        "NCFCTL_TRAIN=5": {"NCFCTL_TRAIN": "5"},
        "NCFCTL_NOPE__X=1": {"NCFCTL_NOPE__X": "1"},
        "NCFCTL_SERVING__PORT=70000": {"NCFCTL_SERVING__PORT": "70000"},
        "NCFCTL_CONFIG missing": {"NCFCTL_CONFIG": "/nonexistent.yaml"},
        "alias bomb in a variable": {
            "NCFCTL_TRAIN__LAYERS": "[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(["*a"] * 5) + "]"
        },
    }
    for name, env in envs.items():
        workdir = Path(env["NCFCTL_WORKDIR"]) if "NCFCTL_WORKDIR" in env else None
        probes.append(Probe("config", name, refuse(lab, "data", workdir=workdir, env={**TINY_DATA, **env})))
    return probes


# == file probes ====================================================================================


def flip_middle(path: Path, count: int = 8) -> None:
    """Flip ``count`` bytes in the middle of the largest run of non-structural bytes (tensor data)."""
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    for offset in range(count):
        raw[middle + offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def flip_tensor(path: Path, payload: bytes) -> None:
    """Flip 8 bytes in the middle of ``payload`` inside ``path`` (an ONNX model's weights live in
    ``model.onnx.data`` beside it when compile wrote them as external data)."""
    if path.suffix == ".onnx" and path.with_name(path.name + ".data").is_file():
        path = path.with_name(path.name + ".data")
    raw = bytearray(path.read_bytes())
    start = raw.find(payload)
    if start < 0:
        raise RuntimeError(f"payload not found in {path}")
    for offset in range(8):
        raw[start + len(payload) // 2 + offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def rerecord(folder: Path) -> None:
    """Rewrite the artifact's manifest hashes: past ncfctl's checksum, to the content checks behind it."""
    from ncf_serving.checksums import hash_folder

    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"] = hash_folder(folder, exclude=["manifest.json"])
    (folder / "manifest.json").write_text(json.dumps(manifest))


def only(folder: Path) -> Path:
    return next(p for p in folder.iterdir() if p.is_dir())


def damaged(lab: Lab, name: str, damage: Callable[[Path], None], *args: str, env=None, check=None):
    """A fresh workspace copy, damaged, then ``ncfctl ARGS`` on it (``check`` judges instead of a refusal)."""

    def run() -> tuple[str, str]:
        workdir = lab.fresh(name.replace(" ", "-").replace("/", "-"))
        damage(workdir)
        proc = lab.cli(*args, workdir=workdir, env=env)
        return check(proc, workdir) if check else judge_refusal(proc)

    return run


def model_pt_edit(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(workdir: Path) -> None:
        folder = only(workdir / "models")
        payload = torch.load(folder / "model.pt", weights_only=True)
        edit(payload)
        torch.save(payload, folder / "model.pt")
        rerecord(folder)

    return damage


def dataset_edit(name: str, edit: Callable[[Path], None], keep_sums: bool = False) -> Callable[[Path], None]:
    def damage(workdir: Path) -> None:
        folder = only(workdir / "data")
        edit(folder / name)
        if not keep_sums:
            rerecord(folder)

    return damage


def parquet_edit(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    return lambda path: edit(pd.read_parquet(path)).to_parquet(path, index=False)


def manifest_write(kind_dir: str, content: bytes) -> Callable[[Path], None]:
    return lambda workdir: (only(workdir / kind_dir) / "manifest.json").write_bytes(content)


def deploy_check(lab: Lab):
    """Deploying a broken image must fail; if it went ready, compare a served score with the model's."""

    def check(proc, workdir: Path) -> tuple[str, str]:
        outcome = judge_refusal(proc)
        if outcome[0] != "silent" or proc is None:
            return outcome
        manifest = json.loads((only(workdir / "deployments") / "manifest.json").read_text())
        item = lab.items[3]
        body = json.dumps({"user_id": "u20", "item_id": item}).encode()
        served = httpx.post(
            manifest["info"]["url"] + "/invocations", content=body, headers={"Content-Type": "application/json"}
        )
        expected = lab.true_score("u20", item)
        score = served.json().get("score") if served.status_code == 200 else None
        return "silent", f"went ready on a broken model; served {score}, the model says {expected:.4f}"

    return check


def resume_damage(kind: str) -> Callable[[Path], None]:
    """The newest run's checkpoint (the one the probe just trained), damaged."""

    def damage(workdir: Path) -> None:
        checkpoint = max((workdir / ".runs").glob("*/checkpoint.pt"), key=lambda path: path.stat().st_mtime)
        if kind == "flip":
            state = torch.load(checkpoint, weights_only=True)
            tensor = (state.get("state") or state)["model"]["gmf_user.weight"]
            flip_tensor(checkpoint, tensor.numpy().tobytes())
        elif kind == "garbage":
            checkpoint.write_bytes(b"not a checkpoint")
        else:  # a state without a checksum (what ncfctl wrote before checksums)
            state = torch.load(checkpoint, weights_only=True)
            torch.save(state.get("state") or state, checkpoint)

    return damage


def file_probes(lab: Lab) -> list[Probe]:
    compile_local = ("neo", "compile", "--backend", "local")
    small_train = ("train", "--epochs", "1", "--factors", "8", "--layers", "16,8", "--batch-size", "256")
    model_payload = lambda workdir: lab.model.gmf_user.weight.detach().numpy().tobytes()  # noqa: E731
    probes: list[Probe] = []

    def add(name: str, damage, *args: str, **kwargs) -> None:
        probes.append(Probe("files", name, damaged(lab, name, damage, *args, **kwargs)))

    flip_model = lambda w: flip_tensor(only(w / "models") / "model.pt", model_payload(w))  # noqa: E731
    for command in (
        ("prune", "--rate", "0.5"),
        compile_local,
        ("finetune", "MODEL", "--epochs", "1"),
        ("train", "--eval-only", "MODEL"),
    ):
        args = tuple(lab.model_id if a == "MODEL" else a for a in command)
        add(f"model.pt flipped bytes -> {' '.join(command[:2])}", flip_model, *args)
    add(
        "model.pt truncated",
        lambda w: (p := only(w / "models") / "model.pt").write_bytes(p.read_bytes()[:500]),
        *compile_local,
    )
    add(
        "model.pt garbage (re-recorded)",
        lambda w: (only(w / "models") / "model.pt").write_bytes(b"x" * 100) or rerecord(only(w / "models")),
        *compile_local,
    )
    add("model.pt missing", lambda w: (only(w / "models") / "model.pt").unlink(), *compile_local)
    add(
        "model.pt wrong shape",
        model_pt_edit(lambda p: p["state_dict"].update({"gmf_user.weight": torch.zeros(3, 8)})),
        *compile_local,
    )
    add("model.pt missing key", model_pt_edit(lambda p: p["state_dict"].pop("predict.bias")), *compile_local)
    add("model.pt bad spec", model_pt_edit(lambda p: p["spec"].update({"num_users": -5})), *compile_local)
    add("model.pt without spec", model_pt_edit(lambda p: p.pop("spec")), *compile_local)

    def pickled_code(workdir: Path) -> None:
        folder = only(workdir / "models")
        torch.save({"spec": {}, "state_dict": {}, "x": Path("/")}, folder / "model.pt")  # a class: not weights-only
        rerecord(folder)

    add("model.pt pickling a class (weights_only)", pickled_code, *compile_local)
    manifests = {
        "binary": bytes(range(256)),
        "a JSON list": b"[1, 2]",
        "empty": b"",
        "truncated JSON": b'{"kind": "model", "id":',
        "files a string": b'{"kind": "model", "id": "m", "created": "2024-01-01T00:00:00Z", "files": "x"}',
        "no kind": b'{"id": "m", "created": "2024-01-01T00:00:00Z"}',
        "created not a date": b'{"kind": "model", "id": "m", "created": "yesterday"}',
    }
    for name, content in manifests.items():
        add(f"model manifest.json {name}", manifest_write("models", content), *compile_local)

    def kind_mismatch(workdir: Path) -> None:
        shutil.copytree(only(workdir / "models"), workdir / "data" / "model-in-data")

    add("manifest kind does not match its folder", kind_mismatch, *small_train)

    def dataset_sizes(workdir: Path) -> None:
        folder = only(workdir / "data")
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["info"]["num_users"] = "many"
        (folder / "manifest.json").write_text(json.dumps(manifest))

    add("dataset manifest num_users 'many'", dataset_sizes, *small_train)
    swaps = {
        "train.parquet swapped for val.parquet": (
            "train.parquet",
            lambda p: shutil.copy(p.with_name("val.parquet"), p),
        ),
        "user_ids.parquet reversed": ("user_ids.parquet", parquet_edit(lambda f: f[::-1])),
        "test_negatives.npy flipped": ("test_negatives.npy", flip_middle),
        "item_ids.parquet missing": ("item_ids.parquet", lambda p: p.unlink()),
    }
    for name, (file, edit) in swaps.items():
        add(name, dataset_edit(file, edit, keep_sums=True), *small_train)
    contents = {
        "parquet negative ids": ("train.parquet", parquet_edit(lambda f: f.assign(user=f["user"] - 1000))),
        "parquet huge ids": ("train.parquet", parquet_edit(lambda f: f.assign(item=f["item"] + 2**40))),
        "parquet renamed column": ("val.parquet", parquet_edit(lambda f: f.rename(columns={"item": "movie"}))),
        "parquet no rows": ("train.parquet", parquet_edit(lambda f: f.iloc[:0])),
        "parquet float ids": ("test.parquet", parquet_edit(lambda f: f.assign(user=f["user"].astype(float)))),
        "parquet NaN ratings": ("train.parquet", parquet_edit(lambda f: f.assign(rating=np.nan))),
        "parquet garbage": ("val.parquet", lambda p: p.write_bytes(b"PAR1 garbage")),
        "user_ids one short": ("user_ids.parquet", parquet_edit(lambda f: f.iloc[:-1])),
        "negatives.npy garbage": ("test_negatives.npy", lambda p: p.write_bytes(b"\x93NUMPY garbage")),
        "negatives.npy wrong shape": ("val_negatives.npy", lambda p: np.save(p, np.zeros((3, 2), np.int64))),
        "negatives.npy out of range": ("test_negatives.npy", lambda p: np.save(p, np.full_like(np.load(p), 10**6))),
        "negatives.npy floats": ("test_negatives.npy", lambda p: np.save(p, np.load(p).astype(np.float32))),
        "negatives.npy pickled object": (
            "test_negatives.npy",
            lambda p: np.save(p, np.array([{}], dtype=object), allow_pickle=True),
        ),
    }
    for name, (file, edit) in contents.items():
        add(f"{name} (re-recorded)", dataset_edit(file, edit), *small_train)

    def compiled_edit(edit: Callable[[Path], None], keep_sums: bool = False) -> Callable[[Path], None]:
        def damage(workdir: Path) -> None:
            folder = only(workdir / "neo")
            edit(folder)
            if not keep_sums:
                rerecord(folder)

        return damage

    onnx_payload = lambda folder: max(  # noqa: E731
        (init.raw_data for init in __import__("onnx").load(str(folder / "model.onnx")).graph.initializer), key=len
    )
    add(
        "compiled model.onnx flipped -> build-image",
        compiled_edit(lambda f: flip_tensor(f / "model.onnx", onnx_payload(f)), True),
        "build-image",
        "--backend",
        "none",
    )
    add(
        "compiled fast-path arrays missing (re-recorded)",
        compiled_edit(lambda f: shutil.rmtree(f / "fastpath")),
        "build-image",
        "--backend",
        "none",
    )

    def short_ids(folder: Path) -> None:
        np.save(folder / "ids" / "user_ids.npy", np.load(folder / "ids" / "user_ids.npy")[:-1])

    add("compiled user ids mismatched (re-recorded)", compiled_edit(short_ids), "build-image", "--backend", "none")
    add(
        "compiled serving.json invalid (re-recorded)",
        compiled_edit(lambda f: (f / "serving.json").write_text("{")),
        "build-image",
        "--backend",
        "none",
    )
    add(
        "compiled seen items garbage (re-recorded)",
        compiled_edit(lambda f: (f / "seen_items" / "indices.npy").write_bytes(b"PK")),
        "build-image",
        "--backend",
        "none",
    )

    def image_model(rerecorded: bool) -> Callable[[Path], None]:
        def damage(workdir: Path) -> None:
            folder = only(workdir / "images")
            model = folder / "context" / "model" / "model.onnx"
            flip_tensor(model, onnx_payload(model.parent))
            if rerecorded:
                rerecord(folder)

        return damage

    deploy = ("deploy", "--backend", "local", "--port", "0", "--json")
    add("image model.onnx flipped -> deploy", image_model(False), *deploy, check=deploy_check(lab))
    add("image model.onnx flipped, manifest re-recorded -> server", image_model(True), *deploy, check=deploy_check(lab))

    def with_run(damage: Callable[[Path], None]) -> Callable[[Path], None]:
        def prepare(workdir: Path) -> None:
            proc = lab.cli(*small_train, workdir=workdir)
            if proc is None or proc.returncode != 0:
                raise RuntimeError("could not train the run to damage")
            damage(workdir)

        return prepare

    for kind in ("flip", "garbage", "no-checksum"):
        add(
            f"checkpoint {kind} -> train --resume",
            with_run(resume_damage(kind)),
            *small_train[:1],
            "--epochs",
            "2",
            *small_train[3:],
            "--resume",
        )

    inputs = lab.root / "inputs"
    inputs.mkdir(exist_ok=True)
    log = (lab.root / "log.csv").read_text().splitlines()
    tables = {
        "csv timestamp beyond int64": "\n".join([*log[:5], "u20,i1,99999999999999999999", *log[5:]]),
        "csv timestamp -2**64": "\n".join([*log[:5], f"u20,i1,{-(2**64)}", *log[5:]]),
        "csv missing column": log[0].replace("ts", "time") + "\n" + "\n".join(log[1:]),
        "csv empty": "user_id,item_id,ts\n",
        "csv ragged line": "\n".join([*log[:5], "u20,i1", *log[5:]]),
    }
    for name, text in tables.items():
        path = inputs / f"{name.replace(' ', '-')}.csv"
        path.write_text(text + "\n")
        probes.append(
            Probe("files", name, refuse(lab, "data", "--dataset", "csv", "--source", str(path), "--time-col", "ts"))
        )
    (inputs / "latin1.csv").write_bytes("user_id,item_id,ts\ncaf\u00e9,i1,5\n".encode("latin-1") * 1)
    probes.append(
        Probe(
            "files",
            "csv latin-1 bytes",
            refuse(lab, "data", "--dataset", "csv", "--source", str(inputs / "latin1.csv"), "--time-col", "ts"),
        )
    )
    pq_frames = {
        "parquet table no rows": pd.DataFrame(
            {"user_id": pd.Series([], dtype=str), "item_id": pd.Series([], dtype=str)}
        ),
        "parquet table renamed column": pd.DataFrame({"uid": ["a"], "item_id": ["b"]}),
        "parquet table null ids": pd.DataFrame({"user_id": ["a", None], "item_id": ["b", "c"]}),
        "parquet table NaN ratings": pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "rating": [np.nan]}),
    }
    for name, frame in pq_frames.items():
        path = inputs / f"{name.replace(' ', '-')}.parquet"
        frame.to_parquet(path)
        extra = ("--rating-col", "rating") if "rating" in frame.columns else ()
        probes.append(Probe("files", name, refuse(lab, "data", "--dataset", "parquet", "--source", str(path), *extra)))
    (inputs / "not.parquet").write_bytes(b"PAR1 this is not parquet")
    probes.append(
        Probe(
            "files",
            "parquet table garbage",
            refuse(lab, "data", "--dataset", "parquet", "--source", str(inputs / "not.parquet")),
        )
    )
    return probes


# == archive probes =================================================================================


def tar_bytes(build: Callable[[tarfile.TarFile], None], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        build(tar)
    return buffer.getvalue()


def add_member(tar: tarfile.TarFile, name: str, kind=tarfile.REGTYPE, data: bytes = b"", link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def cve_2025_4517(outer: Path, dest: Path) -> Callable[[tarfile.TarFile], None]:
    """Symlinks through directories with long names, so that the final link's expansion passes
    PATH_MAX and is left unresolved by ``os.path.realpath``; a hardlink through them then reaches
    ``outer/flag`` and the next member overwrites it."""
    steps = "abcdefghijklmnop"
    limit = os.pathconf(outer, "PC_PATH_MAX")
    width = (limit - len(str(dest)) - 1) // (len(steps) + 1)
    component = "d" * width

    def build(tar: tarfile.TarFile) -> None:
        path = ""
        for step in steps:
            add_member(tar, os.path.join(path, component), tarfile.DIRTYPE)
            add_member(tar, os.path.join(path, step), tarfile.SYMTYPE, link=component)
            path = os.path.join(path, component)
        deep_link = os.path.join(*steps, "l" * 254)
        add_member(tar, deep_link, tarfile.SYMTYPE, link=os.path.join(*([".."] * len(steps))))
        add_member(tar, "escape", tarfile.SYMTYPE, link=os.path.join(deep_link, ".."))
        add_member(tar, "flaglink", tarfile.LNKTYPE, link=os.path.join("escape", "flag"))
        add_member(tar, "flaglink", data=b"overwritten")

    return build


def archive_probe(lab: Lab, name: str, make: Callable[[Path, Path], bytes], expect_refusal: bool = True):
    """``safe_extract`` on a hostile archive: refused with NcfError, nothing written anywhere.

    The probes run with ``archive.max_bytes`` at 64 MiB (the default, 4 GiB, is sized for real Neo
    and training outputs), so the gzip bomb meets the cap.
    """

    def run() -> tuple[str, str]:
        from ncfctl.config import ArchiveConfig
        from ncfctl.errors import NcfError
        from ncfctl.safetar import safe_extract

        outer = Path(tempfile.mkdtemp(prefix="probe-tar-", dir=lab.root))
        (outer / "flag").write_bytes(b"original")
        dest = outer / "dest"
        archive = outer / "archive.tar.gz"
        archive.write_bytes(make(outer, dest))
        try:
            safe_extract(archive, dest, ArchiveConfig(max_bytes=64 * 2**20, max_members=10_000))
        except NcfError as exc:
            outcome, detail = "clear", str(exc)[:140]
        except Exception as exc:  # anything else is a crash a user would see as a traceback
            outcome, detail = "traceback", f"{type(exc).__name__}: {str(exc)[:120]}"
        else:
            outcome, detail = ("silent", "extracted") if expect_refusal else ("clear", "extracted")
        escaped = (outer / "flag").read_bytes() != b"original" or (outer / "newfile").exists()
        left = list(dest.rglob("*")) if outcome == "clear" and expect_refusal and dest.exists() else []
        shutil.rmtree(outer, ignore_errors=True)
        if escaped:
            return "silent", "wrote outside the target folder"
        if left:
            return "silent", f"refused, but left {len(left)} member(s) behind"
        return outcome, detail

    return run


def archive_probes(lab: Lab) -> list[Probe]:
    def simple(*members) -> Callable[[Path, Path], bytes]:
        return lambda outer, dest: tar_bytes(lambda tar: [add_member(tar, *m) for m in members])

    def bomb(outer: Path, dest: Path) -> bytes:
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
            info = tarfile.TarInfo("zeros.bin")
            info.size = 200 << 20
            tar.addfile(info, io.BufferedReader(_Zeros(info.size)))
        return buffer.getvalue()

    def many(outer: Path, dest: Path) -> bytes:
        return tar_bytes(lambda tar: [add_member(tar, f"f{n}", data=b"") for n in range(MANY_MEMBERS)])

    hostile = {
        "member ../escape": simple(("ok.txt", tarfile.REGTYPE, b"ok"), ("../newfile", tarfile.REGTYPE, b"x")),
        "absolute member": simple(("/tmp/ncfctl-probe-absolute", tarfile.REGTYPE, b"x")),
        "symlink to outside": simple(("link", tarfile.SYMTYPE, b"", "../flag"), ("link", tarfile.REGTYPE, b"over")),
        "symlink inside (links are refused)": simple(
            ("a.txt", tarfile.REGTYPE, b"a"), ("b", tarfile.SYMTYPE, b"", "a.txt")
        ),
        "hardlink inside (links are refused)": simple(
            ("a.txt", tarfile.REGTYPE, b"a"), ("b", tarfile.LNKTYPE, b"", "a.txt")
        ),
        "hardlink to outside": simple(("h", tarfile.LNKTYPE, b"", "../flag")),
        "fifo member": simple(("pipe", tarfile.FIFOTYPE)),
        "char device member": simple(("dev", tarfile.CHRTYPE)),
        "CVE-2025-4517 pattern": lambda outer, dest: tar_bytes(cve_2025_4517(outer, dest)),
        "gzip bomb (200 MB of zeros)": bomb,
        f"{MANY_MEMBERS:,} empty members": many,
        "truncated archive": lambda outer, dest: tar_bytes(lambda tar: add_member(tar, "a", data=os.urandom(8000)))[
            :5000
        ],
        "not an archive": lambda outer, dest: b"this is not a tar.gz",
        "valid member after a bad one": simple(
            ("good.txt", tarfile.REGTYPE, b"g"), ("../../bad", tarfile.REGTYPE, b"b")
        ),
    }
    probes = [Probe("archives", name, archive_probe(lab, name, make)) for name, make in hostile.items()]
    fine = simple(("model/compiled.so", tarfile.REGTYPE, b"so"), ("model/compiled.params", tarfile.REGTYPE, b"p"))
    probes.append(Probe("archives", "a normal Neo output still extracts", archive_probe(lab, "normal", fine, False)))
    return probes


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, streamed (the bomb is built without holding 200 MB)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


# == process probes =================================================================================


@contextmanager
def popen(lab: Lab, *args: str, workdir: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    full_env = {**lab.env, "NCFCTL_WORKDIR": str(workdir), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncfctl", *args], env=full_env, cwd=lab.root,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def wait_for(condition: Callable[[], object], timeout: float, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return None


def servers_of(workdir: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        command = " ".join(proc.info["cmdline"] or [])
        if "ncf_serving.serve" in command and str(workdir) in command:
            found.append(proc)
    return found


def orphan_probe(lab: Lab) -> tuple[str, str]:
    """kill -9 of ``ncfctl deploy`` while its server loads: no server may keep running unknown."""
    workdir = lab.fresh("kill-deploy")
    slow = {"NCF_WARMUP_ROUNDS": "5000000", "NCFCTL_DEPLOY__START_TIMEOUT": "600"}
    with popen(lab, "deploy", "--backend", "local", workdir=workdir, env=slow) as proc:
        server = wait_for(lambda: servers_of(workdir), 60, 0.05)
        if not server:
            return "unclear", "the server never started"
        proc.send_signal(signal.SIGKILL)
    lab.cli("deploy", "stop", workdir=workdir)  # the record written at spawn lets `deploy stop` find it
    time.sleep(2)
    alive = [p for p in servers_of(workdir) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if alive:
        return "silent", f"server pid {alive[0].pid} still running after deploy stop: known to no deployment"
    return "clear", "deploy stop found and stopped the orphaned server"


def staging_probe(lab: Lab, command: tuple[str, ...], env: dict[str, str], name: str) -> tuple[str, str]:
    """kill -9 while an artifact is staged; the next command must remove the dead process's folder."""
    workdir = lab.fresh(name)
    staging = workdir / ".staging"
    with popen(lab, *command, workdir=workdir, env=env) as proc:
        if not wait_for(lambda: staging.is_dir() and any(staging.iterdir()), 120):
            return "unclear", "never saw a staging folder"
        proc.send_signal(signal.SIGKILL)
    after = lab.cli("data", workdir=workdir, env=TINY_DATA)
    if after is None or after.returncode != 0:
        return (
            judge_refusal(after)
            if after is not None and TRACEBACK in after.stderr
            else ("unclear", "next command failed")
        )
    left = list(staging.iterdir()) if staging.is_dir() else []
    if left:
        return "silent", f"{len(left)} stale .staging folder(s) left after the next command"
    return "clear", "stale staging removed"


def live_staging_probe(lab: Lab, big: dict[str, str]) -> tuple[str, str]:
    """A command run beside a slow ``data`` must not remove that command's live staging folder.

    (A deploy is no subject for this: it commits its record as soon as the server is spawned, so
    its staging folder lives for milliseconds.)
    """
    workdir = lab.fresh("live-staging")
    with popen(lab, "data", "--json", workdir=workdir, env=big) as proc:
        if not wait_for(lambda: (workdir / ".staging").is_dir() and any((workdir / ".staging").iterdir()), 120):
            return "unclear", "never saw the data command's staging folder"
        lab.cli("neo", "compile", "--backend", "local", workdir=workdir)
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            return "unclear", "the data command never finished"
    if TRACEBACK in err:
        return "traceback", last_line(err)
    if proc.returncode != 0:
        return "silent", f"the live data command failed: {last_line(err)}"
    return "clear", "the live data command committed"


def process_probes(lab: Lab) -> list[Probe]:
    big = {"NCFCTL_DATA__SYNTHETIC__INTERACTIONS": "400000"}
    return [
        Probe("processes", "kill -9 deploy during start-up: orphan server", lambda: orphan_probe(lab)),
        Probe(
            "processes",
            "kill -9 data while saving: .staging left",
            lambda: staging_probe(lab, ("data",), big, "kill-data"),
        ),
        Probe(
            "processes",
            "kill -9 neo compile while saving: .staging left",
            lambda: staging_probe(lab, ("neo", "compile", "--backend", "local"), {}, "kill-compile"),
        ),
        Probe("processes", "a live staging folder is never removed", lambda: live_staging_probe(lab, big)),
    ]


# == running and reporting ==========================================================================


def run_probe(probe: Probe) -> Result:
    started = time.monotonic()
    try:
        outcome, detail = probe.run()
    except Exception as exc:  # the probe itself failed: report it, never hide it
        outcome, detail = "unclear", f"probe error: {type(exc).__name__}: {str(exc)[:120]}"
    if time.monotonic() - started > 60:
        detail = f"{detail} ({time.monotonic() - started:.0f} s)"
    return Result(probe.category, probe.name, outcome, detail)


def report(results: list[Result]) -> str:
    """A markdown table: one row per category, one column per outcome."""

    def row(label: str, rows: list[Result]) -> str:
        counts = [len(rows), *(sum(r.outcome == outcome for r in rows) for outcome in OUTCOMES)]
        return f"| {label} | " + " | ".join(str(count) for count in counts) + " |"

    lines = ["| category | " + " | ".join(HEADERS) + " |", "|---" * (len(HEADERS) + 1) + "|"]
    lines += [
        row(c, [r for r in results if r.category == c]) for c in CATEGORIES if any(r.category == c for r in results)
    ]
    lines.append(row("**total**", results))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3, help="CLI probes run this many at a time")
    parser.add_argument("--timeout", type=float, default=180, help="seconds before a command counts as hung")
    parser.add_argument("--only", choices=CATEGORIES, action="append", help="run only these categories")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway workspace")
    parser.add_argument("--json", type=Path, help="also write every result to this file")
    parser.add_argument("--subprocess", action="store_true", help="run every command as its own process (slower)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="ncfctl-probes-"))
    lab = Lab(root, args.timeout)
    started = time.monotonic()
    results: list[Result] = []
    try:
        print(f"setting up a throwaway workspace in {root} ...", file=sys.stderr, flush=True)
        lab.setup()
        if not args.subprocess:
            lab.runner = CommandRunner(args.jobs, lab.env, root)
        wanted = set(args.only or CATEGORIES)
        if "server" in wanted:
            slow = SlowClients(lab)
            results += [run_probe(p) for p in server_probes(lab)]
            results += [run_probe(p) for p in slow.probes()]
        parallel = [
            *(serve_flag_probes(lab) if "server" in wanted else []),
            *(cli_probes(lab) if "cli" in wanted else []),
            *(config_probes(lab) if "config" in wanted else []),
            *(file_probes(lab) if "files" in wanted else []),
        ]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            results += list(pool.map(run_probe, parallel))
        if "archives" in wanted:
            results += [run_probe(p) for p in archive_probes(lab)]
        if "processes" in wanted:
            results += [run_probe(p) for p in process_probes(lab)]
        if "server" in wanted:
            fives, tracebacks = lab.server_errors()
            results.append(
                Result("server", "whole run: no 5xx counted, no traceback logged, still ready",
                       "clear" if (fives, tracebacks) == (0, 0) and lab.alive() else "5xx" if fives else "traceback",
                       f"{fives} 5xx in /metrics, {tracebacks} tracebacks in the log")
            )  # fmt: skip
    finally:
        lab.stop()
        if lab.runner is not None:
            lab.runner.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(report(results))
    failures = [r for r in results if r.outcome != "clear"]
    if failures:
        print("\nnot clear:")
        for r in failures:
            print(f"  [{r.category}] {r.name}: {r.outcome}: {r.detail}")
    print(f"\n{len(results)} probes in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
