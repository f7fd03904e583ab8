"""The SageMaker training container's entry point (script mode): same ``fit`` as ``ncfctl train``.

SageMaker runs ``python train_entry.py --epochs 10 --lr 0.002 ...`` (one ``--name value`` pair per
hyper-parameter) with the data channels under ``SM_CHANNEL_<NAME>`` and expects the model in
``SM_MODEL_DIR``, which it uploads as ``<output path>/<job>/output/model.tar.gz``. Channels:

* ``train``: ``train.parquet``, ``val.parquet``, ``val_negatives.npy``, ``user_ids.parquet``,
  ``item_ids.parquet`` (the dataset artifact's files); ``test``: ``test.parquet``,
  ``test_negatives.npy``;
* ``model``: ``model.pt`` with the initial weights and spec (+ ``masks.pt`` for a pruned model
  being fine-tuned, whose pruned weights then stay zero).

With several instances (``SM_HOSTS``) each instance is one ``torch.distributed`` rank (gloo on
CPU, nccl on GPU) rendezvousing at the first host; under ``torchrun`` its variables are used as
they are. Every epoch prints ``epoch=3; Loss=0.3012; HR=0.6712; NDCG=0.3981;`` (RMSE/MAE for the
explicit task), the form the job's metric definitions parse. ``/opt/ml/checkpoints`` holds the
per-epoch checkpoint, so a restarted (e.g. spot) job resumes where it stopped.

Python 3.10 compatible and free of workspace/CLI/boto3 imports: this runs in AWS's PyTorch
training container, which installs only ``requirements.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ncfctl.training.loop import FitSettings
from ncfctl.training.worker import WorkerJob, run_worker

MASTER_PORT = "29500"
CHECKPOINT_DIR = "/opt/ml/checkpoints"
TRAIN_FILES = ("train.parquet", "val.parquet", "val_negatives.npy", "user_ids.parquet", "item_ids.parquet")
TEST_FILES = ("test.parquet", "test_negatives.npy")
DATA_KEYS = ("num_users", "num_items", "explicit")


def job_hyperparameters(job: WorkerJob) -> dict[str, str]:
    """The hyper-parameters that rebuild ``job`` in the container (SageMaker wants strings)."""
    values: dict[str, Any] = {key: getattr(job, key) for key in DATA_KEYS}
    values.update({key: value for key, value in job.settings.items() if value is not None})
    return {key: json.dumps(value) for key, value in values.items()}  # JSON, as the SageMaker SDK sends them


def _flag(text: str) -> bool:
    return text.strip().lower() in {"1", "true", "yes"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ncfctl training job (SageMaker script mode)")
    parser.add_argument("--num_users", type=int, required=True)
    parser.add_argument("--num_items", type=int, required=True)
    parser.add_argument("--explicit", type=_flag, default=False)
    types = {"epochs": int, "batch_size": int, "negatives": int, "patience": int, "top_k": int, "seed": int}
    types |= {"threads": int, "lr": float, "weight_decay": float, "fraction": float}
    types |= {"full_ranking": _flag, "device": str, "task": str, "optimizer": str}
    for field in fields(FitSettings):
        parser.add_argument(f"--{field.name}", type=types[field.name], default=None)
    parser.add_argument("--master_port", default=MASTER_PORT)
    return parser.parse_known_args(argv)[0]  # SageMaker may add its own (sagemaker_*) arguments


def distributed_env(environ: dict[str, str], port: str) -> dict[str, str]:
    """``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` for one rank per SageMaker host (none if torchrun set them)."""
    if "WORLD_SIZE" in environ:
        return {}
    hosts = json.loads(environ.get("SM_HOSTS", "[]"))
    if len(hosts) <= 1:
        return {}
    current = environ["SM_CURRENT_HOST"]
    rank = sorted(hosts).index(current)
    return {
        "MASTER_ADDR": sorted(hosts)[0],
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(len(hosts)),
        "RANK": str(rank),
        "LOCAL_RANK": "0",
    }


def gather_dataset(train_dir: Path, test_dir: Path, into: Path) -> Path:
    """One folder holding both channels' files (links), the layout ``InteractionData.load`` reads."""
    into.mkdir(parents=True, exist_ok=True)
    for folder, names in ((train_dir, TRAIN_FILES), (test_dir, TEST_FILES)):
        for name in names:
            source = folder / name
            if not source.is_file():
                raise SystemExit(f"channel folder {folder} has no {name}")
            (into / name).symlink_to(source.resolve())
    return into


def metric_line(record: dict[str, Any]) -> str:
    """The regex-friendly per-epoch line (``HR=(.*?);`` etc.)."""
    names = {"loss": "Loss", "hr": "HR", "ndcg": "NDCG", "rmse": "RMSE", "mae": "MAE"}
    parts = [f"epoch={record['epoch']};"]
    parts += [f"{label}={record[key]:.6f};" for key, label in names.items() if key in record]
    return " ".join(parts)


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    args = parse_args(argv)
    os.environ.update(distributed_env(environ, args.master_port))
    settings = {key: value for key, value in vars(args).items() if key in FitSettings.__dataclass_fields__}
    settings = {key: value for key, value in settings.items() if value is not None}
    settings.setdefault("threads", None)
    model_channel = Path(environ.get("SM_CHANNEL_MODEL", "/opt/ml/input/data/model"))
    masks = model_channel / "masks.pt"
    checkpoint_dir = Path(environ.get("NCFCTL_CHECKPOINT_DIR", CHECKPOINT_DIR))
    with tempfile.TemporaryDirectory() as scratch:
        dataset = gather_dataset(
            Path(environ.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train")),
            Path(environ.get("SM_CHANNEL_TEST", "/opt/ml/input/data/test")),
            Path(scratch) / "dataset",
        )
        job = WorkerJob(
            dataset_dir=str(dataset),
            num_users=args.num_users,
            num_items=args.num_items,
            explicit=args.explicit,
            init_model=str(model_channel / "model.pt"),
            output_dir=environ.get("SM_MODEL_DIR", "/opt/ml/model"),
            settings=asdict(FitSettings(**settings)),
            masks=str(masks) if masks.is_file() else None,
            checkpoint=str(checkpoint_dir / "checkpoint.pt") if checkpoint_dir.is_dir() else None,
            resume=True,  # a restarted job continues from the synced checkpoint
        )
        result = run_worker(job, on_epoch=lambda record: print(metric_line(record), flush=True))
    if "error" in result:
        print(f"error: {result['error']}", file=sys.stderr, flush=True)
        return 2
    test = result.get("test_metrics") or {}
    if test:
        print(" ".join(f"test_{key}={value};" for key, value in test.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
