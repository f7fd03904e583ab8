"""The SageMaker Pipeline definition, built with the ``sagemaker`` SDK's workflow classes.

Steps (names as in SageMaker Studio)::

    Train -> PruneFinetune -> Evaluate -> CheckHitRate --(HR@K >= MinHitRate)--> Register
                                                     \\--(otherwise)----------> HitRateTooLow (Fail)

* ``Train``: the very ``CreateTrainingJob`` request ``train --backend sagemaker`` sends (script mode
  in AWS's PyTorch container, :func:`ncfctl.training.sagemaker_job.training_request`), with pipeline
  parameters for the epochs, instance type and image.
* ``PruneFinetune``: a training job on the Train step's ``model.tar.gz`` that prunes once and
  fine-tunes with the masks locked (:func:`ncfctl.pipeline_sagemaker.entries.prune_finetune`).
* ``Evaluate``: a processing job writing ``evaluation.json`` (the ``EvaluationReport`` property
  file: test HR/NDCG@K and the popularity baseline) and the servable bundle ``model.tar.gz``.
* ``Register``: a new version in ``aws.model_package_group``, ``PendingManualApproval`` by default,
  with the report as its ``ModelMetrics`` and the serving image + bundle as its container.

The job steps are built from ncfctl's own request builders (one way to build each request, shared
with the single-job commands) in a small :class:`RequestStep`; the SDK supplies the rest: the
pipeline, its parameters, property references between steps, ``JsonGet`` on the property file,
the condition and fail steps and the JSON it all serializes to. ``ModelTrainer``/``ModelBuilder``
are not used: they replace the PyTorch container's script mode with their own driver and would
repack the bundle.

Neo compilation is not a step: a Neo build is native code for one instance family, chosen when
deploying, while the registry should hold the portable, evaluated artifact the gate approved.
``ncfctl neo compile --model-package`` compiles a registered version for the instance it will
run on (and SageMaker has no Neo step type; a Lambda step would only poll a job ncfctl already
follows).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from ncfctl.aws import s3, sdk
from ncfctl.config import Config
from ncfctl.pipeline_sagemaker import entries
from ncfctl.serving.server_env import server_environment
from ncfctl.targets import default_threads, resolve_target
from ncfctl.training.entry import job_hyperparameters
from ncfctl.training.loop import FitSettings
from ncfctl.training.sagemaker_job import PACKAGE_SCRIPT, PRUNE_FINETUNE_SCRIPT, training_request
from ncfctl.training.worker import WorkerJob

TRAIN, PRUNE, EVALUATE, CHECK, REGISTER, FAIL = (
    "Train",
    "PruneFinetune",
    "Evaluate",
    "CheckHitRate",
    "Register",
    "HitRateTooLow",
)
REPORT = "EvaluationReport"  # the property file's name
CONTENT_TYPES = ["application/json", "application/jsonlines"]
PENDING = "PendingManualApproval"


@dataclass(frozen=True)
class PipelineInputs:
    """What the pipeline reads: uploaded by the upsert under content-addressed keys (see ``run``)."""

    source_uri: str  # sourcedir.tar.gz
    train_uri: str  # the dataset's train channel (prefix)
    test_uri: str
    init_model_uri: str  # prefix holding the seeded initial model.pt
    num_users: int
    num_items: int
    dataset: str
    serving_image: str  # the onnxruntime serving image in ECR the registered versions run in


def _processing_input(name: str, uri: Any, local: str) -> dict[str, Any]:
    return {
        "InputName": name,
        "AppManaged": False,
        "S3Input": {
            "S3Uri": uri,
            "LocalPath": f"{entries.PROCESSING_DIR}/{local}",
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
            "S3DataDistributionType": "FullyReplicated",
        },
    }


def _processing_output(name: str, uri: Any, local: str) -> dict[str, Any]:
    return {
        "OutputName": name,
        "AppManaged": False,
        "S3Output": {"S3Uri": uri, "LocalPath": f"{entries.PROCESSING_DIR}/{local}", "S3UploadMode": "EndOfJob"},
    }


def build(config: Config, inputs: PipelineInputs, role_arn: str, session: Any) -> Any:
    """The SDK ``Pipeline`` for ``config`` (stage settings already resolved by ``pipeline_config``)."""
    aws = config.aws
    workflow = sdk.load(aws, "mlops.workflow")
    params_mod = sdk.load(aws, "core.workflow.parameters")
    functions = sdk.load(aws, "core.workflow.functions")
    conditions = sdk.load(aws, "core.workflow.conditions")
    properties = sdk.load(aws, "core.workflow.properties")
    variables = sdk.load(aws, "core.workflow.execution_variables")
    join, execution_id = functions.Join, variables.ExecutionVariables.PIPELINE_EXECUTION_ID

    class RequestStep(workflow.steps.ConfigurableRetryStep):
        """A job step whose request ncfctl builds; ``shape`` types its ``properties`` for later steps."""

        def __init__(self, name: str, step_type: Any, shape: str, request: dict[str, Any], property_files=()):
            super().__init__(name, step_type)
            self.request = request
            self.property_files = list(property_files)
            self._properties = properties.Properties(step_name=name, step=self, shape_name=shape)

        @property
        def arguments(self) -> dict[str, Any]:
            return self.request

        @property
        def properties(self):
            return self._properties

        def to_request(self) -> dict[str, Any]:
            request = super().to_request()
            if self.property_files:
                request["PropertyFiles"] = [p.expr for p in self.property_files]
            return request

    p = config.pipeline
    epochs = params_mod.ParameterInteger("Epochs", default_value=config.train.epochs)
    finetune_epochs = params_mod.ParameterInteger("FinetuneEpochs", default_value=config.finetune.epochs)
    prune_rate = params_mod.ParameterFloat("PruneRate", default_value=config.prune.rate)
    min_hit_rate = params_mod.ParameterFloat("MinHitRate", default_value=p.min_hit_rate)
    train_type = params_mod.ParameterString("TrainingInstanceType", default_value=aws.training_instance_type)
    train_image = params_mod.ParameterString("TrainingImage", default_value=sdk.training_image_uri(aws))
    eval_type = params_mod.ParameterString("ProcessingInstanceType", default_value=aws.processing_instance_type)
    eval_image = params_mod.ParameterString(
        "ProcessingImage", default_value=sdk.training_image_uri(aws, aws.processing_instance_type)
    )
    train_data = params_mod.ParameterString("TrainData", default_value=inputs.train_uri)
    test_data = params_mod.ParameterString("TestData", default_value=inputs.test_uri)
    approval = params_mod.ParameterString("ModelApprovalStatus", default_value=PENDING)
    parameters = [epochs, finetune_epochs, prune_rate, min_hit_rate, train_type, train_image, eval_type, eval_image]
    parameters += [train_data, test_data, approval]

    bucket = s3.parse_uri(inputs.source_uri)[0]
    runs = s3.uri(bucket, aws.prefix, "pipelines", aws.pipeline_name, "executions")

    def checkpoints(step: str) -> Any:
        return join(on="/", values=[runs, execution_id, "checkpoints", step])

    def hyperparameters(settings: FitSettings, epochs_param: Any, extra: dict[str, Any]) -> dict[str, Any]:
        job = WorkerJob("", inputs.num_users, inputs.num_items, False, "", "", asdict(settings))
        return {**job_hyperparameters(job), "epochs": epochs_param.to_string(), **extra}

    train_settings = FitSettings.from_config(config.train, config.seed, threads=None)
    train = RequestStep(
        TRAIN,
        workflow.StepTypeEnum.TRAINING,
        "DescribeTrainingJobResponse",
        training_request(
            config,
            hyperparameters(train_settings, epochs, {}),
            {"train": train_data, "test": test_data, "model": inputs.init_model_uri},
            inputs.source_uri,
            checkpoint_uri=checkpoints(TRAIN),
            instance_type=train_type,
            image=train_image,
        ),
    )
    ft = config.finetune
    tune_settings = FitSettings.from_config(
        config.train, config.seed, epochs=ft.epochs, lr=ft.lr, fraction=ft.fraction, threads=None
    )
    pr = config.prune
    prune_settings = {
        "prune_rate": prune_rate.to_string(),
        "prune_method": json.dumps(pr.method),
        "prune_scope": json.dumps(pr.scope),
        "prune_norm": json.dumps(pr.norm),
        "prune_allocation": json.dumps(pr.allocation),
        "prune_include_embeddings": json.dumps(pr.include_embeddings),
    }
    prune = RequestStep(
        PRUNE,
        workflow.StepTypeEnum.TRAINING,
        "DescribeTrainingJobResponse",
        training_request(
            config,
            hyperparameters(tune_settings, finetune_epochs, prune_settings),
            {"train": train_data, "test": test_data, "model": train.properties.ModelArtifacts.S3ModelArtifacts},
            inputs.source_uri,
            checkpoint_uri=checkpoints(PRUNE),
            entry=PRUNE_FINETUNE_SCRIPT,
            instance_type=train_type,
            image=train_image,
        ),
    )
    report = properties.PropertyFile(name=REPORT, output_name=entries.EVALUATION_OUTPUT, path=entries.EVALUATION_FILE)
    outputs = {
        name: join(on="/", values=[runs, execution_id, name])
        for name in (entries.EVALUATION_OUTPUT, entries.BUNDLE_OUTPUT)
    }
    target = resolve_target(config.compile.target, config.compile.target_platform)
    code_dir = f"{entries.PROCESSING_DIR}/{entries.CODE_INPUT}"
    script = (
        f"set -e; cd {code_dir}; tar -xzf sourcedir.tar.gz; "
        "python3 -m pip install --quiet -r requirements.txt -r requirements-package.txt; "
        f"python3 {PACKAGE_SCRIPT}"
    )
    evaluate = RequestStep(
        EVALUATE,
        workflow.StepTypeEnum.PROCESSING,
        "DescribeProcessingJobResponse",
        {
            "RoleArn": role_arn,
            "AppSpecification": {"ImageUri": eval_image, "ContainerEntrypoint": ["bash", "-c", script]},
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": eval_type,
                    "VolumeSizeInGB": aws.training_volume_gb,
                }
            },
            "ProcessingInputs": [
                _processing_input("code", inputs.source_uri, entries.CODE_INPUT),
                _processing_input("model", prune.properties.ModelArtifacts.S3ModelArtifacts, entries.MODEL_INPUT),
                _processing_input("train", train_data, entries.TRAIN_INPUT),
                _processing_input("test", test_data, entries.TEST_INPUT),
            ],
            "ProcessingOutputConfig": {
                "Outputs": [_processing_output(name, uri, name) for name, uri in outputs.items()]
            },
            "Environment": {
                "NCF_TOP_K": str(config.train.top_k),
                "NCF_TARGET": target.name,
                "NCF_THREADS": str(default_threads(target, aws.instance_type)),
                "NCF_OPSET": str(config.compile.opset),
                "NCF_TOLERANCE": str(config.compile.parity_tolerance),
                "NCF_SEED": str(config.seed),
                "NCF_SOURCE_MODEL": variables.ExecutionVariables.PIPELINE_EXECUTION_ARN,
                "PYTHONUNBUFFERED": "1",
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": aws.training_max_runtime_seconds},
            "Tags": [{"Key": "created-by", "Value": "ncfctl"}],
        },
        property_files=[report],
    )
    register = RequestStep(
        REGISTER,
        workflow.StepTypeEnum.REGISTER_MODEL,
        "DescribeModelPackageOutput",
        {
            "ModelPackageGroupName": aws.model_package_group,
            "ModelApprovalStatus": approval,
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": inputs.serving_image,
                        "ModelDataUrl": join(on="/", values=[outputs[entries.BUNDLE_OUTPUT], entries.BUNDLE_ARCHIVE]),
                        "Environment": server_environment(config.serving),
                    }
                ],
                "SupportedContentTypes": CONTENT_TYPES,
                "SupportedResponseMIMETypes": CONTENT_TYPES,
                "SupportedRealtimeInferenceInstanceTypes": [aws.instance_type],
                "SupportedTransformInstanceTypes": [aws.transform_instance_type],
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": join(on="/", values=[outputs[entries.EVALUATION_OUTPUT], entries.EVALUATION_FILE]),
                    }
                }
            },
            "CustomerMetadataProperties": {
                "runtime": "onnxruntime",
                "target": target.name,
                "dataset": inputs.dataset,
                "pipeline": aws.pipeline_name,
            },
        },
    )
    hit_rate = functions.JsonGet(step_name=EVALUATE, property_file=report, json_path="metrics.hr")
    fail = workflow.FailStep(
        FAIL,
        error_message=join(
            on=" ", values=[f"test HR@{config.train.top_k}", hit_rate, "is below MinHitRate", min_hit_rate]
        ),
    )
    check = workflow.ConditionStep(
        CHECK,
        conditions=[conditions.ConditionGreaterThanOrEqualTo(left=hit_rate, right=min_hit_rate)],
        if_steps=[register],
        else_steps=[fail],
    )
    return workflow.Pipeline(
        name=aws.pipeline_name,
        parameters=parameters,
        steps=[train, prune, evaluate, check],
        sagemaker_session=session,
        pipeline_experiment_config=None,
    )
