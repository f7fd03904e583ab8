"""``ncfctl pipeline --backend sagemaker``: the SageMaker Pipeline upserted and started on moto's server.

moto 5.2.5 stores the definition, creates the model package group and starts executions, but runs
no step and reports every execution Succeeded at once; it implements neither
``ListPipelineExecutionSteps`` nor ``StopPipelineExecution`` (500). So these tests assert on the
stored definition (parsed, and read back through the SDK), on what was uploaded and created, and
follow executions whose status and steps ``moto_gaps`` scripts. What moto cannot show: SageMaker
resolving the property references and running the jobs. The step *code* runs for real in
``test_pipeline_steps_run_as_the_definition_says``, with the hyper-parameters and paths the
definition gives each step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import boto3
import pytest
from conftest import tiny_interaction_data

from ncfctl.pipeline_sagemaker import definition, entries
from ncfctl.workspace import Workspace

IMAGE_URI = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ncf-recommender:ort"
PIPELINE = "ncf-test-pipeline"
GROUP = "ncf-test-group"
ENV = {
    "NCFCTL_AWS__PIPELINE_NAME": PIPELINE,
    "NCFCTL_AWS__MODEL_PACKAGE_GROUP": GROUP,
    "NCFCTL_AWS__IMAGE_URI": IMAGE_URI,
    "NCFCTL_MODEL__FACTORS": "8",
    "NCFCTL_MODEL__LAYERS": "[16, 8]",
    "NCFCTL_PIPELINE__TRAIN_EPOCHS": "2",
}
STEP_ARN = "arn:aws:sagemaker:us-east-1:123456789012"


@pytest.fixture
def dataset(workdir):
    data = tiny_interaction_data(users=60, items=40, per_user=12)
    info = {"dataset": "tiny", "num_users": 60, "num_items": 40, "explicit": False, "split": "leave-one-out"}
    with Workspace(workdir).create("dataset", info=info) as writer:
        data.save(writer.path)
    return writer.artifact


def succeeded_steps(group_arn_version: int = 1) -> list[dict]:
    """What ListPipelineExecutionSteps answers for an execution that passed the gate (ascending)."""
    package = f"{STEP_ARN}:model-package/{GROUP}/{group_arn_version}"

    def step(name: str, kind: str, value: dict) -> dict:
        return {"StepName": name, "StepStatus": "Succeeded", "Metadata": {kind: value}}

    return [
        step("Train", "TrainingJob", {"Arn": f"{STEP_ARN}:training-job/t"}),
        step("PruneFinetune", "TrainingJob", {"Arn": f"{STEP_ARN}:training-job/p"}),
        step("Evaluate", "ProcessingJob", {"Arn": f"{STEP_ARN}:processing-job/e"}),
        step("CheckHitRate", "Condition", {"Outcome": "True"}),
        step("Register", "RegisterModel", {"Arn": package}),
    ]


def pipeline_json(run_cli, *args: str, check: bool = True):
    proc = run_cli("pipeline", "--backend", "sagemaker", *args, "--json", env=ENV, check=check)
    return json.loads(proc.stdout) if check else proc


def test_pipeline_is_upserted_started_and_followed(run_cli, dataset, moto_gaps, aws, workdir):
    moto_gaps.script_execution("Succeeded", succeeded_steps())
    result = pipeline_json(run_cli)

    assert result["action"] == "created" and result["status"] == "Succeeded"
    assert result["model_package_arn"] == f"{STEP_ARN}:model-package/{GROUP}/1"
    assert [s["step"] for s in result["steps"]] == ["Train", "PruneFinetune", "Evaluate", "CheckHitRate", "Register"]
    assert aws("sagemaker").describe_model_package_group(ModelPackageGroupName=GROUP)["ModelPackageGroupName"] == GROUP
    (execution,) = aws("sagemaker").list_pipeline_executions(PipelineName=PIPELINE)["PipelineExecutionSummaries"]
    assert execution["PipelineExecutionArn"] == result["execution_arn"]

    stored = json.loads(aws("sagemaker").describe_pipeline(PipelineName=PIPELINE)["PipelineDefinition"])
    assert stored == json.loads(Path(result["definition"]).read_text())
    steps = {s["Name"]: s for s in stored["Steps"]}
    assert list(steps) == ["Train", "PruneFinetune", "Evaluate", "CheckHitRate"]
    check = steps["CheckHitRate"]["Arguments"]
    assert [s["Name"] for s in check["IfSteps"]] == ["Register"] and [s["Name"] for s in check["ElseSteps"]] == [
        "HitRateTooLow"
    ]
    (condition,) = check["Conditions"]
    assert condition["Type"] == "GreaterThanOrEqualTo" and condition["RightValue"] == {"Get": "Parameters.MinHitRate"}
    assert condition["LeftValue"]["Std:JsonGet"] == {
        "PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"},
        "Path": "metrics.hr",
    }
    assert steps["Evaluate"]["PropertyFiles"] == [
        {"PropertyFileName": "EvaluationReport", "OutputName": "evaluation", "FilePath": "evaluation.json"}
    ]
    # the prune step trains on the Train step's model, the evaluation reads the fine-tuned one
    prune_channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in steps["PruneFinetune"]["Arguments"]["InputDataConfig"]
    }
    assert prune_channels["model"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert prune_channels["train"] == {"Get": "Parameters.TrainData"}
    evaluate_inputs = {
        i["InputName"]: i["S3Input"]["S3Uri"] for i in steps["Evaluate"]["Arguments"]["ProcessingInputs"]
    }
    assert evaluate_inputs["model"] == {"Get": "Steps.PruneFinetune.ModelArtifacts.S3ModelArtifacts"}
    train = steps["Train"]["Arguments"]
    assert json.loads(train["HyperParameters"]["sagemaker_program"]) == "train_entry.py"
    assert (
        json.loads(steps["PruneFinetune"]["Arguments"]["HyperParameters"]["sagemaker_program"])
        == "prune_finetune_entry.py"
    )
    assert train["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert train["AlgorithmSpecification"]["TrainingImage"] == {"Get": "Parameters.TrainingImage"}
    register = check["IfSteps"][0]["Arguments"]
    assert register["ModelPackageGroupName"] == GROUP and register["ModelApprovalStatus"] == {
        "Get": "Parameters.ModelApprovalStatus"
    }
    (container,) = register["InferenceSpecification"]["Containers"]
    assert (
        container["Image"] == IMAGE_URI
        and "application/jsonlines" in register["InferenceSpecification"]["SupportedContentTypes"]
    )
    assert (
        register["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]["Std:Join"]["Values"][-1] == "evaluation.json"
    )
    params = {p["Name"]: p for p in stored["Parameters"]}
    assert params["Epochs"]["DefaultValue"] == 2 and params["MinHitRate"]["DefaultValue"] == 0.5
    assert (
        params["PruneRate"]["DefaultValue"] == 0.5
        and params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    )
    assert (
        params["TrainingImage"]["DefaultValue"]
        == "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.0-cpu-py310"
    )

    # uploaded under content-addressed keys: the definition names exactly what is in S3
    keys = {o["Key"] for o in aws("s3").list_objects_v2(Bucket="ncfctl-test")["Contents"]}
    source = train["HyperParameters"]["sagemaker_submit_directory"]
    assert json.loads(source).split("/", 3)[3] in keys
    assert f"ncfctl/pipelines/{PIPELINE}/data/{dataset.id}/train/train.parquet" in keys

    # a second upsert of the same inputs uploads nothing and stores the same definition
    again = pipeline_json(run_cli, "--no-wait")
    assert again["action"] == "updated" and again["uploaded"] == 0 and again["status"] == "Executing"
    assert json.loads(Path(again["definition"]).read_text()) == stored
    record = Workspace(workdir).get(result["id"], "sagemaker-pipeline")
    assert record.manifest.info.model_package_arn == result["model_package_arn"]


def test_the_definition_reads_back_through_the_sdk(run_cli, dataset, monkeypatch):
    """--definition-only calls no AWS API: it runs without credentials and with every client pointed at a
    closed port, where any call would fail. The SDK rebuilds the same definition from the stored steps
    and orders ncfctl's pipeline as a DAG. moto is not involved."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    env = {
        **ENV,
        "NCFCTL_AWS__BUCKET": "offline-bucket",
        "NCFCTL_AWS__ROLE_ARN": "arn:aws:iam::1:role/r",
        "NCFCTL_AWS__ENDPOINT_URL": "http://127.0.0.1:9",
    }
    proc = run_cli("pipeline", "--backend", "sagemaker", "--definition-only", "--json", env=env)
    result = json.loads(proc.stdout)
    assert result["status"] == "definition only" and "execution_arn" not in result
    stored = json.loads(Path(result["definition"]).read_text())

    from ncfctl.aws import sdk
    from ncfctl.config import load_config
    from ncfctl.pipeline_sagemaker.run import sdk_session

    config = load_config(environ={**os.environ, **env})
    workflow = sdk.load(config.aws, "mlops.workflow")  # the SDK needs a region at import: the helper sets it
    Pipeline, PipelineGraph = workflow.Pipeline, workflow.PipelineGraph  # noqa: N806
    CompiledStep = sdk.load(config.aws, "mlops.workflow._steps_compiler").CompiledStep  # noqa: N806
    steps = [CompiledStep(step) for step in stored["Steps"]]
    rebuilt = Pipeline(
        name=PIPELINE, steps=steps, sagemaker_session=sdk_session(config), pipeline_experiment_config=None
    )
    assert json.loads(rebuilt.definition())["Steps"] == stored["Steps"]

    # the step graph, from the stored JSON's property references: a chain, then the gate's two branches
    def upstream(step: dict) -> set[str]:
        refs = re.findall(r'"Get": "Steps\.([A-Za-z]+)\.', json.dumps(step["Arguments"]))
        return set(refs) - {step["Name"]}

    assert {s["Name"]: upstream(s) for s in stored["Steps"]} == {
        "Train": set(),
        "PruneFinetune": {"Train"},
        "Evaluate": {"PruneFinetune"},
        "CheckHitRate": {"Evaluate"},
    }
    # and the SDK's own DAG of the pipeline ncfctl builds: topological order, condition children after it
    from ncfctl.pipeline import pipeline_config
    from ncfctl.pipeline_sagemaker import run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = pipeline_config(config)
        inputs, _ = run.prepare(cfg, Workspace(config.workdir), None, Path(tmp))
        built = definition.build(cfg, inputs, cfg.aws.role_arn, sdk_session(cfg))
    order = [step.name for step in PipelineGraph.from_pipeline(built)]
    assert order[:4] == ["Train", "PruneFinetune", "Evaluate", "CheckHitRate"]
    assert set(order[4:]) == {"Register", "HitRateTooLow"}
    assert json.loads(built.definition()) == stored


