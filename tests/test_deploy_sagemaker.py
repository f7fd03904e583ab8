"""``ncfctl deploy --backend sagemaker`` / ``deploy delete`` / ``invoke`` against moto's real server.

moto reports endpoints InService at once and answers InvokeEndpoint with canned bodies, so these
tests assert on what reached the service: the model's image and S3 model data (whose tarball is
read back), the endpoint config, the autoscaling target and policy, and the exact request body
moto's runtime recorded. Two things moto cannot do are covered otherwise: ``UpdateEndpoint`` (not
implemented in moto 5.2.5; ``moto_gaps`` answers it on moto's own state) and a ``ModelError`` from
the container (an HTTP server playing SageMaker's runtime).
"""

from __future__ import annotations

import base64
import json
import shutil
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import httpx
import pytest
from ncf_serving.checksums import hash_folder

from ncfctl.workspace import Workspace

IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ncf-recommender:latest"
ENDPOINT = "ncf-test"


@pytest.fixture
def image_artifact(workdir, tiny_bundle):
    """An image artifact as build-image records it (context/model = the bundle), pushed to ECR."""
    with Workspace(workdir).create(
        "image",
        parent="compiled-tiny",
        info={
            "context": "context",
            "runtime": "onnxruntime",
            "backend": "docker",
            "built": True,
            "image_uri": IMAGE_URI,
        },
    ) as writer:
        shutil.copytree(tiny_bundle, writer.path / "context" / "model")
    return writer.artifact


@pytest.fixture
def sm(aws_env, moto_server):
    def make(service: str):
        return boto3.client(service, endpoint_url=moto_server, region_name="us-east-1")

    return make


def deploy_json(run_cli, *args: str) -> dict:
    proc = run_cli("deploy", "--backend", "sagemaker", "--endpoint-name", ENDPOINT, *args, "--json")
    return json.loads(proc.stdout)


def test_deploy_creates_model_config_endpoint_and_autoscaling(run_cli, image_artifact, sm, tmp_path):
    result = deploy_json(
        run_cli, "--instance-count", "2", "--min-instances", "1", "--max-instances", "4", "--workers", "4"
    )

    assert result["status"] == "running" and result["endpoint_status"] == "InService"
    assert result["action"] == "created" and result["image"] == image_artifact.id
    model = sm("sagemaker").describe_model(ModelName=result["model_name"])
    assert model["PrimaryContainer"]["Image"] == IMAGE_URI
    assert model["ExecutionRoleArn"] == "arn:aws:iam::123456789012:role/SageMakerRole"
    assert model["PrimaryContainer"]["Environment"]["NCF_MAX_BATCH"] == "10000"  # config serving.max_batch
    assert model["PrimaryContainer"]["Environment"]["NCF_WORKERS"] == "4"  # --workers reaches the container
    data_url = model["PrimaryContainer"]["ModelDataUrl"]
    assert data_url == result["model_data"] and data_url.endswith(f"/deployments/{result['id']}/model.tar.gz")

    bucket, key = data_url[5:].split("/", 1)
    sm("s3").download_file(bucket, key, str(tmp_path / "model.tar.gz"))
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        names = set(tar.getnames())
    arrays = {"fastpath/item_pre.npy", "seen_items/indices.npy", "ids/item_ids.npy", "ids/item_order.npy"}
    assert {"serving.json", "model.onnx", *arrays} <= names  # at the root

    config = sm("sagemaker").describe_endpoint_config(EndpointConfigName=result["endpoint_config_name"])
    (variant,) = config["ProductionVariants"]
    assert variant["ModelName"] == result["model_name"]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.large", 2)
    endpoint = sm("sagemaker").describe_endpoint(EndpointName=ENDPOINT)
    assert endpoint["EndpointConfigName"] == result["endpoint_config_name"]

    resource = f"endpoint/{ENDPOINT}/variant/AllTraffic"
    scaling = sm("application-autoscaling")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["ResourceId"], target["MinCapacity"], target["MaxCapacity"]) == (resource, 1, 4)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and policy["ResourceId"] == resource
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == "SageMakerVariantInvocationsPerInstance"
    assert tracking["TargetValue"] == 1000.0

    status = json.loads(run_cli("deploy", "status", "--json").stdout)
    assert status["id"] == result["id"] and status["live"]["endpoint_status"] == "InService"


