"""``ncfctl build-image``: the build context it writes, and each backend (no builder, docker, buildah, CodeBuild).

There is no Docker engine on this machine: the docker backend (and buildah's push, which needs a
registry) is exercised with a stand-in executable on PATH that records its arguments and stdin
(the real client is a separate program, so its command line is the interface under test). A real
buildah build runs in ``test_image_buildah.py`` (slow). ECR, S3 and CodeBuild are moto's.
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
from ncf_serving.checksums import hash_folder

from ncfctl.workspace import Workspace


def stand_in(bin_dir: Path, name: str, calls: Path, stdout: str, code: int = 0) -> None:
    """An executable ``name`` that appends its argv (and ``login``'s stdin) to ``calls`` as JSON lines."""
    script = bin_dir / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        "stdin = sys.stdin.read() if 'login' in sys.argv else None\n"
        f"with open({str(calls)!r}, 'a') as fh:\n"
        "    fh.write(json.dumps({'argv': sys.argv[1:], 'stdin': stdin}) + '\\n')\n"
        f"print({stdout!r})\n"
        f"sys.exit({code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture(autouse=True)
def no_builders(tmp_path, monkeypatch):
    """No Docker engine answers and the ``buildah`` on PATH cannot run (this machine may have a real one)."""
    bin_dir = tmp_path / "no-builders"
    bin_dir.mkdir()
    stand_in(bin_dir, "buildah", tmp_path / "buildah-refused.jsonl", "Error: kernel does not allow chroot", code=125)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def build_json(run_cli, *args: str, env: dict | None = None) -> dict:
    return json.loads(run_cli("build-image", *args, "--json", env=env).stdout)


def test_context_holds_server_dockerfile_and_bundle(run_cli, workdir, compiled_artifact):
    result = build_json(run_cli)

    assert result["backend"] == "none" and result["built"] is False and result["image"] is None
    assert result["compiled"] == compiled_artifact.id and result["runtime"] == "onnxruntime"
    assert "no Docker engine (Cannot connect to the Docker daemon" in result["notes"][0]
    assert "no buildah (buildah does not run here: " in result["notes"][0]
    assert "only the build context was written" in result["notes"][0]
    context = Path(result["context"])
    assert any(f"docker build --platform linux/amd64 -t ncf-recommender:latest {context}" in n for n in result["notes"])
    for name in ("Dockerfile", "buildspec.yml", "ncf_serving/__init__.py", "ncf_serving/serve.py"):
        assert (context / name).is_file(), name
    assert not list(context.rglob("__pycache__")) and not list(context.rglob("*.pyc"))
    assert hash_folder(context / "model") == hash_folder(compiled_artifact.path, exclude=["manifest.json"])

    image = Workspace(workdir).get(result["id"], "image")
    assert image.manifest.parent == compiled_artifact.id
    assert image.manifest.info.model_dir == "context/model" and image.manifest.info.built is False
    assert "context/Dockerfile" in image.manifest.files


def test_human_output_says_only_the_context_was_written(run_cli, compiled_artifact):
    proc = run_cli("build-image", env={"COLUMNS": "400"})  # no Rich line wrapping
    assert "no image was built" in proc.stderr and "only the build context was written" in proc.stderr
    assert "docker build --platform linux/amd64" in proc.stdout and "ncfctl deploy --backend local" in proc.stdout


def test_docker_backend_without_engine_fails_fast(run_cli, compiled_artifact, workdir):
    start = time.monotonic()
    proc = run_cli("build-image", "--backend", "docker", check=False)
    assert proc.returncode == 2 and "no Docker engine" in proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - start < 30
    assert not (workdir / "images").exists()  # nothing recorded for a build that could not start


def test_push_needs_a_local_builder(run_cli, compiled_artifact, workdir):
    proc = run_cli("build-image", "--backend", "none", "--push", check=False)
    assert proc.returncode == 2 and "--push needs a local builder, docker or buildah" in proc.stderr
    auto = run_cli("build-image", "--push", check=False)  # auto, and neither builder runs
    assert auto.returncode == 2 and "--push: no Docker engine" in auto.stderr and "and no buildah" in auto.stderr
    refused = run_cli("build-image", "--backend", "buildah", check=False)
    assert (
        refused.returncode == 2 and "buildah does not run here: Error: kernel does not allow chroot" in refused.stderr
    )
    assert not (workdir / "images").exists()


def test_an_unservable_neo_bundle_is_refused(run_cli, workdir, tiny_bundle):
    """D4: a DLR bundle for arm64 cannot run in the linux/amd64 image; refused before the context is written."""
    import shutil

    with Workspace(workdir).create("compiled") as writer:
        shutil.copytree(tiny_bundle, writer.path, dirs_exist_ok=True)
        spec = json.loads((writer.path / "serving.json").read_text())
        (writer.path / "b1").mkdir()
        (writer.path / "b1" / "compiled.so").write_bytes(b"an arm64 library")
        spec.update(runtime="dlr", target="ml_c6g", models=[{"batch_size": 1, "path": "b1"}])
        spec["files"] = hash_folder(writer.path, exclude=["serving.json"])
        (writer.path / "serving.json").write_text(json.dumps(spec))
    proc = run_cli("build-image", "--backend", "none", check=False)
    assert (
        proc.returncode == 2
        and "is Neo-compiled for ml_c6g (arm64); the serving image is linux/amd64 CPU" in proc.stderr
    )
    assert not (workdir / "images").exists()


def test_missing_or_broken_compiled_artifact(run_cli, workdir, tiny_bundle):
    proc = run_cli("build-image", check=False)
    assert proc.returncode == 2 and "no compiled artifact" in proc.stderr

    with Workspace(workdir).create("compiled") as writer:
        (writer.path / "serving.json").write_text((tiny_bundle / "serving.json").read_text())
    proc = run_cli("build-image", "--compiled", writer.artifact.id, check=False)
    assert proc.returncode == 2 and "not packing" in proc.stderr and ": is missing (a recorded file)" in proc.stderr
    assert not (workdir / "images").exists()


@pytest.fixture
def fake_docker(tmp_path):
    """A ``docker`` on PATH that answers ``info`` and records every call (argv + stdin) as JSON lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "docker-calls.jsonl"
    stand_in(bin_dir, "docker", calls, "27.3.1")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, calls


def test_buildah_build_and_push_to_ecr(run_cli, compiled_artifact, aws_env, tmp_path):
    """The buildah backend's command lines (a stand-in records them; the real build is in the slow test)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "buildah-calls.jsonl"
    stand_in(bin_dir, "buildah", calls, "Version:         1.28.2")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "NCFCTL_IMAGE__PYTHON_IMAGE": "localhost/py:3.11"}
    result = json.loads(run_cli("build-image", "--push", "--tag", "b1", "--json", env=env).stdout)  # auto

    repository = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ncf-recommender"
    assert result["backend"] == "buildah" and result["image_uri"] == f"{repository}:b1"
    recorded = [json.loads(line)["argv"] for line in calls.read_text().splitlines()]
    login_stdin = json.loads(calls.read_text().splitlines()[2])["stdin"]
    assert [argv[2] for argv in recorded] == ["version", "bud", "login", "push"]
    assert all(argv[:2] == ["--storage-driver", "vfs"] for argv in recorded)
    bud = recorded[1]
    assert bud[bud.index("--isolation") + 1] == "chroot" and bud[bud.index("--platform") + 1] == "linux/amd64"
    assert "RUNTIME=onnxruntime" in bud and "PYTHON_IMAGE=localhost/py:3.11" in bud and bud[-1] == result["context"]
    assert "/etc/ssl/certs:/etc/ssl/certs:ro" in bud
    assert login_stdin == "123456789012-auth-token" and login_stdin not in " ".join(recorded[2])
    assert recorded[3][-2:] == ["ncf-recommender:b1", f"docker://{repository}:b1"]


