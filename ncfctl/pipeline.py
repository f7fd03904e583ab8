"""``ncfctl pipeline``: the whole flow in one call, reusing each stage's service and skipping fresh work.

data -> train (+ an ALS baseline) -> prune -> finetune -> neo compile -> build-image -> deploy -> invoke
-> bench -> stop

A step is *up to date* when the workspace already holds an artifact of its kind whose manifest
``parent`` is the artifact the previous step produced and whose recorded config sections equal the
ones this run would use (e.g. a pruned model with the same ``prune`` settings made from this very
trained model). Which sections those are is each service's own declaration, its
:class:`~ncfctl.artifacts.ReuseKey`, the same object it builds its manifest's ``config`` from.
Then the step is skipped and its artifact reused, so a second run after a crash or a tweak of a
late stage (say ``compile.opset``) redoes only what changed; ``force`` redoes all.
Because each step's parent is the previous artifact, re-running an early step makes every later
one stale automatically. A deployment is reused only if it still answers ``/ping``; the smoke
``invoke`` always runs (it is the check that the endpoint works), and the benchmark is redone
whenever the set of variants it would compare differs from the last one's.

The ``baseline`` step fits ``pipeline.baseline`` (ALS by default: seconds) on the same dataset, so
the benchmark answers whether NeuMF pays for itself on this data without another command; it is
skipped, with the reason, when the ``implicit`` extra is not installed or the task is explicit.

The pipeline's own section (``pipeline.*``) sets the epochs, fine-tuning fraction and pruning rate
of this flow, chosen so the default synthetic run takes a few minutes on a 2-core machine; the
stage sections keep their defaults for the individual commands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ncf_serving.bundle import read_arrays
from ncf_serving.layout import IDS_DIR

from ncfctl.artifacts import ReuseKey
from ncfctl.config import Config
from ncfctl.errors import MissingExtraError
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.workspace import Artifact, Workspace, info_matches

STEPS = (
    "data",
    "train",
    "baseline",
    "prune",
    "finetune",
    "compile",
    "build-image",
    "deploy",
    "invoke",
    "bench",
    "stop",
)


@dataclass
class StepOutcome:
    step: str
    status: str  # ran | up to date | skipped
    artifact: str | None
    seconds: float
    detail: str = ""


@dataclass
class PipelineResult:
    steps: list[StepOutcome] = field(default_factory=list)
    benchmark: Artifact | None = None
    seconds: float = 0.0


def pipeline_config(config: Config) -> Config:
    """The stage settings this flow (or the SageMaker Pipeline's definition) runs with: ``pipeline.*``
    over the stage sections; the local flow runs every stage on this machine."""
    p = config.pipeline
    updates: dict[str, dict[str, Any]] = {
        "train": {"epochs": p.train_epochs or config.train.epochs, "backend": "local"},
        "prune": {"rate": p.prune_rate},
        "finetune": {
            "epochs": p.finetune_epochs or config.finetune.epochs,
            "fraction": p.finetune_fraction or config.finetune.fraction,
            "backend": "local",
        },
        "deploy": {"backend": "local"},
    }
    return config.model_copy(
        update={name: getattr(config, name).model_copy(update=values) for name, values in updates.items()}
    )


def _plain(value: Any) -> Any:
    """JSON round trip, so a recorded manifest value and a live pydantic dump compare equal."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def reusable(artifact: Artifact, key: ReuseKey) -> bool:
    """Whether ``artifact`` recorded the sections and info that ``key`` asks for."""
    manifest = artifact.manifest
    return info_matches(manifest.info, key.where) and all(
        _plain(manifest.config.get(name)) == _plain(value) for name, value in key.sections().items()
    )


def find_fresh(workspace: Workspace, parent: str | None, key: ReuseKey) -> Artifact | None:
    """The newest artifact made from ``parent`` that ``key`` says can be reused."""
    for artifact in reversed(workspace.list(key.kind)):
        if artifact.manifest.parent == parent and reusable(artifact, key):
            return artifact
    return None


def _smoke_requests(compiled: Artifact, top_k: int) -> list[dict[str, Any]]:
    """One top-K and one pair request in the data's raw ids (the first user and item of the bundle)."""
    ids = read_arrays(compiled.verify(IDS_DIR), ("user_ids", "item_ids"))
    user, item = str(ids["user_ids"][0]), str(ids["item_ids"][0])
    return [{"user_id": user, "top_k": top_k}, {"user_id": user, "item_id": item}]


class _Run:
    """Bookkeeping of one pipeline run: timing, outcomes, the overall progress task."""

    def __init__(self, progress: Progress, on_step: Callable[[StepOutcome], None] | None):
        self.on_step = on_step
        self.result = PipelineResult()
        self.task = progress.task("pipeline", total=len(STEPS))
        self.upstream_ran = False

    def record(self, step: str, status: str, artifact: str | None, started: float, detail: str = "") -> None:
        outcome = StepOutcome(step, status, artifact, round(time.perf_counter() - started, 2), detail)
        self.result.steps.append(outcome)
        if status == "ran" and step not in ("invoke", "stop"):
            self.upstream_ran = True
        self.task.advance(status=f"{step}: {status}")
        if self.on_step is not None:
            self.on_step(outcome)

    def begin(self, step: str) -> float:
        self.task.update(status=f"{step}...")
        return time.perf_counter()

    def artifact_step(
        self, step: str, fresh: Callable[[], Artifact | None], make: Callable[[], Artifact], force: bool
    ) -> Artifact:
        started = self.begin(step)
        existing = None if force else fresh()
        if existing is not None:
            self.record(step, "up to date", existing.id, started)
            return existing
        artifact = make()
        self.record(step, "ran", artifact.id, started)
        return artifact


def baseline_config(config: Config) -> Config:
    """``config`` with the model set to ``pipeline.baseline`` (ALS or BPR, with its own section), fitted
    in one CPU process whatever ``train.nproc`` / ``train.device`` the NeuMF uses (implicit runs there)."""
    return config.model_copy(
        update={
            "model": config.model.model_copy(update={"type": config.pipeline.baseline}),
            "train": config.train.model_copy(update={"nproc": 1, "device": "cpu"}),
        }
    )


def _baseline_step(
    run: _Run, cfg: Config, workspace: Workspace, dataset: Artifact, force: bool, progress: Progress
) -> None:
    """Fit ``pipeline.baseline`` on the dataset (or reuse a fresh fit); skipped, saying why, where it cannot run."""
    from ncfctl.training.service import train_model, train_reuse_key

    if cfg.pipeline.baseline is None or cfg.train.task == "explicit":
        why = "pipeline.baseline is null" if cfg.pipeline.baseline is None else "ALS and BPR rank implicit feedback"
        run.record("baseline", "skipped", None, run.begin("baseline"), why)
        return
    baseline, started = baseline_config(cfg), time.perf_counter()
    try:
        run.artifact_step(
            "baseline",
            lambda: find_fresh(workspace, dataset.id, train_reuse_key(baseline)),
            lambda: train_model(baseline, workspace, dataset_ref=dataset.id, progress=progress),
            force,
        )
    except MissingExtraError as exc:  # implicit is an optional extra; the flow itself does not need it
        run.record("baseline", "skipped", None, started, str(exc))


def run_pipeline(
    config: Config,
    workspace: Workspace,
    *,
    force: bool = False,
    progress: Progress = NO_PROGRESS,
    on_step: Callable[[StepOutcome], None] | None = None,
) -> PipelineResult:
    """Run every stage (skipping fresh ones unless ``force``); stops the deployment unless keep_serving."""
    from ncfctl.bench.service import bench_reuse_key, run_benchmark
    from ncfctl.bench.variants import select_variants
    from ncfctl.compile.service import compile_model, compile_reuse_key
    from ncfctl.data.prepare import dataset_reuse_key, prepare_dataset
    from ncfctl.pruning.service import finetune_model, finetune_reuse_key, prune_model, prune_reuse_key
    from ncfctl.serving import deploy as deploy_service
    from ncfctl.serving.build_image import build_image, image_reuse_key
    from ncfctl.serving.deploy_local import local_reuse_key
    from ncfctl.serving.invoke import invoke
    from ncfctl.training.service import train_model, train_reuse_key

    cfg = pipeline_config(config)
    run = _Run(progress, on_step)
    t0 = time.perf_counter()

    dataset = run.artifact_step(
        "data",
        lambda: find_fresh(workspace, None, dataset_reuse_key(cfg)),
        lambda: prepare_dataset(cfg, workspace, progress),
        force,
    )
    trained = run.artifact_step(
        "train",
        lambda: find_fresh(workspace, dataset.id, train_reuse_key(cfg)),
        lambda: train_model(cfg, workspace, dataset_ref=dataset.id, progress=progress),
        force,
    )
    _baseline_step(run, cfg, workspace, dataset, force, progress)
    pruned = run.artifact_step(
        "prune",
        lambda: find_fresh(workspace, trained.id, prune_reuse_key(cfg)),
        lambda: prune_model(cfg, workspace, trained.id, finetune=False, progress=progress).pruned,
        force,
    )
    finetuned = run.artifact_step(
        "finetune",
        lambda: find_fresh(workspace, pruned.id, finetune_reuse_key(cfg)),
        lambda: finetune_model(cfg, workspace, pruned.id, progress=progress),
        force,
    )
    compiled = run.artifact_step(
        "compile",
        lambda: find_fresh(workspace, finetuned.id, compile_reuse_key(cfg)),
        lambda: compile_model(cfg, workspace, finetuned.id, progress=progress),
        force,
    )
    image = run.artifact_step(
        "build-image",
        lambda: find_fresh(workspace, compiled.id, image_reuse_key(cfg)),
        lambda: build_image(cfg, workspace, compiled.id, progress=progress).artifact,
        force,
    )

    def live_deployment() -> Artifact | None:
        found = find_fresh(workspace, image.id, local_reuse_key(cfg))
        if found is None:
            return None
        state = deploy_service.status(cfg, workspace, found.id)["live"].get("state")
        return found if state == "running" else None

    deployment = run.artifact_step(
        "deploy", live_deployment, lambda: deploy_service.deploy(cfg, workspace, image.id, progress), force
    )
    try:
        started = run.begin("invoke")
        _, replies = invoke(cfg, workspace, _smoke_requests(compiled, cfg.pipeline.smoke_top_k), deployment.id)
        returned = len(replies[0].response.get("items", []))
        detail = f"top-{cfg.pipeline.smoke_top_k}: {returned} items in {replies[0].latency_ms:.1f} ms"
        run.record("invoke", "ran", deployment.id, started, detail)

        started = run.begin("bench")
        previous = workspace.latest("benchmark")
        variants = [v.id for v in select_variants(workspace, cfg.bench.compare).variants]
        if (
            not force
            and not run.upstream_ran
            and previous is not None
            and previous.manifest.info.variants == variants
            and reusable(previous, bench_reuse_key(cfg))
        ):
            run.result.benchmark = previous
            run.record("bench", "up to date", previous.id, started)
        else:
            run.result.benchmark = run_benchmark(cfg, workspace, cfg.bench.compare, progress=progress)
            run.record("bench", "ran", run.result.benchmark.id, started)
    finally:
        started = run.begin("stop")
        if cfg.pipeline.keep_serving:
            run.record("stop", "skipped", deployment.id, started, "--keep-serving: still running")
        elif deployment.manifest.info.backend == "local":
            deploy_service.stop(cfg, workspace, deployment.id)
            run.record("stop", "ran", deployment.id, started, "local server stopped")
        else:
            deploy_service.delete(cfg, workspace, deployment.id)
            run.record("stop", "ran", deployment.id, started, "SageMaker endpoint deleted")
    run.result.seconds = round(time.perf_counter() - t0, 1)
    return run.result
