"""What the SageMaker Pipeline's containers run after training: prune + fine-tune, then evaluate + package.

Both run inside AWS's PyTorch container from the same ``sourcedir.tar.gz`` as ``train --backend
sagemaker`` and stay free of workspace, plotting and boto3 imports.

* :func:`prune_finetune` (a training step, script mode): the ``model`` channel holds the Train
  step's ``model.tar.gz``; it is unpacked safely, pruned once (``--prune_*`` hyper-parameters,
  the same :func:`~ncfctl.pruning.once.prune_once` as ``ncfctl prune``), and fine-tuned by the
  training entry point itself with the masks locked. ``SM_MODEL_DIR`` gets ``model.pt``,
  ``metrics.json``, ``masks.pt`` (magnitude pruning) and ``prune.json``.
* :func:`evaluate_and_package` (a processing step): test HR/NDCG@K of the fine-tuned model beside
  the popularity baseline into ``evaluation/evaluation.json`` (the pipeline's PropertyFile and the
  registry's ModelMetrics), and the servable bundle (ONNX Runtime, parity-checked against PyTorch,
  plus ``model.pt`` for a later Neo compile) as ``bundle/model.tar.gz``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

PRUNE_FILE = "prune.json"
EVALUATION_FILE = "evaluation.json"
BUNDLE_ARCHIVE = "model.tar.gz"
PROCESSING_DIR = "/opt/ml/processing"
# processing job layout under PROCESSING_DIR: inputs, then outputs
CODE_INPUT, MODEL_INPUT, TRAIN_INPUT, TEST_INPUT = "input/code", "input/model", "input/train", "input/test"
EVALUATION_OUTPUT, BUNDLE_OUTPUT = "evaluation", "bundle"


def _flag(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes"}


def prune_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ncfctl pipeline prune + fine-tune (SageMaker script mode)")
    parser.add_argument("--prune_rate", type=float, required=True)
    parser.add_argument("--prune_method", default="magnitude")
    parser.add_argument("--prune_scope", default="global")
    parser.add_argument("--prune_include_embeddings", type=_flag, default=True)
    parser.add_argument("--prune_norm", default="l1")
    parser.add_argument("--prune_allocation", default="mlp-first")
    return parser.parse_known_args(argv)[0]  # the fine-tuning arguments are the training entry's


def unpack_model(channel: Path, dest: Path) -> Path:
    """The folder holding ``model.pt``: the channel itself, or its ``model.tar.gz`` extracted safely.

    The job has no ncfctl config file (its source holds Python files only), so the archive bounds are
    configs/default.yaml's ``archive`` values, stated here.
    """
    from ncfctl import safetar
    from ncfctl.config import ArchiveConfig

    if (channel / "model.pt").is_file():
        return channel
    archive = channel / BUNDLE_ARCHIVE
    if not archive.is_file():
        raise SystemExit(f"channel folder {channel} has neither model.pt nor {BUNDLE_ARCHIVE}")
    safetar.safe_extract(archive, dest, ArchiveConfig(max_bytes=4 * 2**30, max_members=10_000))
    if not (dest / "model.pt").is_file():
        raise SystemExit(f"{archive} holds no model.pt")
    return dest


def prune_finetune(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    from ncfctl.config import PruneConfig
    from ncfctl.masks import MASKS_FILE, load_masks, save_masks, sparsity
    from ncfctl.models import count_parameters, load_model, save_model
    from ncfctl.pruning.once import prune_once
    from ncfctl.training import entry

    environ = dict(os.environ if environ is None else environ)
    args = prune_args(argv)
    settings = PruneConfig(
        method=args.prune_method,
        rate=args.prune_rate,
        scope=args.prune_scope,
        include_embeddings=args.prune_include_embeddings,
        norm=args.prune_norm,
        allocation=args.prune_allocation,
        schedule="oneshot",
        steps=1,
    )
    output = Path(environ.get("SM_MODEL_DIR", "/opt/ml/model"))
    with tempfile.TemporaryDirectory() as scratch:
        trained = unpack_model(Path(environ.get("SM_CHANNEL_MODEL", "/opt/ml/input/data/model")), Path(scratch) / "in")
        model = load_model(trained / "model.pt")
        masks = load_masks(trained / MASKS_FILE, model) if (trained / MASKS_FILE).is_file() else None
        pruned, masks = prune_once(model, masks, settings.rate, settings)
        staged = Path(scratch) / "pruned"
        staged.mkdir()
        save_model(staged / "model.pt", pruned)
        if masks:
            save_masks(staged / MASKS_FILE, masks)
        code = entry.main(argv, {**environ, "SM_CHANNEL_MODEL": str(staged)})
        if code != 0:
            return code
        if masks:
            shutil.copy(staged / MASKS_FILE, output / MASKS_FILE)
    report = {
        **settings.model_dump(include={"method", "rate", "scope", "include_embeddings", "norm", "allocation"}),
        "parameters_before": count_parameters(model),
        "parameters_after": count_parameters(pruned),
        "sparsity": sparsity(masks) if masks else 0.0,
    }
    (output / PRUNE_FILE).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"pruned: {json.dumps(report)}", flush=True)
    return 0


def _settings(environ: dict[str, str]) -> dict[str, Any]:
    return {
        "top_k": int(environ.get("NCF_TOP_K", "10")),
        "target": environ.get("NCF_TARGET", "ml_c5"),
        "threads": int(environ.get("NCF_THREADS", "1")),
        "opset": int(environ.get("NCF_OPSET", "12")),
        "tolerance": float(environ.get("NCF_TOLERANCE", "1e-5")),
        "seed": int(environ.get("NCF_SEED", "0")),
        "source_model": environ.get("NCF_SOURCE_MODEL", "sagemaker-pipeline"),
    }


def evaluate_and_package(environ: dict[str, str] | None = None) -> int:
    """Evaluate the fine-tuned model and write the report and the servable bundle (see the module doc)."""
    import torch

    from ncfctl import fileio, safetar
    from ncfctl.compile.base import CompileRequest
    from ncfctl.compile.onnxruntime_local import OnnxRuntimeCompiler
    from ncfctl.data.dataset import InteractionData
    from ncfctl.evaluation import evaluate, popularity_score_fn, torch_score_fn
    from ncfctl.masks import MASKS_FILE
    from ncfctl.models import load_model
    from ncfctl.serving.bundle import write_serving_bundle
    from ncfctl.targets import resolve_target
    from ncfctl.training.entry import gather_dataset
    from ncfctl.training.worker import METRICS_FILE

    environ = dict(os.environ if environ is None else environ)
    root = Path(environ.get("NCF_PROCESSING_DIR", PROCESSING_DIR))
    settings = _settings(environ)
    torch.set_num_threads(settings["threads"])
    with tempfile.TemporaryDirectory() as scratch:
        tuned = unpack_model(root / MODEL_INPUT, Path(scratch) / "model")
        model = load_model(tuned / "model.pt").eval()
        spec = model.spec
        if spec.task != "implicit":
            raise SystemExit(f"the pipeline gates on HR@K, which needs an implicit-task model (got {spec.task})")
        dataset = gather_dataset(root / TRAIN_INPUT, root / TEST_INPUT, Path(scratch) / "dataset")
        data = InteractionData.load(dataset, spec.num_users, spec.num_items, explicit=False)
        k = settings["top_k"]
        with torch.inference_mode():
            metrics = evaluate(torch_score_fn(model), data, "test", k=k)
        baseline = {"name": "popularity", **evaluate(popularity_score_fn(data), data, "test", k=k)}

        bundle = Path(scratch) / "bundle"
        bundle.mkdir()
        request = CompileRequest(
            name="pipeline",
            model=model,
            model_id=settings["source_model"],
            target=resolve_target(settings["target"]),
            framework="onnx",
            batch_size=spec.num_items,
            threads=settings["threads"],
            opset=settings["opset"],
            tolerance=settings["tolerance"],
            seed=settings["seed"],
        )
        compiled = OnnxRuntimeCompiler().compile(request, bundle)
        write_serving_bundle(
            bundle,
            model,
            data,
            runtime=compiled.runtime,
            models=compiled.models,
            source_model=settings["source_model"],
            target=settings["target"],
            threads=compiled.threads,
        )
        for name in ("model.pt", MASKS_FILE):  # the weights, for `ncfctl neo compile --model-package`
            if (tuned / name).is_file():
                shutil.copy(tuned / name, bundle / name)
        out = root / BUNDLE_OUTPUT
        out.mkdir(parents=True, exist_ok=True)
        files = [(p, p.relative_to(bundle).as_posix()) for p in sorted(bundle.rglob("*")) if p.is_file()]
        safetar.pack(out / BUNDLE_ARCHIVE, files)
        extra = {name: _read_json(tuned / name) for name in (PRUNE_FILE, METRICS_FILE)}

    report = {
        "metrics": {**metrics, "k": k},
        "baseline": baseline,
        "parity_max_abs_diff": compiled.metrics["max_abs_diff"],
        "runtime": compiled.runtime,
        "target": settings["target"],
        "model": spec.model_dump(mode="json"),
        "pruning": extra[PRUNE_FILE],
        "finetune_history": (extra[METRICS_FILE] or {}).get("history"),
    }
    fileio.write_json(root / EVALUATION_OUTPUT / EVALUATION_FILE, report)
    print(f"evaluation: HR@{k}={metrics['hr']:.6f}; NDCG@{k}={metrics['ndcg']:.6f};", flush=True)
    return 0


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


if __name__ == "__main__":
    sys.exit(evaluate_and_package())
