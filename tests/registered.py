"""Model Registry versions as the SageMaker Pipeline's Register step creates them (a pytest plugin).

``package_bundle``: what the Evaluate step packs, an ONNX Runtime bundle plus ``model.pt``, as
``model.tar.gz``; :func:`register_version` uploads it with an ``evaluation.json`` and creates the
version in moto's registry.
"""

from __future__ import annotations

import json
import tarfile

import pytest
import torch
from conftest import export_onnx, separated_ncf, tiny_interaction_data

from ncfctl.models import NCFSpec, save_model
from ncfctl.serving.bundle import write_serving_bundle

GROUP = "ncf-test-group"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ncf-recommender:ort"
SPEC = NCFSpec(num_users=60, num_items=40, factors=8, mlp_user_dim=8, mlp_item_dim=8, hidden=[16, 8])


@pytest.fixture(scope="module")
def package_bundle(tmp_path_factory):
    """What the pipeline's Evaluate step packs: an ONNX Runtime bundle plus model.pt, as model.tar.gz."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("registered")
    model = separated_ncf(SPEC)
    export_onnx(model, folder / "model.onnx")
    models = [{"batch_size": None, "path": "model.onnx"}]
    data = tiny_interaction_data()
    write_serving_bundle(folder, model, data, runtime="onnxruntime", models=models, source_model="p", target="ml_c5")
    save_model(folder / "model.pt", model)
    archive = tmp_path_factory.mktemp("archive") / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return folder, archive


def register_version(aws, archive, hr: float, status: str = "PendingManualApproval") -> str:
    """A version as the pipeline's Register step creates it; returns its ARN."""
    s3 = aws("s3")
    n = (
        len(
            aws("sagemaker").list_model_packages(ModelPackageGroupName=GROUP, ModelPackageType="Versioned")[
                "ModelPackageSummaryList"
            ]
        )
        + 1
    )
    s3.upload_file(str(archive), "ncfctl-test", f"runs/{n}/bundle/model.tar.gz")
    report = {
        "metrics": {"hr": hr, "ndcg": hr / 2, "k": 10},
        "baseline": {"name": "popularity", "hr": 0.3, "ndcg": 0.15},
    }
    s3.put_object(Bucket="ncfctl-test", Key=f"runs/{n}/evaluation/evaluation.json", Body=json.dumps(report))
    return aws("sagemaker").create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": f"s3://ncfctl-test/runs/{n}/bundle/model.tar.gz"}],
            "SupportedContentTypes": ["application/json", "application/jsonlines"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {
                    "ContentType": "application/json",
                    "S3Uri": f"s3://ncfctl-test/runs/{n}/evaluation/evaluation.json",
                }
            }
        },
        CustomerMetadataProperties={"runtime": "onnxruntime", "target": "ml_c5"},
    )["ModelPackageArn"]
