"""What the image relies on, checked without a Docker engine: a torch-free server, pinned requirements
that match the lock the tests were installed from, and a Dockerfile/buildspec that keep SageMaker's contract."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = ROOT / "container"


def test_server_imports_neither_torch_nor_ncfctl(tiny_bundle):
    """The onnxruntime image has no torch: loading a bundle and answering must not need it."""
    code = (
        "import sys; from ncf_serving.predictor import Predictor; import ncf_serving.app, ncf_serving.server; "
        f"p = Predictor.load({str(tiny_bundle)!r}); p.warm_up(); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ncfctl', 'pandas')); print(bad)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"


def load_lock_tool():
    """``tools/lock.py`` is a script, not a package module: load it by path to share its pin parser."""
    spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_container_pins_match_the_lock():
    """The image installs exactly the versions CI installed: every container pin is the lock's pin."""
    tool = load_lock_tool()
    lock = tool.read_pins(ROOT / "requirements.lock")
    for name in (
        "requirements.txt",
        "requirements-onnxruntime.txt",
        "requirements-dlr.txt",
        "requirements-torchscript.txt",
    ):
        pins = tool.read_pins(CONTAINER / name)
        assert pins, f"container/{name} pins nothing"
        unpinned = [
            line
            for line in (CONTAINER / name).read_text().splitlines()
            if tool.REQUIREMENT.match(line.strip()) and not tool.PIN.match(line.strip())
        ]
        assert not unpinned, f"container/{name}: {unpinned} not pinned: run python tools/lock.py"
        for package, pin in pins.items():
            assert lock.get(package) == pin, f"container/{name} pins {package}=={pin}, the lock {lock.get(package)}"
    assert "torch" not in tool.read_pins(CONTAINER / "requirements.txt") | tool.read_pins(
        CONTAINER / "requirements-onnxruntime.txt"
    )


def test_lock_pins_every_declared_dependency_within_its_range():
    """A dependency added to pyproject.toml without `python tools/lock.py` fails here, not on a fresh machine."""
    tool = load_lock_tool()
    lock = tool.read_pins(ROOT / "requirements.lock")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate():
            continue
        name = tool.canonical(requirement.name)
        assert name in lock, f"{requirement.name} is declared in pyproject.toml but not pinned in requirements.lock"
        assert requirement.specifier.contains(lock[name], prereleases=True), (
            f"requirements.lock pins {name}=={lock[name]}, outside pyproject.toml's {requirement}"
        )
    assert lock["torch"].endswith("+cpu"), "the lock must keep torch on the CPU build"


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
    assert "disable-dlr-phone-home" in text and re.search(r"^\s+ORT_DISABLE_TELEMETRY=1$", text, flags=re.M)
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
