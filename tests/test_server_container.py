"""What the image relies on, checked without a Docker engine: a torch-free server, pinned requirements
that match what the tests ran, and a Dockerfile/buildspec that keep SageMaker's contract."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import yaml

CONTAINER = Path(__file__).resolve().parent.parent / "container"


def test_server_imports_neither_torch_nor_ncfctl(tiny_bundle):
    """The onnxruntime image has no torch: loading a bundle and answering must not need it."""
    code = (
        "import sys; from ncf_serving.predictor import Predictor; import ncf_serving.app, ncf_serving.server; "
        f"p = Predictor.load({str(tiny_bundle)!r}); p.warm_up(); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ncfctl', 'pandas')); print(bad)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


def pinned(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s#]+)", line.strip())
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def test_requirements_pin_what_the_tests_ran_with():
    for name in ("requirements.txt", "requirements-onnxruntime.txt", "requirements-dlr.txt"):
        for package, pin in pinned(CONTAINER / name).items():
            assert version(package) == pin, f"container/{name} pins {package}=={pin}, tests ran {version(package)}"
    assert "torch" not in pinned(CONTAINER / "requirements.txt") | pinned(CONTAINER / "requirements-onnxruntime.txt")
    assert version("torch").split("+")[0] == pinned(CONTAINER / "requirements-torchscript.txt")["torch"]


def test_dockerfile_keeps_the_sagemaker_contract():
    text = (CONTAINER / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert len(stages) == 2 and all(s == "${PYTHON_IMAGE}" for s in stages)
    # ECR Public mirror of the official image: no Docker Hub anonymous rate limits inside CodeBuild (D8)
    assert re.search(r"^ARG PYTHON_IMAGE=public\.ecr\.aws/docker/library/python:3\.11-slim", text, flags=re.M)
    assert re.search(r'^ENTRYPOINT \["python", "-m", "ncf_serving"\]$', text, flags=re.M)  # exec form
    assert re.search(r'^CMD \["serve"\]$', text, flags=re.M)
    assert re.search(r"^EXPOSE 8080$", text, flags=re.M)
    user = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert user and user[-1] not in ("root", "0")
    assert "requirements-${RUNTIME}.txt" in text and "COPY --chown=root:root model/ /opt/ml/model/" in text
    assert "disable-dlr-phone-home" in text
    for name in ("requirements.txt", "pyproject.toml", "ncf_serving"):
        assert (CONTAINER / name).exists()


def test_buildspec_builds_and_pushes():
    spec = yaml.safe_load((CONTAINER / "buildspec.yml").read_text())
    assert spec["version"] == 0.2
    commands = "\n".join(c for phase in spec["phases"].values() for c in phase["commands"])
    assert "NEO_MODEL_S3_URI" in commands and "aws s3 cp" in commands
    assert "aws ecr get-login-password" in commands and "--password-stdin" in commands
    assert "docker build --platform linux/amd64 --build-arg RUNTIME=" in commands
    assert 'docker push "$REPOSITORY_URI:$IMAGE_TAG"' in commands
    for command in (c for phase in spec["phases"].values() for c in phase["commands"]):
        assert subprocess.run(["bash", "-n"], input=command, text=True).returncode == 0, command
