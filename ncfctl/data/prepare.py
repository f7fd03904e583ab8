"""The ``ncfctl data`` service: raw log -> clean interactions -> splits + negatives -> dataset artifact.

Everything is computed in memory before the artifact is opened, and the artifact is committed
atomically by the workspace, so a failure at any step (bad line, download error, too few
candidates for negatives) writes nothing that a later command could pick up.

Random streams are derived from the one ``seed`` (``[seed, purpose]``), so the synthetic log,
the random ratio split and each split's negatives are reproducible and independent of each other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ncfctl.artifacts import DatasetInfo, ReuseKey
from ncfctl.config import Config
from ncfctl.data.cleaning import CleanLog, clean_log
from ncfctl.data.dataset import EvalSplit, InteractionData
from ncfctl.data.download import RELEASES, fetch_release
from ncfctl.data.rawlog import RawLog
from ncfctl.data.sources import read_source
from ncfctl.data.splits import UnseenItemSampler, split_interactions
from ncfctl.data.synthetic import generate_synthetic
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.workspace import Artifact, Workspace

DOWNLOADS = "downloads"  # <workdir>/downloads/<release>.zip: verified archives, reused across runs
SPLIT_STREAM, VAL_STREAM, TEST_STREAM = 1, 2, 3


def load_raw_log(config: Config, workspace: Workspace, progress: Progress = NO_PROGRESS) -> RawLog:
    """The configured source's raw log: generated, read from ``data.source``, or downloaded then read."""
    cfg = config.data
    if cfg.dataset == "synthetic":
        if cfg.source:
            raise NcfError(
                f"data.source {cfg.source} is set but data.dataset is synthetic",
                hint="name the format with data.dataset",
                settings=("data.source", "data.dataset"),
            )
        return generate_synthetic(cfg.synthetic, config.seed, progress)
    if cfg.source:
        source = Path(cfg.source).expanduser()
    elif cfg.dataset in RELEASES:
        source = fetch_release(cfg.dataset, workspace.root / DOWNLOADS, progress)
    else:
        raise NcfError(
            f"data.dataset {cfg.dataset} needs data.source (the path of your {cfg.dataset} file)",
            settings=("data.dataset", "data.source"),
        )
    task = progress.task(f"read {source.name}")
    log = read_source(cfg, source)
    task.finish(f"{len(log):,} rows")
    return log


def dataset_stats(clean: CleanLog, data: InteractionData) -> dict[str, float | int]:
    """The manifest metrics: sizes, density, per-split rows and what each cleaning rule removed."""
    interactions = len(clean.rows)
    return {
        "users": data.num_users,
        "items": data.num_items,
        "interactions": interactions,
        "density": interactions / (data.num_users * data.num_items),
        "train": len(data.train),
        "val": len(data.val.rows),
        "test": len(data.test.rows),
        "eval_negatives": int(data.test.negatives.shape[1]),
        **clean.counts,
    }


class _Stages:
    """Times each stage and names the current one on a progress row."""

    NAMES = ("read", "clean", "split", "negatives", "write")

    def __init__(self, progress: Progress):
        self.seconds: dict[str, float] = {}
        self.task = progress.task("prepare dataset", total=len(self.NAMES))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.task.update(status=name)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 3)
        self.task.advance()


def dataset_reuse_key(config: Config) -> ReuseKey:
    """A dataset is made from the ``data`` section and the seed, nothing else."""
    return ReuseKey("dataset", {"seed": config.seed, "data": config.data.model_dump(mode="json")})


def prepare_dataset(config: Config, workspace: Workspace, progress: Progress = NO_PROGRESS) -> Artifact:
    """Build a dataset artifact from ``config.data`` (see :mod:`ncfctl.data.dataset` for its files).

    Manifest metrics: the statistics of :func:`dataset_stats`, ``prepare_seconds`` and
    ``stage_seconds`` (read, clean, split, negatives, write).
    """
    cfg = config.data
    stages = _Stages(progress)
    with stages.stage("read"):
        log = load_raw_log(config, workspace, progress)
    with stages.stage("clean"):
        clean = clean_log(log, cfg.min_rating, cfg.explicit)
        origin = log.origin
        del log  # the raw frame: 20M rows are ~0.5 GiB that the remaining stages do not need
    with stages.stage("split"):
        split_rng = np.random.default_rng([config.seed, SPLIT_STREAM])
        split = split_interactions(clean.rows, cfg.split, cfg.test_ratio, cfg.ratio_order, split_rng)
    with stages.stage("negatives"):
        sampler = UnseenItemSampler(clean.known_keys, clean.num_users, clean.num_items, names=clean.user_ids)
        negatives = {
            name: sampler.sample(
                rows.users, cfg.eval_negatives, np.random.default_rng([config.seed, stream]), progress, name
            )
            for name, rows, stream in (("val", split.val, VAL_STREAM), ("test", split.test, TEST_STREAM))
        }
    data = InteractionData(
        num_users=clean.num_users,
        num_items=clean.num_items,
        train=split.train,
        val=EvalSplit(split.val, negatives["val"]),
        test=EvalSplit(split.test, negatives["test"]),
        user_ids=clean.user_ids,
        item_ids=clean.item_ids,
        explicit=cfg.explicit,
    )
    info = DatasetInfo(
        dataset=cfg.dataset,
        num_users=data.num_users,
        num_items=data.num_items,
        explicit=cfg.explicit,
        split=cfg.split,
        source=origin,
        min_rating=cfg.min_rating,
        seed=config.seed,
    )
    if cfg.split == "ratio":
        info = info.updated(test_ratio=cfg.test_ratio, ratio_order=cfg.ratio_order)
    with workspace.create("dataset", config=dataset_reuse_key(config).config, info=info) as writer:
        with stages.stage("write"):
            data.save(writer.path)
        writer.manifest.metrics.update(dataset_stats(clean, data))
        writer.manifest.metrics["prepare_seconds"] = round(sum(stages.seconds.values()), 3)
        writer.manifest.metrics["stage_seconds"] = stages.seconds
    return writer.artifact
