"""``ncfctl neo compile`` / ``neo status`` as plain functions: model artifact in, serving bundle out.

The compiled artifact (kind ``compiled``, under ``neo/``) *is* the serving bundle the container
mounts at ``/opt/ml/model``: the compiler writes the runtime model files and
:func:`ncfctl.serving.bundle.write_serving_bundle` writes ``serving.json`` and the fast-path,
seen-items and id files around them (docs/architecture.md, "Serving bundle").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ncfctl.artifacts import CompiledInfo, ReuseKey
from ncfctl.aws.clients import has_credentials, require_credentials
from ncfctl.compile import sagemaker_neo
from ncfctl.compile.base import Compiler, CompileRequest
from ncfctl.compile.onnxruntime_local import OnnxRuntimeCompiler
from ncfctl.compile.registered import BUNDLE_DIR, BundleData
from ncfctl.compile.sagemaker_neo import NeoCompiler
from ncfctl.config import Config
from ncfctl.data.dataset import load_dataset
from ncfctl.errors import NcfError
from ncfctl.models import MODEL_FILE, load_model
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.serving.bundle import write_serving_bundle
from ncfctl.serving.retrieval import choose_retrieval
from ncfctl.targets import default_threads, resolve_target
from ncfctl.workspace import Artifact, Workspace

MODEL_HINT = "train a model first, or name one with `model_ref`"
KIND = "compiled"


@dataclass(frozen=True)
class BackendChoice:
    name: str  # local | sagemaker
    reason: str  # why, shown to the user


def choose_backend(config: Config) -> BackendChoice:
    """``compile.backend``; ``auto`` is sagemaker when AWS credentials and ``aws.bucket`` are configured."""
    requested = config.compile.backend
    if requested != "auto":
        return BackendChoice(requested, f"compile.backend {requested}")
    missing = [
        what
        for what, ok in (("AWS credentials", has_credentials(config.aws)), ("aws.bucket", bool(config.aws.bucket)))
        if not ok
    ]
    if not missing:
        return BackendChoice("sagemaker", "auto: AWS credentials and aws.bucket are configured")
    return BackendChoice("local", f"auto: no {' and no '.join(missing)}, so ONNX Runtime on this machine")


def make_compiler(backend: str, config: Config) -> Compiler:
    if backend == "local":
        return OnnxRuntimeCompiler()
    return NeoCompiler(config.aws, config.compile, config.archive)


def compile_reuse_key(config: Config) -> ReuseKey:
    """A bundle is made from the ``compile`` section and the retrieval part of ``serving``."""
    sections = {
        "compile": config.compile.model_dump(),
        "retrieval": config.serving.model_dump(include={"retrieval", "ann"}),
    }
    return ReuseKey(KIND, sections)


def compile_model(
    config: Config, workspace: Workspace, model_ref: str | None = None, progress: Progress = NO_PROGRESS
) -> Artifact:
    """Compile a model artifact (latest by default) for ``compile.target`` into a ``compiled`` artifact."""
    settings = config.compile
    target = resolve_target(settings.target, settings.target_platform)
    backend = choose_backend(config)
    compiler = make_compiler(backend.name, config)
    source = workspace.resolve(model_ref, "model", MODEL_HINT, settings=("model_ref",))
    model = load_model(source.file(MODEL_FILE))
    request = CompileRequest(
        name="",
        model=model,
        model_id=source.id,
        target=target,
        framework=settings.framework,
        batch_size=settings.batch_size or model.spec.num_items,
        threads=settings.threads or default_threads(target, config.aws.instance_type),
        opset=settings.opset,
        tolerance=settings.parity_tolerance,
        seed=config.seed,
    )
    compiler.check(request)
    retrieval = choose_retrieval(config.serving, model.spec)
    dataset_id = source.manifest.info.dataset
    if dataset_id:
        data = load_dataset(workspace.get(dataset_id, "dataset"))
    elif (source.path / BUNDLE_DIR).is_dir():  # a registered version: its bundle has the ids and seen items
        data = BundleData.read(source.path / BUNDLE_DIR)
    else:
        raise NcfError(f"model {source.id} has no info.dataset in its manifest: cannot find its users and items")
    info = CompiledInfo(
        source_model=source.id,
        stage=source.manifest.info.stage,
        model_type=model.spec.model_type,
        task=model.spec.task,
        dataset=dataset_id,
        target=target.name,
        target_description=target.description,
        backend=backend.name,
        backend_reason=backend.reason,
        framework=settings.framework,
        retrieval="ann" if retrieval.ann else "exact",
        retrieval_reason=retrieval.reason,
    )
    with workspace.create(KIND, parent=source.id, config=compile_reuse_key(config).config, info=info) as writer:
        output = compiler.compile(replace(request, name=writer.id), writer.path, progress)
        task = progress.task("serving bundle", status=info.retrieval)
        started = time.perf_counter()
        write_serving_bundle(
            writer.path,
            model,
            data,
            runtime=output.runtime,
            models=output.models,
            source_model=source.id,
            target=target.name,
            threads=output.threads,
            ann=config.serving.ann if retrieval.ann else None,
            seed=config.seed,
        )
        task.finish()
        writer.manifest.metrics.update(output.metrics, bundle_seconds=round(time.perf_counter() - started, 3))
        writer.manifest.info = info.updated(
            **output.info,
            runtime=output.runtime,
            batch_sizes=[m["batch_size"] for m in output.models],
            threads=output.threads,
            servable=output.runtime != "dlr" or target.servable,  # by ncfctl's linux/amd64 CPU image
        )
    return writer.artifact


def _when(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else value


def _local_row(artifact: Artifact) -> dict[str, Any]:
    info = artifact.manifest.info
    return {
        "name": artifact.id,
        "where": f"workspace ({info.backend})",
        "status": "COMPLETED",
        "target": info.target,
        "created": _when(artifact.manifest.created),
        "model": artifact.manifest.parent,
        "runtime": info.runtime,
    }


def _cloud_row(summary: dict[str, Any]) -> dict[str, Any]:
    platform = [summary.get(f"CompilationTargetPlatform{part}") for part in ("Os", "Arch", "Accelerator")]
    target = summary.get("CompilationTargetDevice") or "_".join(str(p).lower() for p in platform if p)
    return {
        "name": summary["CompilationJobName"],
        "where": "sagemaker",
        "status": summary["CompilationJobStatus"],
        "target": target,
        "created": _when(summary.get("CreationTime")),
        "seconds": sagemaker_neo.elapsed_seconds(summary),
    }


def _job_detail(description: dict[str, Any]) -> dict[str, Any]:
    output = description.get("OutputConfig", {})
    platform = "_".join(str(v).lower() for v in output.get("TargetPlatform", {}).values())
    return {
        "name": description["CompilationJobName"],
        "where": "sagemaker",
        "status": description["CompilationJobStatus"],
        "target": output.get("TargetDevice") or platform,
        "framework": description.get("InputConfig", {}).get("Framework"),
        "created": _when(description.get("CreationTime")),
        "started": _when(description.get("CompilationStartTime")),
        "ended": _when(description.get("CompilationEndTime")),
        "seconds": sagemaker_neo.elapsed_seconds(description),
        "input": description.get("InputConfig", {}).get("S3Uri"),
        "output": description.get("ModelArtifacts", {}).get("S3ModelArtifacts") or output.get("S3OutputLocation"),
        "failure_reason": description.get("FailureReason") or None,
    }


def neo_status(
    config: Config,
    workspace: Workspace,
    job: str | None = None,
    *,
    wait: bool = False,
    progress: Progress = NO_PROGRESS,
) -> dict[str, Any]:
    """Without ``job``: ``{"jobs": [...]}``, compiled artifacts plus recent SageMaker jobs when AWS is
    configured (``compile.backend`` sagemaker, or auto with credentials and a bucket).

    With ``job`` (a compiled artifact id or a Neo job name): that one's details; ``wait`` polls a
    SageMaker job until it is COMPLETED, FAILED or STOPPED.
    """
    if job is None:
        rows = [_local_row(a) for a in reversed(workspace.list(KIND))]
        result: dict[str, Any] = {"jobs": rows, "sagemaker": choose_backend(config).name == "sagemaker"}
        if result["sagemaker"]:
            try:
                rows += [_cloud_row(s) for s in sagemaker_neo.list_jobs(config.aws, config.compile.job_prefix)]
            except NcfError as exc:  # the workspace half is still worth showing
                result["sagemaker_error"] = str(exc)
        return result
    local = [a for a in workspace.list(KIND) if a.id == job]
    if local:
        artifact = local[0]
        return {
            **_local_row(artifact),
            "path": str(artifact.path),
            "info": artifact.manifest.info.recorded(),
            "metrics": artifact.manifest.metrics,
        }
    require_credentials(config.aws, f"neo status {job}")
    if wait:
        sagemaker_neo.wait(
            config.aws,
            [job],
            poll_seconds=config.aws.poll_seconds,
            timeout_s=config.compile.max_runtime_seconds + sagemaker_neo.WAIT_MARGIN_S,
            progress=progress,
        )
    return _job_detail(sagemaker_neo.describe(config.aws, job))
