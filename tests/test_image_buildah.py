"""The real serving image: ``ncfctl build-image --backend buildah``, then run the way SageMaker runs it.

No Docker engine runs here, but buildah builds the Dockerfile as a plain process. The base image
is made offline from Debian packages (``mmdebstrap`` -> ``buildah from scratch``, Python 3.11,
kept in buildah's storage between runs) and passed as ``image.python_image``; ``pip`` in the RUN
steps reaches PyPI. Each image is then started like SageMaker's ``docker run IMAGE serve``: the
image's own ENTRYPOINT + ``serve``, as the image's USER (non-root), the bundle mounted read-only
at ``/opt/ml/model``, the port from ``SAGEMAKER_BIND_TO_PORT``; ``/ping`` and a top-3 request must
answer, and SIGTERM must end the server cleanly (SageMaker's stop signal).

What this cannot show: the image on SageMaker's hosts (a linux/amd64 CPU instance) and ECR; the
server is bound to 127.0.0.1 here (``NCF_HOST``) where SageMaker's network expects 0.0.0.0.
Skipped only when buildah cannot run on this machine; the torchscript image also needs
download.pytorch.org (its CPU torch index), which some networks do not reach.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import free_port, separated_ncf, tiny_interaction_data

from ncfctl.models import NCFSpec
from ncfctl.serving import buildah
from ncfctl.serving.bundle import write_serving_bundle
from ncfctl.workspace import Workspace

pytestmark = pytest.mark.slow
BASE_IMAGE = "localhost/ncfctl-test-python:3.11-bookworm"
BASE_PACKAGES = "python3,python3-venv,python-is-python3,ca-certificates"
SPEC = NCFSpec(num_users=60, num_items=40, factors=8, mlp_user_dim=8, mlp_item_dim=8, hidden=[16, 8])


def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(buildah.command(*args), capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"buildah {' '.join(args)}: {proc.stderr[-2000:]}"
    return proc


def has_image(name: str) -> bool:
    probe = subprocess.run(buildah.command("inspect", "--type", "image", name), capture_output=True, check=False)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def base_image(tmp_path_factory) -> str:
    """Debian bookworm's Python 3.11 as an image, built offline once and reused."""
    status = buildah.status(60)
    if not status.available:
        pytest.skip(f"buildah cannot run here: {status.detail}")
    if has_image(BASE_IMAGE):
        return BASE_IMAGE
    assert shutil.which("mmdebstrap"), "mmdebstrap makes the base image: apt-get install mmdebstrap (.ci/run does)"
    rootfs = tmp_path_factory.mktemp("base") / "rootfs.tar"
    subprocess.run(
        ["mmdebstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    container = run("from", "scratch").stdout.strip()
    try:
        run("add", container, str(rootfs), "/")
        run("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", container)
        run("commit", "--quiet", container, BASE_IMAGE)
    finally:
        run("rm", container)
    return BASE_IMAGE


def finish_bundle(folder: Path, model, runtime: str, path: str, batch_size: int | None = None) -> tuple[Path, str]:
    models = [{"batch_size": batch_size, "path": path}]
    data = tiny_interaction_data()
    write_serving_bundle(folder, model, data, runtime=runtime, models=models, source_model="m", target="ml_c5")
    return folder, runtime


def onnx_bundle(folder: Path) -> tuple[Path, str]:
    from conftest import export_onnx

    model = separated_ncf(SPEC)
    export_onnx(model, folder / "model.onnx")
    return finish_bundle(folder, model, "onnxruntime", "model.onnx")


def dlr_bundle(folder: Path) -> tuple[Path, str]:
    """A Neo-style DLR folder: the model's forward as C with the Treelite ABI libdlr loads (see test_dlr)."""
    from test_dlr import libdlr_path, ncf_as_c

    model = separated_ncf(SPEC)
    (folder / "ncf.c").write_text(ncf_as_c(model))
    (folder / "b1").mkdir()
    compiled = folder / "b1" / "compiled.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(compiled), str(folder / "ncf.c")], check=True)
    (folder / "ncf.c").unlink()
    shutil.copy(libdlr_path(), folder / "b1" / "libdlr.so")
    return finish_bundle(folder, model, "dlr", "b1", batch_size=1)


def torchscript_bundle(folder: Path) -> tuple[Path, str]:
    import torch

    try:
        urllib.request.urlopen("https://download.pytorch.org/whl/cpu/", timeout=10)
    except OSError as exc:
        pytest.skip(f"the torchscript image installs torch from download.pytorch.org, unreachable here: {exc}")
    model = separated_ncf(SPEC)
    pair = (torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    torch.jit.trace(model, pair).save(str(folder / "model.pth"))
    return finish_bundle(folder, model, "torchscript", "model.pth")


def image_config(image: str) -> dict:
    """The OCI config SageMaker's ``docker run`` would apply: Entrypoint, Cmd, User, Env."""
    return json.loads(run("inspect", "--type", "image", image).stdout)["OCIv1"]["config"]


@pytest.mark.parametrize("make_bundle", [onnx_bundle, dlr_bundle, torchscript_bundle], ids=lambda f: f.__name__)
def test_image_builds_and_serves_like_sagemaker(make_bundle, base_image, run_cli_process, workdir, tmp_path):
    (tmp_path / "bundle").mkdir()
    bundle, runtime = make_bundle(tmp_path / "bundle")
    with Workspace(workdir).create("compiled", parent="model-test") as writer:
        shutil.copytree(bundle, writer.path, dirs_exist_ok=True)
    tag = f"buildah-test-{runtime}"
    env = {"NCFCTL_IMAGE__PYTHON_IMAGE": base_image, "NCFCTL_IMAGE__TAG": tag}
    started = time.monotonic()
    result = json.loads(run_cli_process("build-image", "--backend", "buildah", "--json", env=env, timeout=1800).stdout)
    build_seconds = time.monotonic() - started
    image = f"localhost/{result['image']}"
    assert result["backend"] == "buildah" and result["built"] and result["runtime"] == runtime
    container = None
    try:
        config = image_config(image)
        assert config["User"] == "serving" and config["Entrypoint"] == ["python", "-m", "ncf_serving"]
        assert config["Cmd"] == ["serve"]
        container = run("from", image).stdout.strip()
        port = free_port()
        serve = [*config["Entrypoint"], "serve"]  # `docker run IMAGE serve`: the argument replaces CMD
        server = subprocess.Popen(
            buildah.command(
                "run",
                "--isolation",
                "chroot",
                "--network",
                "host",
                "--user",
                config["User"],
                "--env",
                f"SAGEMAKER_BIND_TO_PORT={port}",
                "--env",
                "NCF_HOST=127.0.0.1",
                "--volume",
                f"{bundle}:/opt/ml/model:ro",
                container,
                "--",
                *serve,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{url}/ping", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("/ping never answered 200")
        top = httpx.post(f"{url}/invocations", json={"user_id": "u3", "top_k": 3}, timeout=5)
        assert top.status_code == 200 and len(top.json()["items"]) == 3
        served = [  # the server's Python processes (buildah's chroot helper also carries the command line)
            p
            for p in psutil.Process(server.pid).children(recursive=True)
            if p.cmdline() and Path(p.cmdline()[0]).name.startswith("python") and "ncf_serving" in p.cmdline()
        ]
        pids = {p.pid for p in served}
        master = next(p for p in served if p.ppid() not in pids)  # gunicorn's master, above its workers
        assert all(p.uids().real == 10001 for p in served)  # the image's `serving` user, not root
        master.send_signal(signal.SIGTERM)  # what SageMaker sends first (SIGKILL 30 s later)
        output, _ = server.communicate(timeout=30)
        assert server.returncode == 0, output
        print(f"{runtime}: image built in {build_seconds:.0f} s")
    finally:
        if container is not None:
            subprocess.run(buildah.command("rm", container), capture_output=True, check=False)
        subprocess.run(buildah.command("rmi", image), capture_output=True, check=False)
