"""The Model Registry on moto's server: ``registry``, ``deploy --model-package``, ``neo compile --model-package``.

moto stores model package groups, versioned packages (with ModelMetrics and metadata) and their
approval, and creates models from a package. Versions are registered here the way the pipeline's
Register step does (a bundle ``model.tar.gz`` with ``model.pt`` and an ``evaluation.json`` in S3).
What moto cannot show: SageMaker validating the package's image and bundle when a model or
endpoint is created from it. moto also drops a version's CustomerMetadataProperties when its
approval changes (AWS keeps them), so they are asserted before any approval.
"""

from __future__ import annotations

import json

import pytest
from ncf_serving.checksums import hash_folder
from registered import GROUP, IMAGE, register_version

from ncfctl.workspace import Workspace

ENV = {"NCFCTL_AWS__MODEL_PACKAGE_GROUP": GROUP}


@pytest.fixture
def versions(aws, package_bundle):
    aws("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)
    return [register_version(aws, package_bundle[1], hr) for hr in (0.61, 0.67)]


def registry_json(run_cli, *args: str):
    return json.loads(run_cli("registry", *args, "--json", env=ENV).stdout)


def test_list_approve_reject_show(run_cli, versions):
    listed = registry_json(run_cli, "list")
    assert [(v["version"], v["status"], v["hr"]) for v in listed["versions"]] == [
        (2, "PendingManualApproval", 0.67),
        (1, "PendingManualApproval", 0.61),
    ]
    assert {(v["runtime"], v["target"]) for v in listed["versions"]} == {("onnxruntime", "ml_c5")}
    approved = registry_json(run_cli, "approve", "1", "--note", "beats popularity by 0.31")
    assert approved["status"] == "Approved" and approved["approval_description"] == "beats popularity by 0.31"
    assert registry_json(run_cli, "reject", versions[1])["status"] == "Rejected"

    shown = registry_json(run_cli, "show", "latest-approved")
    assert shown["arn"] == versions[0] and shown["evaluation"]["baseline"]["hr"] == 0.3
    assert shown["image"] == IMAGE and shown["model_data"].endswith("/runs/1/bundle/model.tar.gz")
    assert [v["version"] for v in registry_json(run_cli, "list", "--status", "Rejected")["versions"]] == [2]
    human = run_cli("registry", "show", "1", env={**ENV, "COLUMNS": "200"}).stdout
    assert "this version" in human and "popularity" in human


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["list"],
            {"NCFCTL_AWS__MODEL_PACKAGE_GROUP": "no-such-group"},
            "model package group 'no-such-group' does not exist",
        ),
        (["show", "7"], {}, f"model package group '{GROUP}' has no version 7"),
        (["show", "latest-approved"], {}, f"model package group '{GROUP}' has no approved version"),
        (["approve", "newest"], {}, "expected an ARN, a version number, 'latest' or 'latest-approved'"),
    ],
)
def test_registry_errors_are_one_line(run_cli, versions, args, env, message):
    proc = run_cli("registry", *args, env={**ENV, **env}, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_deploy_a_registered_version(run_cli, versions, aws, workdir):
    """The endpoint's model is created from the package (ModelPackageName), not from an image artifact."""
    refused = run_cli("deploy", "--model-package", "latest", "--endpoint-name", "ncf-reg", env=ENV, check=False)
    assert refused.returncode == 2 and "is PendingManualApproval, not Approved" in refused.stderr
    run_cli("registry", "approve", "2", env=ENV)

    result = json.loads(
        run_cli("deploy", "--model-package", "latest-approved", "--endpoint-name", "ncf-reg", "--json", env=ENV).stdout
    )
    assert result["model_package_arn"] == versions[1] and result["status"] == "running"
    model = aws("sagemaker").describe_model(ModelName=result["model_name"])
    container = model["PrimaryContainer"]
    assert container["ModelPackageName"] == versions[1] and "Image" not in container
    assert container["Environment"]["NCF_MAX_BATCH"] == "10000"
    deployment = Workspace(workdir).get(result["id"], "deployment")
    assert deployment.manifest.parent == versions[1]
    assert aws("s3").list_objects_v2(Bucket="ncfctl-test", Prefix="ncfctl/deployments").get("KeyCount", 0) == 0

    arm = run_cli("deploy", "--model-package", "2", "--instance-type", "ml.m6g.large", env=ENV, check=False)
    assert arm.returncode == 2 and "instance type ml.m6g.large is arm64" in arm.stderr


def test_neo_compile_a_registered_version(run_cli, versions, workdir, package_bundle):
    """The registered bundle's weights and ids become a compiled bundle (local backend here; Neo is covered
    by test_neo_aws). No dataset artifact exists in this workspace."""
    result = json.loads(
        run_cli("neo", "compile", "--model-package", "1", "--backend", "local", "--json", env=ENV).stdout
    )

    workspace = Workspace(workdir)
    source = workspace.get(result["source_model"], "model")
    assert source.manifest.info.stage == "registered" and source.manifest.info.model_package_arn == versions[0]
    compiled = workspace.get(result["id"], "compiled")
    for name in ("ids", "seen_items"):  # repeated from the registered bundle
        assert hash_folder(compiled.path / name) == hash_folder(package_bundle[0] / name)
    assert result["runtime"] == "onnxruntime" and result["metrics"]["max_abs_diff"] <= 1e-5

    both = run_cli("neo", "compile", "--model-package", "1", "--model", source.id, env=ENV, check=False)
    assert both.returncode == 2 and "give --model or --model-package, not both" in both.stderr
