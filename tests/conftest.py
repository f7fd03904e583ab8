"""Shared fixtures: a temp workspace, moto's real server on 127.0.0.1, and ncfctl in-process or as a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["moto_gaps", "registered"]  # fixtures: calls moto lacks; Model Registry versions


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh work directory, also exported as NCFCTL_WORKDIR for in-process service calls.

    A local server a test deployed (e.g. with ``--keep-serving``) and did not stop, because an
    assertion failed first, is stopped afterwards, so a failing test leaves no process behind.
    """
    path = tmp_path / "output"
    monkeypatch.setenv("NCFCTL_WORKDIR", str(path))
    yield path
    _stop_leftover_servers(path)


def _stop_leftover_servers(path: Path) -> None:
    import psutil

    from ncfctl.errors import NcfError
    from ncfctl.serving.deploy_local import our_process
    from ncfctl.workspace import Workspace

    try:
        deployments = Workspace(path).list("deployment") if path.is_dir() else []
    except NcfError:  # a test that damaged its workspace on purpose
        return
    for deployment in deployments:
        server = our_process(deployment.manifest.info)  # None once stopped, or if the pid was reused
        if server is None:
            continue
        processes = [*server.children(recursive=True), server]
        for process in processes:
            process.terminate()
        for process in psutil.wait_procs(processes, timeout=10)[1]:
            process.kill()


@dataclass
class CliRun:
    """One ``ncfctl`` run, shaped like ``subprocess.CompletedProcess`` whichever way it ran."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def _checked(run: CliRun, check: bool) -> CliRun:
    if check and run.returncode != 0:
        raise AssertionError(
            f"ncfctl {' '.join(run.args)} exited {run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
        )
    return run


@pytest.fixture
def cli(workdir, monkeypatch):
    """Run ``ncfctl ARGS`` in-process through typer's CliRunner (same error handling as the console script).

    Returns click's ``Result`` (``exit_code``, ``stdout``, ``stderr``, ``exception``). Each call starts
    with no cached boto3 session, as a new process would.
    """
    from typer.testing import CliRunner

    from ncfctl.aws import clients
    from ncfctl.cli.app import app

    monkeypatch.chdir(workdir.parent)

    def run(*args: str, env: dict[str, str] | None = None):
        clients._session.cache_clear()
        return CliRunner().invoke(app, list(args), env={"NCFCTL_WORKDIR": str(workdir), **(env or {})})

    return run


@pytest.fixture
def run_cli(cli):
    """Run ``ncfctl ARGS`` in-process (:func:`cli`) and return a :class:`CliRun`; ``check`` wants exit code 0.

    A bug (an exception the CLI does not turn into an error line) shows its traceback on stderr, as
    the console script would.
    """

    def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> CliRun:
        result = cli(*args, env=env)
        stderr = result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            stderr += "".join(traceback.format_exception(*result.exc_info))
        return _checked(CliRun(list(args), result.exit_code, result.stdout, stderr), check)

    return run


@pytest.fixture
def run_cli_process(workdir):
    """Run ``ncfctl ARGS`` as a real ``python -m ncfctl`` subprocess (end-to-end tests, marked slow)."""

    def run(*args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600) -> CliRun:
        full_env = {**os.environ, "NCFCTL_WORKDIR": str(workdir), "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.run(
            [sys.executable, "-m", "ncfctl", *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            cwd=workdir.parent,
        )
        return _checked(CliRun(list(args), proc.returncode, proc.stdout, proc.stderr), check)

    return run


@pytest.fixture(scope="session")
def moto_server():
    """moto's ThreadedMotoServer on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_server, monkeypatch):
    """Fake credentials + every ncfctl AWS client pointed at the moto server; resets moto state."""
    import httpx

    httpx.post(f"{moto_server}/moto-api/reset")
    values = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "NCFCTL_AWS__ENDPOINT_URL": moto_server,
        "NCFCTL_AWS__REGION": "us-east-1",
        "NCFCTL_AWS__BUCKET": "ncfctl-test",
        "NCFCTL_AWS__ROLE_ARN": "arn:aws:iam::123456789012:role/SageMakerRole",
        "NCFCTL_AWS__POLL_SECONDS": "0.05",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    import boto3

    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket="ncfctl-test")
    return values


@pytest.fixture
def aws(aws_env, moto_server):
    """Factory ``aws("s3")``: a boto3 client on moto's server, to read back what ncfctl created."""
    import boto3

    return lambda service: boto3.client(service, endpoint_url=moto_server, region_name="us-east-1")


ONNX_MODELS = [{"batch_size": None, "path": "model.onnx"}]  # a bundle's ``models`` for one dynamic-batch model.onnx


