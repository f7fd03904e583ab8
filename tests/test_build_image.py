"""``ncfctl build-image``: the build context it writes, and each backend (no engine, docker, CodeBuild).

There is no Docker engine on this machine: the docker backend is exercised with a stand-in
``docker`` executable on PATH that records its arguments and stdin (the real client is a separate
program, so its command line is the interface under test). ECR, S3 and CodeBuild are moto's.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import zipfile
from pathlib import Path

import boto3
import pytest
from ncf_serving.checksums import sha256_file

from ncfctl.workspace import Workspace

NO_ENGINE = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}  # an engine that certainly does not answer


def build_json(run_cli, *args: str, env: dict | None = None) -> dict:
    return json.loads(run_cli("build-image", *args, "--json", env={**NO_ENGINE, **(env or {})}).stdout)


def test_context_holds_server_dockerfile_and_bundle(run_cli, workdir, compiled_artifact):
    result = build_json(run_cli)

    assert result["backend"] == "none" and result["built"] is False and result["image"] is None
    assert result["compiled"] == compiled_artifact.id and result["runtime"] == "onnxruntime"
    assert "no Docker engine: Cannot connect to the Docker daemon" in result["notes"][0]
    assert "only the build context was written" in result["notes"][0]
    context = Path(result["context"])
    assert any(f"docker build --platform linux/amd64 -t ncf-recommender:latest {context}" in n for n in result["notes"])
    for name in ("Dockerfile", "buildspec.yml", "ncf_serving/__init__.py", "ncf_serving/serve.py"):
        assert (context / name).is_file(), name
    assert not list(context.rglob("__pycache__")) and not list(context.rglob("*.pyc"))
    bundle_files = {p.name for p in compiled_artifact.path.iterdir()} - {"manifest.json"}
    assert {p.name for p in (context / "model").iterdir()} == bundle_files
    for name in bundle_files:
        assert sha256_file(context / "model" / name) == sha256_file(compiled_artifact.path / name)

    image = Workspace(workdir).get(result["image_artifact"], "image")
    assert image.manifest.parent == compiled_artifact.id
    assert image.manifest.info["model_dir"] == "context/model" and image.manifest.info["built"] is False
    assert "context/Dockerfile" in image.manifest.files


def test_human_output_says_only_the_context_was_written(run_cli, compiled_artifact):
    proc = run_cli("build-image", env={**NO_ENGINE, "COLUMNS": "400"})  # no Rich line wrapping
    assert "no image was built" in proc.stderr and "only the build context was written" in proc.stderr
    assert "docker build --platform linux/amd64" in proc.stdout and "ncfctl deploy --backend local" in proc.stdout


def test_docker_backend_without_engine_fails_fast(run_cli, compiled_artifact, workdir):
    start = time.monotonic()
    proc = run_cli("build-image", "--backend", "docker", env=NO_ENGINE, check=False)
    assert proc.returncode == 2 and "no Docker engine" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 30
    assert not (workdir / "images").exists()  # nothing recorded for a build that could not start


def test_push_needs_the_docker_backend(run_cli, compiled_artifact):
    proc = run_cli("build-image", "--backend", "none", "--push", check=False)
    assert proc.returncode == 2 and "--push needs the docker backend" in proc.stderr


def test_missing_or_broken_compiled_artifact(run_cli, workdir, tiny_bundle):
    proc = run_cli("build-image", check=False)
    assert proc.returncode == 2 and "no compiled artifact" in proc.stderr

    with Workspace(workdir).create("compiled") as writer:
        (writer.path / "serving.json").write_text((tiny_bundle / "serving.json").read_text())
    proc = run_cli("build-image", "--compiled", writer.artifact.id, check=False)
    assert proc.returncode == 2 and "not packing" in proc.stderr and "fastpath.npz: is missing" in proc.stderr
    assert not (workdir / "images").exists()


@pytest.fixture
def fake_docker(tmp_path):
    """A ``docker`` on PATH that answers ``info`` and records every call (argv + stdin) as JSON lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls.jsonl"
    script = bin_dir / "docker"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "stdin = sys.stdin.read() if sys.argv[1:2] == ['login'] else None\n"
        f"with open({str(calls)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps({'argv': sys.argv[1:], 'stdin': stdin}) + '\\n')\n"
        "print('27.3.1' if sys.argv[1] == 'info' else 'Step 1/9 : FROM python:3.11-slim')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, calls


