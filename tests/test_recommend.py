"""``ncfctl recommend --all-users``: every user's top-K to Parquet, here and by SageMaker Batch Transform.

The local backend is compared with the running server's own answers. For Batch Transform, moto
records CreateModel / CreateTransformJob and reports the job Completed at once without running
it, so the test plays the transform: the real server serves the registered bundle, the job's
input is posted to it as ``application/jsonlines`` in requests of at most ``MaxPayloadInMB`` (many
lines each, as MultiRecord does), and the answers are written to ``<S3OutputPath>/<input>.out``
where SageMaker would. What moto cannot show: SageMaker's own splitting and retries.
"""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest
from registered import GROUP, register_version

from ncfctl.config import load_config
from ncfctl.serving import batch_transform
from ncfctl.serving.recommend import recommend_all_users
from ncfctl.workspace import Workspace

ENV = {"NCFCTL_AWS__MODEL_PACKAGE_GROUP": GROUP}


def recommend_json(run_cli, *args: str, env: dict | None = None) -> dict:
    return json.loads(run_cli("recommend", "--all-users", *args, "--json", env=env).stdout)


def test_local_recommendations_match_the_server(run_cli, compiled_artifact, serving_process, workdir):
    result = recommend_json(run_cli, "--top-k", "5")

    frame = pd.read_parquet(result["file"])
    assert result["users"] == 60 and result["rows"] == 300 == len(frame)
    assert list(frame.columns) == ["user_id", "rank", "item_id", "score"]
    assert str(frame["user_id"].dtype) in {"object", "string", "str"} and frame["rank"].tolist()[:5] == [1, 2, 3, 4, 5]
    server = serving_process(compiled_artifact.path)
    for user in ("u0", "u17", "u59"):
        answer = httpx.post(f"{server.url}/invocations", json={"user_id": user, "top_k": 5}).json()
        rows = frame[frame["user_id"] == user].sort_values("rank")
        assert rows["item_id"].tolist() == [i["item_id"] for i in answer["items"]]
        assert rows["score"].tolist() == pytest.approx([i["score"] for i in answer["items"]], abs=1e-6)
    seen = recommend_json(run_cli, "--top-k", "40", "--include-seen")
    assert seen["rows"] == 60 * 40  # with seen items every user gets the whole catalogue
    record = Workspace(workdir).get(result["id"], "recommendations")
    assert record.manifest.parent == compiled_artifact.id and record.manifest.info.exclude_seen is True


def test_bad_requests_are_one_line(run_cli, compiled_artifact):
    no_flag = run_cli("recommend", check=False)
    assert no_flag.returncode == 2 and "give --all-users" in no_flag.stderr
    too_many = run_cli("recommend", "--all-users", "--top-k", "5000", check=False)
    assert too_many.returncode == 2 and "must be between 1 and serving.max_top_k (1000)" in too_many.stderr


def test_batch_transform_of_a_registered_version(aws, workdir, package_bundle, serving_process, monkeypatch):
    """In-process: the job's wait is patched to play the transform first."""
    aws("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)
    arn = register_version(aws, package_bundle[1], 0.7, status="Approved")
    server = serving_process(package_bundle[0])
    requests = []
    real_wait = batch_transform.jobs.wait_for

    def play_transform(aws_config, kind, name, progress=None, status_line=None):
        job = aws("sagemaker").describe_transform_job(TransformJobName=name)
        bucket, prefix = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"][5:].split("/", 1)
        (obj,) = aws("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
        lines = aws("s3").get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines(keepends=True)
        limit, answers, batch = job["MaxPayloadInMB"] * 1024 * 1024, [], []
        for line in [*lines, None]:  # MultiRecord: as many lines per request as fit the payload limit
            if line is None or sum(map(len, batch)) + len(line) > limit:
                headers = {"content-type": job["TransformInput"]["ContentType"]}
                response = httpx.post(f"{server.url}/invocations", content=b"".join(batch), headers=headers)
                assert response.status_code == 200, response.text
                requests.append(len(batch))
                answers.append(response.text)
                batch = []
            if line is not None:
                batch.append(line)
        out_bucket, out_prefix = job["TransformOutput"]["S3OutputPath"][5:].split("/", 1)
        name_out = f"{out_prefix}/{obj['Key'].rsplit('/', 1)[1]}.out"
        aws("s3").put_object(Bucket=out_bucket, Key=name_out, Body="".join(answers).encode())
        return real_wait(aws_config, kind, name, progress, status_line)

    monkeypatch.setattr(batch_transform.jobs, "wait_for", play_transform)
    monkeypatch.setenv("NCFCTL_AWS__MODEL_PACKAGE_GROUP", GROUP)
    config = load_config()
    artifact = recommend_all_users(config, Workspace(config.workdir), top_k=5, backend="sagemaker")
    remote = {
        **artifact.manifest.info.recorded(),
        **artifact.manifest.metrics,
        "file": artifact.path / "recommendations.parquet",
    }

    assert remote["source"] == arn and remote["users"] == 60 and remote["rows"] == 300
    (job,) = aws("sagemaker").list_transform_jobs()["TransformJobSummaries"]
    described = aws("sagemaker").describe_transform_job(TransformJobName=job["TransformJobName"])
    assert described["BatchStrategy"] == "MultiRecord" and described["MaxPayloadInMB"] == 1
    assert described["TransformInput"]["SplitType"] == "Line"
    assert (
        described["TransformInput"]["ContentType"] == described["TransformOutput"]["Accept"] == "application/jsonlines"
    )
    assert requests == [60]  # 60 short lines fit one 1 MB request
    assert aws("sagemaker").list_models()["Models"] == []  # the temporary model is deleted

    from ncfctl.serving.recommend import local_answers, write_parquet

    users, answers = local_answers(package_bundle[0], 5, True, 1)
    expected = package_bundle[0].parent / "expected.parquet"
    write_parquet(expected, answers)
    pd.testing.assert_frame_equal(pd.read_parquet(remote["file"]), pd.read_parquet(expected))
    assert users == 60


def test_batch_transform_needs_an_approved_version(run_cli, aws, package_bundle):
    aws("sagemaker").create_model_package_group(ModelPackageGroupName=GROUP)
    register_version(aws, package_bundle[1], 0.7)
    proc = run_cli("recommend", "--all-users", "--backend", "sagemaker", env=ENV, check=False)
    assert proc.returncode == 2 and f"model package group '{GROUP}' has no approved version" in proc.stderr
    proc = run_cli("recommend", "--all-users", "--backend", "sagemaker", "--model-package", "1", env=ENV, check=False)
    assert proc.returncode == 2 and "is PendingManualApproval, not Approved" in proc.stderr
    assert aws("sagemaker").list_transform_jobs()["TransformJobSummaries"] == []