def tiny_interaction_data(
    users: int = 60,
    items: int = 40,
    per_user: int = 12,
    clusters: int = 4,
    eval_negatives: int = 20,
    seed: int = 0,
    explicit: bool = False,
):
    """A small clustered leave-one-out ``InteractionData`` built in memory (no data layer needed).

    Users prefer their cluster's items (80%) over the rest, so a model can beat popularity.
    The last interaction of each user is ``test``, the one before ``val``; eval negatives are
    items the user never touched.
    """
    import numpy as np

    from ncfctl.data.dataset import EvalSplit, InteractionData, Interactions

    rng = np.random.default_rng(seed)
    item_cluster = np.arange(items) % clusters
    rows = []
    for u in range(users):
        own = np.flatnonzero(item_cluster == u % clusters)
        pool = np.where(
            rng.random(per_user * 3) < 0.8, rng.choice(own, per_user * 3), rng.integers(0, items, per_user * 3)
        )
        chosen = list(dict.fromkeys(pool.tolist()))[:per_user]
        rows += [(u, i, t) for t, i in enumerate(chosen)]
    arr = np.array(rows, dtype=np.int64)
    ratings = (1 + 4 * (item_cluster[arr[:, 1]] == arr[:, 0] % clusters) * rng.random(len(arr))).astype(np.float32)
    if not explicit:
        ratings[:] = 1.0
    last = np.r_[arr[1:, 0] != arr[:-1, 0], True]
    before_last = np.r_[last[1:], False]

    def take(mask):
        return Interactions(arr[mask, 0].copy(), arr[mask, 1].copy(), ratings[mask].copy(), arr[mask, 2].copy())

    def negatives(split):
        out = np.empty((len(split), eval_negatives), dtype=np.int64)
        for r, u in enumerate(split.users):
            known = set(arr[arr[:, 0] == u, 1].tolist())
            out[r] = rng.choice([i for i in range(items) if i not in known], eval_negatives, replace=False)
        return out

    test, val = take(last), take(before_last)
    return InteractionData(
        num_users=users,
        num_items=items,
        train=take(~last & ~before_last),
        val=EvalSplit(val, negatives(val)),
        test=EvalSplit(test, negatives(test)),
        user_ids=np.array([f"u{u}" for u in range(users)]),
        item_ids=np.array([f"i{i}" for i in range(items)]),
        explicit=explicit,
    )


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real ONNX serving bundle (tiny NeuMF on ``tiny_interaction_data``), built once per session."""
    import torch

    from ncfctl.models import NCF, NCFSpec
    from ncfctl.serving.bundle import write_serving_bundle

    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = tiny_interaction_data()
    spec = NCFSpec(
        num_users=data.num_users, num_items=data.num_items, factors=8, mlp_user_dim=8, mlp_item_dim=8, hidden=[8, 4]
    )
    model = NCF(spec).eval()
    folder = tmp_path_factory.mktemp("bundle")
    export_onnx(model, folder / "model.onnx")
    write_serving_bundle(
        folder, model, data, runtime="onnxruntime", models=ONNX_MODELS, source_model="model-tiny", target="local"
    )
    return folder


@pytest.fixture
def compiled_artifact(workdir, tiny_bundle):
    """``tiny_bundle`` committed as a ``compiled`` artifact in the test workspace."""
    import shutil

    from ncfctl.workspace import Workspace

    with Workspace(workdir).create("compiled", parent="model-tiny", info={"runtime": "onnxruntime"}) as writer:
        shutil.copytree(tiny_bundle, writer.path, dirs_exist_ok=True)
    return writer.artifact


def add_tiny_dataset(workdir: Path, data=None):
    """Commit ``data`` (default: ``tiny_interaction_data()``, 20 eval negatives) as a dataset artifact."""
    from ncfctl.workspace import Workspace

    data = tiny_interaction_data() if data is None else data
    info = {"dataset": "tiny", "num_users": data.num_users, "num_items": data.num_items, "explicit": data.explicit}
    with Workspace(workdir).create("dataset", info={**info, "split": "leave-one-out"}) as writer:
        data.save(writer.path)
    return writer.artifact


def commit_model_artifact(workdir: Path, model, data, stage: str = "trained"):
    """Commit ``data`` as a dataset artifact and ``model`` as a model artifact on it; returns the model artifact."""
    from ncfctl.models import MODEL_FILE, save_model
    from ncfctl.workspace import Workspace

    workspace = Workspace(workdir)
    dataset = add_tiny_dataset(workdir, data)
    spec = model.spec
    model_info = {"stage": stage, "model_type": spec.model_type, "task": spec.task, "dataset": dataset.id}
    with workspace.create("model", parent=dataset.id, info=model_info) as writer:
        save_model(writer.path / MODEL_FILE, model)
    return writer.artifact


@pytest.fixture
def model_artifact(workdir):
    """A tiny NeuMF (60 users x 40 items) and its dataset committed in the test workspace."""
    import torch

    from ncfctl.models import NCF, NCFSpec

    torch.manual_seed(0)
    data = tiny_interaction_data()
    model = NCF(NCFSpec.from_layers(model_type="neumf", num_users=60, num_items=40, factors=8, layers=[16, 8]))
    return commit_model_artifact(workdir, model, data)


def separated_ncf(spec, seed: int = 0):
    """An ``NCF`` with N(0, 0.5) weights: scores far apart (like a trained model's), so rankings are stable.

    The paper's N(0, 0.01) initialisation makes all scores nearly equal, where any float rounding
    reorders items and ranking comparisons would test noise.
    """
    import torch

    from ncfctl.models import NCF

    torch.manual_seed(seed)
    model = NCF(spec).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model


class ServingProcess:
    """``python -m ncf_serving serve`` on a free loopback port, its log in a file; stopped by SIGTERM."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
        flags: bool = True,
        wrapper: tuple[str, ...] = (),
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model_dir = model_dir
        self.log_path = log_path
        args = ["--host", "127.0.0.1", "--port", str(self.port), "--model-dir", str(model_dir)] if flags else []
        # two workers whatever the machine's vCPUs: the multi-worker path, at a fixed cost
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "NCF_THREADS": "1", "NCF_WORKERS": "2", **(env or {})}
        if not flags:  # the container's way: everything from the environment
            full_env.update(
                {"NCF_HOST": "127.0.0.1", "SAGEMAKER_BIND_TO_PORT": str(self.port), "NCF_MODEL_DIR": str(model_dir)}
            )
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        command = [*wrapper, sys.executable, "-m", "ncf_serving", "serve", *args]  # wrapper: e.g. strace
        self.proc = subprocess.Popen(command, env=full_env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode} before /ping was 200:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"/ping not 200 within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def serving_process(tmp_path):
    """Factory: ``serving_process(model_dir, env=None, wait=True)``; every server is stopped afterwards."""
    started: list[ServingProcess] = []

    def start(model_dir: Path, env: dict[str, str] | None = None, wait: bool = True, flags: bool = True):
        server = ServingProcess(model_dir, tmp_path / f"server-{len(started)}.log", env, flags)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def export_onnx(model, path: Path, batch_size: int | None = None) -> Path:
    """ONNX (opset 12, inputs ``user``/``item``, output ``score``): dynamic batch, or exactly ``batch_size``."""
    import torch

    example = (torch.zeros(batch_size or 2, dtype=torch.long), torch.zeros(batch_size or 2, dtype=torch.long))
    dynamic = None if batch_size else {"user": {0: "n"}, "item": {0: "n"}, "score": {0: "n"}}
    torch.onnx.export(
        model,
        example,
        str(path),
        dynamo=False,
        opset_version=12,
        input_names=["user", "item"],
        output_names=["score"],
        dynamic_axes=dynamic,
    )
    return path