def test_docker_build_and_push_to_ecr(run_cli, compiled_artifact, aws_env, moto_server, fake_docker):
    env, calls = fake_docker
    result = json.loads(run_cli("build-image", "--push", "--tag", "v1", "--json", env=env).stdout)

    repository = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ncf-recommender"
    assert result["backend"] == "docker" and result["built"] is True
    assert result["image"] == "ncf-recommender:v1" and result["image_uri"] == f"{repository}:v1"
    ecr = boto3.client("ecr", endpoint_url=moto_server, region_name="us-east-1")
    assert ecr.describe_repositories()["repositories"][0]["repositoryUri"] == repository  # created on first push

    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    verbs = [c["argv"][0] for c in recorded]
    assert verbs == ["info", "build", "login", "tag", "push"]
    build = recorded[1]["argv"]
    assert build[-1] == result["context"] and build[1:3] == ["--platform", "linux/amd64"]
    assert "RUNTIME=onnxruntime" in build and "ncf-recommender:v1" in build
    login = recorded[2]
    password = "123456789012-auth-token"  # moto's ECR token is base64("AWS:<this>")
    assert login["stdin"] == password and password not in " ".join(login["argv"])
    assert login["argv"][-1] == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert recorded[3]["argv"] == ["tag", "ncf-recommender:v1", f"{repository}:v1"]
    assert recorded[4]["argv"] == ["push", f"{repository}:v1"]


def test_codebuild_backend_against_moto(run_cli, workdir, compiled_artifact, aws_env, moto_server, tmp_path):
    result = build_json(run_cli, "--backend", "codebuild", "--tag", "cb1")

    info = Workspace(workdir).get(result["image_artifact"], "image").manifest.info
    assert result["backend"] == "codebuild" and result["built"] is True
    assert result["image_uri"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/ncf-recommender:cb1"
    source = info["source_uri"]
    assert source == f"s3://ncfctl-test/ncfctl/images/{result['image_artifact']}/context.zip"

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.download_file("ncfctl-test", source.split("/", 3)[3], str(tmp_path / "context.zip"))
    with zipfile.ZipFile(tmp_path / "context.zip") as archive:
        names = set(archive.namelist())
    assert {"buildspec.yml", "Dockerfile", "model/serving.json", "model/model.onnx"} <= names

    codebuild = boto3.client("codebuild", endpoint_url=moto_server, region_name="us-east-1")
    (project,) = codebuild.batch_get_projects(names=["ncfctl-image-build"])["projects"]
    assert project["environment"]["privilegedMode"] is True and project["source"]["type"] == "S3"
    assert project["serviceRole"] == "arn:aws:iam::123456789012:role/SageMakerRole"  # aws.role_arn fallback
    (build,) = codebuild.batch_get_builds(ids=[info["build_id"]])["builds"]
    assert build["projectName"] == "ncfctl-image-build" and build["buildStatus"] == "SUCCEEDED"
    assert boto3.client("ecr", endpoint_url=moto_server, region_name="us-east-1").describe_repositories(
        repositoryNames=["ncf-recommender"]
    )["repositories"]

    again = build_json(run_cli, "--backend", "codebuild")  # the project now exists: reused, not recreated
    assert Workspace(workdir).get(again["image_artifact"], "image").manifest.info["project_created"] is False


def test_codebuild_needs_a_bucket(run_cli, compiled_artifact, aws_env):
    proc = run_cli("build-image", "--backend", "codebuild", env={"NCFCTL_AWS__BUCKET": ""}, check=False)
    assert proc.returncode == 2 and "aws.bucket" in proc.stderr and "NCFCTL_AWS__BUCKET" in proc.stderr