def test_auto_builds_with_buildah_only_from_a_local_base_image(run_cli, compiled_artifact, tmp_path):
    """Offline by default: auto uses buildah when its storage holds the base image, and never pulls one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    calls = tmp_path / "buildah-calls.jsonl"
    stand_in(bin_dir, "buildah", calls, "Version:         1.28.2", code=0)
    (bin_dir / "buildah").write_text(
        (bin_dir / "buildah").read_text().replace("sys.exit(0)", "sys.exit(125 if 'inspect' in sys.argv else 0)")
    )
    result = build_json(run_cli, env=env)  # the Dockerfile's default base is not in buildah's storage
    assert result["backend"] == "none" and result["built"] is False
    assert "public.ecr.aws/docker/library/python:3.11-slim-bookworm and auto does not pull" in result["notes"][0]
    inspected = [json.loads(line)["argv"] for line in calls.read_text().splitlines()][-1]
    assert inspected[2:] == ["inspect", "--type", "image", "public.ecr.aws/docker/library/python:3.11-slim-bookworm"]

    stand_in(bin_dir, "buildah", calls, "Version:         1.28.2", code=0)  # now every call succeeds
    local = build_json(run_cli, env={**env, "NCFCTL_IMAGE__PYTHON_IMAGE": "localhost/py:3.11"})
    assert local["backend"] == "buildah" and local["built"] is True


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


CODEBUILD_ROLE = "arn:aws:iam::123456789012:role/CodeBuildRole"


def test_codebuild_backend_against_moto(
    run_cli, workdir, compiled_artifact, aws_env, moto_server, tmp_path, monkeypatch
):
    monkeypatch.setenv("NCFCTL_AWS__CODEBUILD_ROLE_ARN", CODEBUILD_ROLE)
    result = build_json(run_cli, "--backend", "codebuild", "--tag", "cb1")

    info = Workspace(workdir).get(result["id"], "image").manifest.info
    assert result["backend"] == "codebuild" and result["built"] is True
    assert result["image_uri"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/ncf-recommender:cb1"
    source = info.source_uri
    assert source == f"s3://ncfctl-test/ncfctl/images/{result['id']}/context.zip"

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    s3.download_file("ncfctl-test", source.split("/", 3)[3], str(tmp_path / "context.zip"))
    with zipfile.ZipFile(tmp_path / "context.zip") as archive:
        names = set(archive.namelist())
    assert {"buildspec.yml", "Dockerfile", "model/serving.json", "model/model.onnx"} <= names

    codebuild = boto3.client("codebuild", endpoint_url=moto_server, region_name="us-east-1")
    (project,) = codebuild.batch_get_projects(names=["ncfctl-image-build"])["projects"]
    assert project["environment"]["privilegedMode"] is True and project["source"]["type"] == "S3"
    assert project["serviceRole"] == CODEBUILD_ROLE  # its own role, never the SageMaker one (D7)
    (build,) = codebuild.batch_get_builds(ids=[info.build_id])["builds"]
    assert build["projectName"] == "ncfctl-image-build" and build["buildStatus"] == "SUCCEEDED"
    assert boto3.client("ecr", endpoint_url=moto_server, region_name="us-east-1").describe_repositories(
        repositoryNames=["ncf-recommender"]
    )["repositories"]

    assert Workspace(workdir).get(result["id"], "image").manifest.info.project == "created"
    again = build_json(run_cli, "--backend", "codebuild")  # the project now exists: reused, not recreated
    assert Workspace(workdir).get(again["id"], "image").manifest.info.project == "unchanged"


def test_codebuild_project_follows_changed_settings(run_cli, workdir, compiled_artifact, moto_gaps, monkeypatch):
    """D7: a project made with other settings is updated. moto has no UpdateProject (``moto_gaps`` applies it
    to moto's project); it cannot show CodeBuild validating the new image or role."""
    monkeypatch.setenv("NCFCTL_AWS__CODEBUILD_ROLE_ARN", CODEBUILD_ROLE)
    build_json(run_cli, "--backend", "codebuild")
    env = {"NCFCTL_AWS__CODEBUILD_COMPUTE_TYPE": "BUILD_GENERAL1_MEDIUM", "NCFCTL_IMAGE__BUILD_TIMEOUT_MINUTES": "45"}
    second = build_json(run_cli, "--backend", "codebuild", env=env)

    info = Workspace(workdir).get(second["id"], "image").manifest.info
    assert info.project == "updated (computeType, timeoutInMinutes)"
    (update,) = moto_gaps.calls["UpdateProject"]
    assert update["environment"]["computeType"] == "BUILD_GENERAL1_MEDIUM" and update["timeoutInMinutes"] == 45
    assert update["serviceRole"] == CODEBUILD_ROLE and update["environment"]["privilegedMode"] is True


def test_codebuild_needs_its_own_role(run_cli, compiled_artifact, aws_env, workdir):
    """D7: no fallback to aws.role_arn (the SageMaker role, which CodeBuild cannot assume); nothing is uploaded."""
    proc = run_cli("build-image", "--backend", "codebuild", check=False)
    assert proc.returncode == 2 and "needs config key 'aws.codebuild_role_arn'" in proc.stderr
    s3 = boto3.client("s3", endpoint_url=aws_env["NCFCTL_AWS__ENDPOINT_URL"], region_name="us-east-1")
    assert s3.list_objects_v2(Bucket="ncfctl-test").get("KeyCount", 0) == 0


def test_codebuild_needs_a_bucket(run_cli, compiled_artifact, aws_env):
    env = {"NCFCTL_AWS__BUCKET": "", "NCFCTL_AWS__CODEBUILD_ROLE_ARN": CODEBUILD_ROLE}
    proc = run_cli("build-image", "--backend", "codebuild", env=env, check=False)
    assert proc.returncode == 2 and "aws.bucket" in proc.stderr and "NCFCTL_AWS__BUCKET" in proc.stderr