def test_a_failed_execution_names_the_step_and_why(run_cli, dataset, moto_gaps, workdir):
    """The gate failing: SageMaker reports the Fail step's message as its FailureReason (scripted here)."""
    message = "test HR@10 0.41 is below MinHitRate 0.5"
    steps = succeeded_steps()[:3] + [
        {"StepName": "CheckHitRate", "StepStatus": "Succeeded", "Metadata": {"Condition": {"Outcome": "False"}}},
        {
            "StepName": "HitRateTooLow",
            "StepStatus": "Failed",
            "FailureReason": message,
            "Metadata": {"Fail": {"ErrorMessage": message}},
        },
    ]
    moto_gaps.script_execution("Failed", steps, failure="Step failure: One or multiple steps failed.")
    proc = pipeline_json(run_cli, check=False)

    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert "Failed at step HitRateTooLow: test HR@10 0.41 is below MinHitRate 0.5" in line
    assert "lower --min-hit-rate or train longer" in line
    record = Workspace(workdir).latest("sagemaker-pipeline")
    assert record.manifest.info.status == "Failed" and record.manifest.info.model_package_arn is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NCFCTL_AWS__ROLE_ARN": ""}, "needs config key 'aws.role_arn'"),
        ({"NCFCTL_AWS__MODEL_PACKAGE_GROUP": ""}, "needs config key 'aws.model_package_group'"),
        ({"NCFCTL_AWS__BUCKET": "missing-bucket"}, "S3 bucket 'missing-bucket' does not exist"),
        ({"NCFCTL_AWS__IMAGE_URI": ""}, "the pipeline registers an ONNX Runtime bundle"),
        ({"NCFCTL_AWS__REGION": "xx-nowhere-1"}, "aws.region 'xx-nowhere-1' is not a SageMaker region"),
        (
            {"NCFCTL_AWS__FRAMEWORK_VERSION": "2.5", "NCFCTL_AWS__PY_VERSION": "py310"},
            "no SageMaker PyTorch training image",
        ),
        ({"NCFCTL_TRAIN__TASK": "explicit"}, "needs train.task 'implicit'"),
    ],
)
def test_bad_settings_are_one_line_and_create_nothing(run_cli, dataset, aws, env, message):
    proc = run_cli("pipeline", "--backend", "sagemaker", env={**ENV, **env}, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert aws("sagemaker").list_pipelines()["PipelineSummaries"] == []
    assert aws("sagemaker").list_model_package_groups()["ModelPackageGroupSummaryList"] == []
    assert aws("s3").list_objects_v2(Bucket="ncfctl-test").get("KeyCount", 0) == 0


def resolve(value, parameters: dict):
    """A definition value with pipeline parameters substituted (what SageMaker does at execution time)."""
    if isinstance(value, dict) and "Get" in value and value["Get"].startswith("Parameters."):
        return parameters[value["Get"].removeprefix("Parameters.")]
    if isinstance(value, dict) and "Std:Join" in value:
        join = value["Std:Join"]
        return join["On"].join(str(resolve(v, parameters)) for v in join["Values"])
    return value


@pytest.mark.slow
def test_pipeline_steps_run_as_the_definition_says(run_cli, dataset, tmp_path, serving_process, aws_env):
    """Train -> PruneFinetune -> Evaluate run here, in order, from the uploaded sourcedir.tar.gz, each with
    the hyper-parameters / paths of its step in the stored definition and the channel layout
    SageMaker gives it; the bundle the Evaluate step packs is then served by the real server."""
    result = pipeline_json(run_cli, "--definition-only")
    stored = json.loads(Path(result["definition"]).read_text())
    parameters = {p["Name"]: p["DefaultValue"] for p in stored["Parameters"]}
    steps = {s["Name"]: s["Arguments"] for s in stored["Steps"]}
    s3 = boto3.client("s3", endpoint_url=aws_env["NCFCTL_AWS__ENDPOINT_URL"], region_name="us-east-1")
    code = tmp_path / "code"
    source_uri = json.loads(steps["Train"]["HyperParameters"]["sagemaker_submit_directory"])
    bucket = "ncfctl-test"
    pipeline_json(run_cli, "--no-wait")  # uploads the inputs the definition names
    s3.download_file(bucket, source_uri.split("/", 3)[3], str(tmp_path / "sourcedir.tar.gz"))
    with tarfile.open(tmp_path / "sourcedir.tar.gz") as tar:
        tar.extractall(code, filter="data")

    def fetch_prefix(uri: str, dest: Path) -> Path:
        prefix = uri.split("/", 3)[3]
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            target = dest / Path(obj["Key"]).name
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
        return dest

    def train_step(name: str, model_channel: Path) -> Path:
        request = steps[name]
        hyper = {k: json.loads(resolve(v, parameters)) for k, v in request["HyperParameters"].items()}
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(code), "SM_MODEL_DIR": str(tmp_path / name / "model")}
        env["SM_CHANNEL_MODEL"] = str(model_channel)
        for channel in ("train", "test"):
            uri = next(c for c in request["InputDataConfig"] if c["ChannelName"] == channel)
            uri = resolve(uri["DataSource"]["S3DataSource"]["S3Uri"], parameters)
            env[f"SM_CHANNEL_{channel.upper()}"] = str(fetch_prefix(uri, tmp_path / name / channel))
        (tmp_path / name / "model").mkdir(parents=True)
        args = [a for k, v in hyper.items() if not k.startswith("sagemaker_") for a in (f"--{k}", str(v))]
        proc = subprocess.run(
            [sys.executable, hyper["sagemaker_program"], *args], cwd=code, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        archive = tmp_path / name / "out" / "model.tar.gz"  # what SageMaker uploads from SM_MODEL_DIR
        archive.parent.mkdir()
        with tarfile.open(archive, "w:gz") as tar:
            for path in (tmp_path / name / "model").iterdir():
                tar.add(path, arcname=path.name)
        return archive.parent

    init_uri = next(c for c in steps["Train"]["InputDataConfig"] if c["ChannelName"] == "model")["DataSource"]
    trained = train_step("Train", fetch_prefix(init_uri["S3DataSource"]["S3Uri"], tmp_path / "init"))
    tuned = train_step("PruneFinetune", trained)
    with tarfile.open(tuned / "model.tar.gz") as tar:
        prune = json.loads(tar.extractfile(entries.PRUNE_FILE).read())
    assert prune["rate"] == 0.5 and prune["sparsity"] == pytest.approx(0.5, abs=0.01)

    evaluate = steps["Evaluate"]
    root = tmp_path / "processing"
    local = {
        i["InputName"]: Path(i["S3Input"]["LocalPath"]).relative_to(entries.PROCESSING_DIR)
        for i in evaluate["ProcessingInputs"]
    }
    (root / local["model"]).mkdir(parents=True)
    (root / local["model"] / "model.tar.gz").write_bytes((tuned / "model.tar.gz").read_bytes())
    for channel in ("train", "test"):
        uri = next(i for i in evaluate["ProcessingInputs"] if i["InputName"] == channel)["S3Input"]["S3Uri"]
        fetch_prefix(resolve(uri, parameters), root / local[channel])
    env = {**{k: v for k, v in evaluate["Environment"].items() if isinstance(v, str)}, "NCF_PROCESSING_DIR": str(root)}
    proc = subprocess.run(
        [sys.executable, "evaluate_package_entry.py"],
        cwd=code,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(code), **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    outputs = {
        o["OutputName"]: Path(o["S3Output"]["LocalPath"]).relative_to(entries.PROCESSING_DIR)
        for o in evaluate["ProcessingOutputConfig"]["Outputs"]
    }
    report = json.loads((root / outputs["evaluation"] / "evaluation.json").read_text())
    assert 0.0 <= report["metrics"]["hr"] <= 1.0 and report["metrics"]["k"] == 10
    assert report["baseline"]["name"] == "popularity" and report["parity_max_abs_diff"] <= 1e-5
    assert report["pruning"]["method"] == "magnitude"
    bundle = tmp_path / "bundle"
    with tarfile.open(root / outputs["bundle"] / entries.BUNDLE_ARCHIVE) as tar:
        tar.extractall(bundle, filter="data")
    assert {"serving.json", "model.onnx", "model.pt", "masks.pt"} <= {p.name for p in bundle.iterdir()}
    import httpx

    server = serving_process(bundle)
    top = httpx.post(f"{server.url}/invocations", json={"user_id": "u1", "top_k": 3}).json()
    assert len(top["items"]) == 3
    assert definition.REPORT == "EvaluationReport"
