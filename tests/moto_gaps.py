"""The SageMaker / CodeBuild calls moto 5.2.5 does not implement, added to its running server.

moto answers ``StopTrainingJob``, ``StopCompilationJob``, ``StopTransformJob``, ``UpdateEndpoint``,
``UpdateProject``, ``ListPipelineExecutionSteps`` and ``StopPipelineExecution`` with HTTP 500 ("action has not been
implemented"). :class:`MotoGaps` adds each one to moto's own response classes, acting on moto's
own backend state, so ncfctl's real boto3 calls still travel over HTTP to the server and are
serialized and validated exactly as for AWS; only the service's answer is ours. Every call is
recorded (``gaps.calls[action]``) so tests can assert on the request that reached the server.

What this cannot show: AWS's real side effects (a stopped job's billing, an update's blue/green
swap and rollback, CodeBuild's project validation, a pipeline actually running its steps).
Pipeline steps are scripted per execution with :meth:`MotoGaps.script_execution`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import pytest
from moto.codebuild.responses import CodeBuildResponse
from moto.core.responses import ActionResult, EmptyResult
from moto.sagemaker.responses import SageMakerResponse


class MotoGaps:
    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.executions: dict[str, dict[str, Any]] = {}  # execution ARN -> status, failure, steps
        self.update_failure: str | None = None  # set: UpdateEndpoint "fails" and the endpoint keeps its config
        self.scaling_at_update: list[bool] = []  # whether the variant was a scalable target when UpdateEndpoint ran

    def script_execution(self, status: str, steps: list[dict[str, Any]], failure: str = "", arn: str = "*") -> None:
        """Make pipeline execution ``arn`` (``*``: every execution) report ``status`` and list ``steps``."""
        self.executions[arn] = {"status": status, "steps": steps, "failure": failure}

    def _scripted(self, arn: str) -> dict[str, Any] | None:
        return self.executions.get(arn, self.executions.get("*"))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        gaps = self

        def record(response, action: str) -> dict[str, Any]:
            params = json.loads(response.body)  # the request exactly as boto3 serialized it (JSON protocol)
            gaps.calls[action].append(params)
            return params

        def stop_training_job(self) -> EmptyResult:
            params = record(self, "StopTrainingJob")
            job = self.sagemaker_backend.training_jobs[params["TrainingJobName"]]
            job.training_job_status = job.secondary_status = "Stopped"
            return EmptyResult()

        def stop_compilation_job(self) -> EmptyResult:
            params = record(self, "StopCompilationJob")
            self.sagemaker_backend.compilation_jobs[params["CompilationJobName"]].compilation_job_status = "STOPPED"
            return EmptyResult()

        def stop_transform_job(self) -> EmptyResult:
            params = record(self, "StopTransformJob")
            self.sagemaker_backend.transform_jobs[params["TransformJobName"]].transform_job_status = "Stopped"
            return EmptyResult()

        def update_endpoint(self) -> ActionResult:
            from moto.applicationautoscaling.models import applicationautoscaling_backends

            params = record(self, "UpdateEndpoint")
            scaling = applicationautoscaling_backends[self.current_account][self.region]
            resource = f"endpoint/{params['EndpointName']}/variant/AllTraffic"
            gaps.scaling_at_update.append(
                any(resource in key for key in scaling.targets.get("sagemaker:variant:DesiredInstanceCount", {}))
            )
            backend = self.sagemaker_backend
            endpoint = backend.endpoints[params["EndpointName"]]
            config = backend.endpoint_configs[params["EndpointConfigName"]]  # a missing config is a KeyError: 500
            if gaps.update_failure is not None:  # SageMaker rolls back: still InService, on the old config
                endpoint.failure_reason = gaps.update_failure
                return ActionResult({"EndpointArn": endpoint.arn})
            endpoint.endpoint_config_name = config.endpoint_config_name
            endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
            return ActionResult({"EndpointArn": endpoint.arn})

        def update_project(self) -> ActionResult:
            params = record(self, "UpdateProject")
            project = self.codebuild_backend.codebuild_projects[params["name"]]
            for key in ("environment", "serviceRole", "timeoutInMinutes", "source", "description"):
                if params.get(key) is not None:
                    project.project_metadata[key] = params[key]
            return ActionResult({"project": project.project_metadata})

        def list_pipeline_execution_steps(self) -> ActionResult:
            params = record(self, "ListPipelineExecutionSteps")
            scripted = gaps._scripted(params["PipelineExecutionArn"]) or {"steps": []}
            return ActionResult({"PipelineExecutionSteps": scripted["steps"]})

        def stop_pipeline_execution(self) -> ActionResult:
            params = record(self, "StopPipelineExecution")
            return ActionResult({"PipelineExecutionArn": params["PipelineExecutionArn"]})

        original_describe = SageMakerResponse.describe_pipeline_execution

        def describe_pipeline_execution(self) -> ActionResult:
            result = original_describe(self)
            scripted = gaps._scripted(self._get_param("PipelineExecutionArn"))
            if scripted is not None:
                result = ActionResult(
                    {
                        **result.result,
                        "PipelineExecutionStatus": scripted["status"],
                        "FailureReason": scripted["failure"],
                    }
                )
            return result

        for name, fn in (
            ("stop_training_job", stop_training_job),
            ("stop_compilation_job", stop_compilation_job),
            ("stop_transform_job", stop_transform_job),
            ("update_endpoint", update_endpoint),
            ("list_pipeline_execution_steps", list_pipeline_execution_steps),
            ("stop_pipeline_execution", stop_pipeline_execution),
            ("describe_pipeline_execution", describe_pipeline_execution),
        ):
            monkeypatch.setattr(SageMakerResponse, name, fn, raising=False)
        monkeypatch.setattr(CodeBuildResponse, "update_project", update_project, raising=False)


@pytest.fixture
def moto_gaps(aws_env, monkeypatch) -> MotoGaps:
    """moto's server with the missing calls filled in (see the module docstring); resets with ``aws_env``."""
    gaps = MotoGaps()
    gaps.install(monkeypatch)
    return gaps