def assert_one_line_error(result, *fragments: str) -> str:
    """Exit code 2, no traceback, exactly one ``Error:`` line on stderr holding every fragment; returns it."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def flip_bytes_of(path: Path, payload: bytes, count: int = 8) -> None:
    """Flip ``count`` bytes in the middle of ``payload`` where it sits inside ``path`` (e.g. a tensor's data).

    The file's structure stays intact, so its reader (torch, onnxruntime, numpy) still loads it:
    only a checksum can tell.
    """
    raw = bytearray(path.read_bytes())
    start = raw.find(payload)
    assert start >= 0 and len(payload) > count, "payload not found in the file"
    middle = start + len(payload) // 2
    for offset in range(count):
        raw[middle + offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def rerecord(artifact) -> None:
    """Re-record an artifact's file hashes after a test edits its files, to reach the checks behind them."""
    from ncf_serving.checksums import hash_folder

    from ncfctl.workspace import MANIFEST

    manifest = artifact.manifest.model_copy(update={"files": hash_folder(artifact.path, exclude=[MANIFEST])})
    (artifact.path / MANIFEST).write_text(manifest.model_dump_json(indent=2))


@pytest.fixture(autouse=True)
def fresh_aws_session():
    """boto3 sessions are cached per process (one command is one process): in-process CLI tests run
    many commands in one process, each with its own AWS environment, so each test starts uncached."""
    from ncfctl.aws import clients

    clients._session.cache_clear()
    yield
    clients._session.cache_clear()