def test_invoke_goes_through_invoke_endpoint(run_cli, image_artifact, sm, moto_server):
    deploy_json(run_cli)
    canned = {"results": [{"Body": json.dumps({"score": 1.25}), "ContentType": "application/json"}]}
    httpx.post(f"{moto_server}/moto-api/static/sagemaker/endpoint-results", json=canned).raise_for_status()

    out = json.loads(run_cli("invoke", "--user", "u3", "--item", "i7", "--json").stdout)

    assert out["backend"] == "sagemaker" and out["target"] == ENDPOINT
    assert out["results"][0]["response"] == {"score": 1.25}
    from moto.backends import get_backend

    # moto files requests under EndpointName None (it does not parse the /endpoints/{name} path);
    # the path itself is asserted in test_model_error_shows_the_containers_message.
    recorded = get_backend("sagemaker-runtime")["123456789012"]["us-east-1"].results
    (sent,) = [json.loads(base64.b64decode(key)) for per_endpoint in recorded.values() for key in per_endpoint]
    assert json.loads(sent["Body"]) == {"user_id": "u3", "item_id": "i7"}
    assert sent["Accept"] == "application/json"


def test_delete_removes_endpoint_config_model_and_scaling(run_cli, workdir, image_artifact, sm):
    result = deploy_json(run_cli, "--min-instances", "1", "--max-instances", "2")

    deleted = json.loads(run_cli("deploy", "delete", "--endpoint-name", ENDPOINT, "--json").stdout)

    assert deleted["models"] == [result["model_name"]] and deleted["autoscaling_removed"] is True
    assert sm("sagemaker").list_endpoints()["Endpoints"] == []
    assert sm("sagemaker").list_endpoint_configs()["EndpointConfigs"] == []
    assert sm("sagemaker").list_models()["Models"] == []
    assert (
        sm("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    )
    record = Workspace(workdir).get(result["id"], "deployment")
    assert record.manifest.info.status == "deleted"

    again = run_cli("deploy", "delete", "--endpoint-name", ENDPOINT, check=False)
    assert again.returncode == 2 and f"endpoint '{ENDPOINT}' does not exist" in again.stderr
    gone = run_cli("invoke", "--user", "1", "--item", "2", check=False)
    assert gone.returncode == 2 and "no running deployment" in gone.stderr


def _deploy(workdir, **overrides):
    from ncfctl.config import load_config
    from ncfctl.serving.deploy import deploy

    config = load_config(overrides={"deploy.backend": "sagemaker", "aws.endpoint_name": ENDPOINT, **overrides})
    return deploy(config, Workspace(workdir))


def test_update_retains_the_scaled_out_count_and_cleans_up_the_old_config(workdir, image_artifact, moto_gaps, sm):
    """D5 + D6. moto has no UpdateEndpoint: ``moto_gaps`` answers it on moto's state and records the
    request and whether autoscaling was still registered; moto cannot show the blue/green swap itself."""
    first = _deploy(workdir, **{"deploy.min_instances": 1, "deploy.max_instances": 4}).manifest.info

    second = _deploy(workdir, **{"deploy.min_instances": 2, "deploy.max_instances": 6}).manifest.info

    assert second.action == "updated" and second.status == "running"
    assert second.previous_endpoint_config == first.endpoint_config_name
    (update,) = moto_gaps.calls["UpdateEndpoint"]
    assert update["EndpointConfigName"] == second.endpoint_config_name
    assert update["RetainAllVariantProperties"] is True  # a scaled-out variant keeps its instance count
    assert update["ExcludeRetainedVariantProperties"] == [{"VariantPropertyType": "DataCaptureConfig"}]
    assert moto_gaps.scaling_at_update == [False]  # deregistered before the update
    (target,) = sm("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)  # registered again, with the new range
    # D6: the previous config and its model are gone; only the live ones remain
    assert [c["EndpointConfigName"] for c in sm("sagemaker").list_endpoint_configs()["EndpointConfigs"]] == [
        second.endpoint_config_name
    ]
    assert [m["ModelName"] for m in sm("sagemaker").list_models()["Models"]] == [second.model_name]


def test_update_to_another_instance_type_resets_the_count_and_restores_old_scaling(
    workdir, image_artifact, moto_gaps, sm
):
    """An instance-type change must not carry the old fleet's count over; scaling set earlier comes back."""
    _deploy(workdir, **{"deploy.min_instances": 1, "deploy.max_instances": 3})

    second = _deploy(workdir, **{"aws.instance_type": "ml.m5.large"}).manifest.info

    (update,) = moto_gaps.calls["UpdateEndpoint"]
    excluded = {p["VariantPropertyType"] for p in update["ExcludeRetainedVariantProperties"]}
    assert excluded == {"DesiredInstanceCount", "DataCaptureConfig"}
    assert second.autoscaling["min_instances"] == 1 and second.autoscaling["max_instances"] == 3


def test_a_failed_update_leaves_nothing_behind(workdir, image_artifact, moto_gaps, sm):
    """D6: SageMaker rolls a failed update back (the endpoint stays InService on the old config); moto
    cannot fail an update, so ``moto_gaps`` plays the rollback. The new model and config must go."""
    from ncfctl.errors import NcfError

    first = _deploy(workdir, **{"deploy.min_instances": 1, "deploy.max_instances": 2}).manifest.info
    moto_gaps.update_failure = (
        "The primary container for production variant AllTraffic did not pass the ping health check"
    )

    with pytest.raises(NcfError, match="rolled back to .* did not pass the ping health check"):
        _deploy(workdir)

    assert [c["EndpointConfigName"] for c in sm("sagemaker").list_endpoint_configs()["EndpointConfigs"]] == [
        first.endpoint_config_name
    ]
    assert [m["ModelName"] for m in sm("sagemaker").list_models()["Models"]] == [first.model_name]
    (target,) = sm("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)
    failed = Workspace(workdir).latest("deployment", {"status": "failed"})
    assert "rolled back" in failed.manifest.info.error


def test_serverless_with_data_capture(run_cli, image_artifact, sm):
    """moto stores ServerlessConfig and DataCaptureConfig; it cannot show invocations being captured."""
    result = deploy_json(
        run_cli, "--serverless", "--memory-mb", "3072", "--max-concurrency", "8", "--capture-percent", "25"
    )

    config = sm("sagemaker").describe_endpoint_config(EndpointConfigName=result["endpoint_config_name"])
    (variant,) = config["ProductionVariants"]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 8}
    assert "InstanceType" not in variant and result["instance_count"] is None
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 25
    assert capture["DestinationS3Uri"] == f"s3://ncfctl-test/ncfctl/data-capture/{ENDPOINT}"
    assert {o["CaptureMode"] for o in capture["CaptureOptions"]} == {"Input", "Output"}
    assert "application/jsonlines" in capture["CaptureContentTypeHeader"]["JsonContentTypes"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--instance-type", "ml.c6g.large"],
            {},
            "instance type ml.c6g.large is arm64; the serving image is linux/amd64 CPU",
        ),
        (["--instance-type", "ml.g5.xlarge"], {}, "instance type ml.g5.xlarge is gpu"),
        (["--serverless", "--min-instances", "1", "--max-instances", "2"], {}, "--serverless scales by itself"),
        (["--serverless", "--memory-mb", "1000"], {}, "deploy.memory_mb"),
        ([], {"NCFCTL_AWS__REGION": "xx-nowhere-1"}, "aws.region 'xx-nowhere-1' is not a SageMaker region"),
    ],
)
def test_unservable_pairs_are_refused_before_anything_is_uploaded(run_cli, image_artifact, sm, args, env, message):
    proc = run_cli("deploy", "--backend", "sagemaker", "--endpoint-name", ENDPOINT, *args, env=env, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert sm("s3").list_objects_v2(Bucket="ncfctl-test").get("KeyCount", 0) == 0
    assert sm("sagemaker").list_models()["Models"] == []


def test_a_neo_bundle_deploys_only_on_its_instance_family(workdir, tiny_bundle, sm, run_cli):
    """D4: a DLR bundle is native code for its Neo target (here ml_c5): an ml.m5 fleet is refused."""
    import json as _json

    with Workspace(workdir).create(
        "image", parent="compiled-neo", info={"context": "context", "backend": "codebuild", "image_uri": IMAGE_URI}
    ) as writer:
        shutil.copytree(tiny_bundle, writer.path / "context" / "model")
        spec_path = writer.path / "context" / "model" / "serving.json"
        spec = _json.loads(spec_path.read_text())
        (writer.path / "context" / "model" / "b1").mkdir()
        (writer.path / "context" / "model" / "b1" / "compiled.so").write_bytes(b"an ml_c5 library")
        spec.update(runtime="dlr", target="ml_c5", models=[{"batch_size": 1, "path": "b1"}])
        spec["files"] = hash_folder(writer.path / "context" / "model", exclude=["serving.json"])
        spec_path.write_text(_json.dumps(spec))

    refused = run_cli("deploy", "--backend", "sagemaker", "--instance-type", "ml.m5.large", check=False)
    assert refused.returncode == 2 and "Neo-compiled for ml_c5: deploy it on ml.c5.* instances" in refused.stderr
    assert sm("s3").list_objects_v2(Bucket="ncfctl-test").get("KeyCount", 0) == 0


def test_missing_settings_are_one_line_errors(run_cli, image_artifact, aws_env, workdir):
    with Workspace(workdir).create("image", info={"context": "context", "backend": "none", "built": False}) as w:
        shutil.copytree(image_artifact.path / "context", w.path / "context")
    no_uri = run_cli("deploy", "--backend", "sagemaker", check=False)
    assert no_uri.returncode == 2 and "is not in ECR" in no_uri.stderr and "Traceback" not in no_uri.stderr

    no_role = run_cli(
        "deploy", "--backend", "sagemaker", "--image", image_artifact.id, env={"NCFCTL_AWS__ROLE_ARN": ""}, check=False
    )
    assert no_role.returncode == 2 and "aws.role_arn" in no_role.stderr

    bad_scaling = run_cli(
        "deploy",
        "--backend",
        "sagemaker",
        "--image",
        image_artifact.id,
        "--min-instances",
        "3",
        "--max-instances",
        "2",
        check=False,
    )
    assert bad_scaling.returncode == 2 and "--min-instances 3 is above --max-instances 2" in bad_scaling.stderr


class _ModelErrorHandler(BaseHTTPRequestHandler):
    """Answers InvokeEndpoint the way SageMaker does when the container returns 4xx."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps(
            {
                "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
                "OriginalStatusCode": 400,
                "OriginalMessage": json.dumps({"error": "unknown user 'nobody'", "field": "user_id"}),
                "LogStreamArn": "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/x",
                "message": "Received client error (400) from primary with message ...",
            }
        ).encode()
        self.send_response(424)
        self.send_header("x-amzn-ErrorType", "ModelError:http://internal.amazon.com/coral/com.amazon.sagemaker/")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.paths.append(self.path)

    def log_message(self, *args):
        pass


def test_model_error_shows_the_containers_message(workdir, aws_env, monkeypatch):
    from ncfctl.config import load_config
    from ncfctl.errors import NcfError
    from ncfctl.serving.invoke import invoke

    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelErrorHandler)
    server.paths = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Workspace(workdir).create(
            "deployment", info={"backend": "sagemaker", "status": "running", "endpoint_name": ENDPOINT}
        ):
            pass
        config = load_config(overrides={"aws.endpoint_url": f"http://127.0.0.1:{server.server_port}"})
        with pytest.raises(NcfError) as err:
            invoke(config, Workspace(workdir), [{"user_id": "nobody", "item_id": 1}])
    finally:
        server.shutdown()
    assert server.paths == [f"/endpoints/{ENDPOINT}/invocations"]
    assert str(err.value) == f"endpoint {ENDPOINT}: the container answered 400: user_id: unknown user 'nobody'"
    assert "\n" not in str(err.value)


def test_deleting_an_unknown_deployment_kind_is_refused(run_cli, workdir, aws_env):
    with Workspace(workdir).create("deployment", info={"backend": "local", "status": "stopped"}) as w:
        pass
    proc = run_cli("deploy", "delete", "--deployment", w.artifact.id, check=False)
    assert proc.returncode == 2 and "is local: stop it instead" in proc.stderr


def test_auto_backend_picks_sagemaker_only_for_an_ecr_image_with_credentials(workdir, image_artifact, monkeypatch):
    from ncfctl.config import load_config
    from ncfctl.serving.deploy import choose_backend

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    config = load_config(overrides={"deploy.backend": "auto"})
    assert choose_backend(config, Workspace(workdir), image_artifact.id) == "sagemaker"
    with Workspace(workdir).create("image", info={"context": "context", "backend": "none", "image_uri": None}) as w:
        pass
    assert choose_backend(config, Workspace(workdir), w.artifact.id) == "local"
    assert choose_backend(config, Workspace(workdir), None) == "local"  # the latest image is not in ECR
    assert choose_backend(
        load_config(overrides={"deploy.backend": "local"}), Workspace(workdir), image_artifact.id
    ) == ("local")


def test_sagemaker_only_settings_are_refused_for_a_local_deployment(run_cli, image_artifact):
    for flags in (["--serverless"], ["--capture-percent", "5"]):
        proc = run_cli("deploy", "--backend", "local", *flags, check=False)
        assert proc.returncode == 2 and "are SageMaker endpoint settings" in proc.stderr
    proc = run_cli("deploy", "--backend", "local", "--model-package", "latest-approved", check=False)
    assert proc.returncode == 2 and "--model-package deploys a registered version on SageMaker" in proc.stderr
