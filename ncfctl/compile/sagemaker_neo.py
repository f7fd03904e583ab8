"""The SageMaker Neo compiler: package, upload, CreateCompilationJob, poll, download, safely extract.

Neo compiles for static shapes, so one job runs per batch size (1 for single-pair requests and N,
default the number of items, for "score every item for one user"); the container picks the
smallest compiled batch >= the request and pads. Layout in S3, one folder per job::

    s3://<aws.bucket>/<aws.prefix>/neo/<job>/model.tar.gz   Neo's input: model.onnx or model.pth at the root
    s3://<aws.bucket>/<aws.prefix>/neo/<job>/output/        Neo's output: <name>-<target>.tar.gz

No boto3 waiter exists for compilation jobs, so :func:`wait` polls DescribeCompilationJob, showing
each job's CloudWatch log lines; Ctrl-C stops the jobs it started (StopCompilationJob).
The output archive comes from a service, so it is extracted with :func:`ncfctl.safetar.safe_extract`.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import torch

from ncfctl import safetar
from ncfctl.aws import jobs as sm_jobs
from ncfctl.aws import s3
from ncfctl.aws.clients import client, error_message, require, require_credentials
from ncfctl.aws.waiting import poll
from ncfctl.compile.base import CompileOutput, CompileRequest
from ncfctl.config import ArchiveConfig, AwsConfig, CompileConfig
from ncfctl.errors import NcfError
from ncfctl.export.preflight import ExportReport, export_checked
from ncfctl.progress import NO_PROGRESS, Progress

TERMINAL = sm_jobs.COMPILATION.terminal
NVIDIA_OPTIONS = ("gpu-code", "trt-ver", "cuda-ver")  # CompilerOptions Neo requires for NVIDIA platforms
INPUT_ARCHIVE = "model.tar.gz"
OUTPUT_DIR = "output"
WAIT_MARGIN_S = 300  # queueing before MaxRuntimeInSeconds starts counting


@dataclass
class NeoJob:
    """One compilation job: a static batch size and where its input and output live."""

    name: str
    batch_size: int
    input_uri: str
    output_uri: str
    report: ExportReport

    @property
    def folder(self) -> str:
        """The DLR folder inside the bundle (``serving.json`` models[].path)."""
        return f"b{self.batch_size}"


def compiler_options(request: CompileRequest, settings: CompileConfig) -> dict[str, Any]:
    """``OutputConfig.CompilerOptions``: ``compile.compiler_options`` plus what the input needs.

    Neo assumes float32 PyTorch inputs unless ``dtype`` says otherwise (documented for ml_*
    targets), and embedding lookups need int64 indices; ONNX graphs carry their dtypes. NVIDIA
    platforms need ``gpu-code``, ``trt-ver`` and ``cuda-ver`` (the GPU, TensorRT and CUDA of the
    device), which only the user knows.
    """
    options = dict(settings.compiler_options or {})
    if request.framework == "pytorch":
        options.setdefault("dtype", "int64")
    if request.target.platform is not None and request.target.accelerator == "nvidia":
        missing = [key for key in NVIDIA_OPTIONS if key not in options]
        if missing:
            raise NcfError(
                f"compile.target_platform {request.target.name}: Neo needs compile.compiler_options "
                f"{', '.join(missing)} for NVIDIA GPUs",
                hint="e.g. compile.compiler_options: {gpu-code: sm_75, trt-ver: 8.6.1, cuda-ver: '11.8'}",
                settings=("compile.target_platform",),
            )
    return options


def job_request(job: NeoJob, request: CompileRequest, settings: CompileConfig, role_arn: str) -> dict[str, Any]:
    """The CreateCompilationJob arguments for ``job``.

    DataInputConfig gives the static shape of both 1-D inputs; ONNX names them, PyTorch takes them
    in order.
    """
    shape = [job.batch_size]
    input_config: dict[str, Any] = {"S3Uri": job.input_uri}
    output_config: dict[str, Any] = {"S3OutputLocation": job.output_uri, **request.target.output_config()}
    if request.framework == "onnx":
        input_config.update(Framework="ONNX", DataInputConfig=json.dumps({"user": shape, "item": shape}))
    else:
        input_config.update(
            Framework="PYTORCH",
            FrameworkVersion=settings.framework_version,
            DataInputConfig=json.dumps([shape, shape]),
        )
    options = compiler_options(request, settings)
    if options:
        output_config["CompilerOptions"] = json.dumps(options)
    return {
        "CompilationJobName": job.name,
        "RoleArn": role_arn,
        "InputConfig": input_config,
        "OutputConfig": output_config,
        "StoppingCondition": {"MaxRuntimeInSeconds": settings.max_runtime_seconds},
        "Tags": [
            {"Key": "ncfctl:model", "Value": request.model_id},
            {"Key": "ncfctl:artifact", "Value": request.name},
        ],
    }


def _message(exc: Exception) -> str:
    """An AWS error as one line (service errors carry a code; connection errors only text)."""
    return error_message(exc) if isinstance(exc, botocore.exceptions.ClientError) else str(exc)


def describe(aws: AwsConfig, name: str) -> dict[str, Any]:
    """DescribeCompilationJob; an unknown job is one clear line."""
    try:
        return client(aws, "sagemaker").describe_compilation_job(CompilationJobName=name)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        message = _message(exc)
        if "ResourceNotFound" in message or "Could not find" in message:
            raise NcfError(f"no SageMaker compilation job '{name}' in {aws.region}") from None
        raise NcfError(f"DescribeCompilationJob {name}: {message}") from None


def list_jobs(aws: AwsConfig, name_contains: str, limit: int = 20) -> list[dict[str, Any]]:
    """The newest compilation jobs whose name contains ``name_contains`` (ListCompilationJobs summaries)."""
    try:
        response = client(aws, "sagemaker").list_compilation_jobs(
            NameContains=name_contains, SortBy="CreationTime", SortOrder="Descending", MaxResults=limit
        )
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise NcfError(f"ListCompilationJobs: {_message(exc)}") from None
    return response.get("CompilationJobSummaries", [])


def elapsed_seconds(description: dict[str, Any]) -> float | None:
    """Compilation time: end (or now) minus start; None before the job starts."""
    start, end = description.get("CompilationStartTime"), description.get("CompilationEndTime")
    if not isinstance(start, datetime):
        return None
    end = end if isinstance(end, datetime) else datetime.now(start.tzinfo)
    return max(0.0, (end - start).total_seconds())


def wait(
    aws: AwsConfig, names: list[str], *, poll_seconds: float, timeout_s: float, progress: Progress = NO_PROGRESS
) -> dict[str, dict[str, Any]]:
    """Poll until every job is COMPLETED, FAILED or STOPPED (Neo has no boto3 waiter); a task per job.

    Each job's CloudWatch log lines are shown as they arrive; Ctrl-C stops the jobs still running.
    """
    tasks = {name: progress.task(f"neo {name}", status="polling") for name in names}
    tails = {name: sm_jobs.LogTail(aws, sm_jobs.COMPILATION.log_group, name, progress.log) for name in names}
    final: dict[str, dict[str, Any]] = {}
    started = time.monotonic()

    def check() -> dict[str, dict[str, Any]] | None:
        for name in names:
            if name in final:
                continue
            description = describe(aws, name)
            status = description["CompilationJobStatus"]
            tails[name].poll()
            shown = f"{status} {time.monotonic() - started:.0f}s"
            if status in TERMINAL:
                final[name] = description
                tasks[name].finish(shown)
            else:
                tasks[name].update(status=shown)
        return {name: final[name] for name in names} if len(final) == len(names) else None

    def timed_out() -> NcfError:
        pending = [n for n in names if n not in final]
        return NcfError(
            f"Neo job(s) {', '.join(pending)} not finished after {timeout_s:.0f}s",
            hint=f"{pending[0]} may still finish: ask for its status later",
        )

    with sm_jobs.stop_on_interrupt(aws, sm_jobs.COMPILATION, names, progress.log):
        return poll(check, poll_seconds, timeout_s, timed_out)


def output_uri(aws: AwsConfig, description: dict[str, Any]) -> str:
    """The compiled archive: ``ModelArtifacts.S3ModelArtifacts`` if it names one, else the one under it."""
    location = (
        description.get("ModelArtifacts", {}).get("S3ModelArtifacts") or description["OutputConfig"]["S3OutputLocation"]
    )
    if location.endswith(".tar.gz"):
        return location
    bucket, prefix = s3.parse_uri(location)
    prefix = prefix.rstrip("/") + "/"
    try:
        listing = client(aws, "s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    except botocore.exceptions.ClientError as exc:
        raise NcfError(f"list {location}: {error_message(exc)}") from None
    archives = [o["Key"] for o in listing.get("Contents", []) if o["Key"].endswith(".tar.gz")]
    if len(archives) != 1:
        found = ", ".join(archives) or "nothing"
        raise NcfError(
            f"Neo job {description['CompilationJobName']} COMPLETED but {location} holds {found}, "
            "expected one compiled .tar.gz"
        )
    return s3.uri(bucket, archives[0])


def fetch(
    aws: AwsConfig, limits: ArchiveConfig, source: str, folder: Path, progress: Progress = NO_PROGRESS
) -> list[str]:
    """Download ``source`` and extract it within ``limits`` into ``folder``; it must hold a compiled library."""
    with tempfile.TemporaryDirectory(prefix="ncfctl-neo-") as tmp:
        archive = s3.download_file(aws, source, Path(tmp) / "compiled.tar.gz", progress)
        files = safetar.safe_extract(archive, folder, limits)
    if not any(name.endswith(".so") for name in files):
        raise NcfError(f"Neo output {source} holds no compiled library (.so): {', '.join(sorted(files)) or 'no files'}")
    return files


def failure_hints(request: CompileRequest, settings: CompileConfig, reports: list[ExportReport]) -> str:
    """What the preflight already ruled out, and what to try next, for a failed job."""
    operators = ", ".join(op for op in reports[0].operators if not op.startswith("prim::"))
    passed = f"the local preflight passed (operators {operators}; parity {max(r.max_abs_diff for r in reports):.2g})"
    if request.framework == "pytorch":
        retry = (
            f"model.pth was traced with torch {torch.__version__.split('+')[0]} and Neo compiles with PyTorch "
            f"{settings.framework_version}: retry with compile.framework onnx"
        )
    else:
        retry = f"model.onnx is opset {request.opset}: retry with compile.framework pytorch"
    return f"{passed}; {retry}; the job's log is in CloudWatch under /aws/sagemaker/CompilationJobs"


class NeoCompiler:
    """``compile.backend sagemaker``: one Neo job per static batch size, each extracted into a DLR folder."""

    name = "sagemaker"

    def __init__(self, aws: AwsConfig, settings: CompileConfig, archive_limits: ArchiveConfig):
        self.aws = aws
        self.settings = settings
        self.archive_limits = archive_limits

    def _ready(self) -> tuple[str, str]:
        """Credentials, role and an existing bucket; returns (bucket, role)."""
        what = "a SageMaker Neo compilation"
        require_credentials(self.aws, what)
        bucket = require(self.aws.bucket, "aws.bucket", what)
        role = require(self.aws.role_arn, "aws.role_arn", what)
        s3.check_bucket(self.aws, bucket)
        return bucket, role

    def check(self, request: CompileRequest) -> None:
        self._ready()
        compiler_options(request, self.settings)

    def job_name(self, request: CompileRequest, batch_size: int) -> str:
        stamp = request.name.split("-", 1)[-1]  # compiled-YYYYmmdd-HHMMSS-xxxx -> YYYYmmdd-HHMMSS-xxxx
        return f"{self.settings.job_prefix}-{stamp}-b{batch_size}"

    def compile(self, request: CompileRequest, folder: Path, progress: Progress = NO_PROGRESS) -> CompileOutput:
        bucket, role = self._ready()
        sizes = sorted({1, request.batch_size})
        sagemaker = client(self.aws, "sagemaker")
        jobs: list[NeoJob] = []
        task = progress.task("export + preflight", total=len(sizes), status=request.framework)
        with tempfile.TemporaryDirectory(prefix="ncfctl-neo-") as tmp:
            for size in sizes:
                name = self.job_name(request, size)
                work = Path(tmp) / name
                report = export_checked(
                    request.model,
                    work,
                    framework=request.framework,
                    num_users=request.num_users,
                    num_items=request.num_items,
                    batch_size=size,
                    opset=request.opset,
                    tolerance=request.tolerance,
                    seed=request.seed,
                )
                folder_uri = s3.uri(bucket, self.aws.prefix, "neo", name)
                jobs.append(NeoJob(name, size, f"{folder_uri}/{INPUT_ARCHIVE}", f"{folder_uri}/{OUTPUT_DIR}", report))
                task.advance(status=f"batch {size}: parity {report.max_abs_diff:.1e}")
            for job in jobs:
                archive = safetar.pack(Path(tmp) / job.name / INPUT_ARCHIVE, [(job.report.path, job.report.path.name)])
                s3.upload_file(self.aws, archive, job.input_uri, progress)
        created: list[str] = []
        with sm_jobs.stop_on_interrupt(self.aws, sm_jobs.COMPILATION, created, progress.log, also=(NcfError,)):
            for job in jobs:
                try:
                    sagemaker.create_compilation_job(**job_request(job, request, self.settings, role))
                except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                    raise NcfError(f"CreateCompilationJob {job.name}: {_message(exc)}") from None
                created.append(job.name)
        outcomes = wait(
            self.aws,
            [j.name for j in jobs],
            poll_seconds=self.aws.poll_seconds,
            timeout_s=self.settings.max_runtime_seconds + WAIT_MARGIN_S,
            progress=progress,
        )
        for job in jobs:
            outcome = outcomes[job.name]
            if outcome["CompilationJobStatus"] != "COMPLETED":
                reason = outcome.get("FailureReason") or "no FailureReason given"
                raise NcfError(
                    f"Neo job {job.name} {outcome['CompilationJobStatus']}: {reason}",
                    hint=failure_hints(request, self.settings, [j.report for j in jobs]),
                    settings=("compile.framework",),
                )
        outputs = {}
        for job in jobs:
            outputs[job.name] = output_uri(self.aws, outcomes[job.name])
            fetch(self.aws, self.archive_limits, outputs[job.name], folder / job.folder, progress)
        return CompileOutput(
            runtime="dlr",
            models=[{"batch_size": job.batch_size, "path": job.folder} for job in jobs],
            threads=request.threads,
            metrics={
                "preflight_max_abs_diff": max(j.report.max_abs_diff for j in jobs),
                **{f"neo_seconds_b{j.batch_size}": elapsed_seconds(outcomes[j.name]) or 0.0 for j in jobs},
            },
            info={
                "compiler": "sagemaker-neo",
                "framework_version": self.settings.framework_version if request.framework == "pytorch" else None,
                "opset": request.opset if request.framework == "onnx" else None,
                "jobs": [j.name for j in jobs],
                "inputs": [j.input_uri for j in jobs],
                "outputs": [outputs[j.name] for j in jobs],
                "exported_operators": jobs[0].report.operators,
            },
        )
