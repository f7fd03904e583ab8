"""``ncfctl recommend --all-users``: top-K items for every user, as Parquet (offline recommendations).

The most common production pattern for a recommender: precompute each user's list nightly and
serve it from a key-value store. Two backends write the same ``recommendations.parquet`` (columns
``user_id``, ``rank`` (1-based), ``item_id``, ``score``; ids as strings, as in the data) into a
``recommendations`` artifact:

* ``local``: a serving bundle (default: the latest compiled artifact) loaded with the server's own
  ``Predictor``, so the lists are exactly what ``POST /invocations`` would answer.
* ``sagemaker``: a SageMaker Batch Transform job over a registered model package
  (:mod:`ncfctl.serving.batch_transform`): one ``{"user_id", "top_k", "exclude_seen"}`` JSON line per
  user in, one answer line per user out (the container's ``application/jsonlines``).

Rows are written in row groups of :data:`USERS_PER_GROUP` users, so memory stays flat for any
number of users; the file is committed atomically with its artifact.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ncfctl.artifacts import RecommendationsInfo
from ncfctl.config import Config
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress
from ncfctl.serving.build_image import COMPILED_HINT
from ncfctl.workspace import Artifact, Workspace

FILE = "recommendations.parquet"
KIND = "recommendations"
USERS_PER_GROUP = 4096
SCHEMA = pa.schema([("user_id", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("score", pa.float32())])


def write_parquet(path: Path, answers: Iterable[dict[str, Any]]) -> int:
    """Write top-K answers (``{"user_id", "items": [{"item_id", "score"}]}``) as rows; returns the row count."""
    rows = 0
    with pq.ParquetWriter(path, SCHEMA) as writer:
        for group in _chunks(answers, USERS_PER_GROUP):
            columns: dict[str, list] = {"user_id": [], "rank": [], "item_id": [], "score": []}
            for answer in group:
                for rank, entry in enumerate(answer["items"], start=1):
                    columns["user_id"].append(str(answer["user_id"]))
                    columns["rank"].append(rank)
                    columns["item_id"].append(str(entry["item_id"]))
                    columns["score"].append(entry["score"])
            writer.write_table(pa.table(columns, schema=SCHEMA))
            rows += len(columns["rank"])
    return rows


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def local_answers(bundle: Path, top_k: int, exclude_seen: bool, threads: int) -> tuple[int, Iterator[dict[str, Any]]]:
    """(users, answers) from the bundle, in user order, exactly as the server computes them."""
    import numpy as np
    from ncf_serving.bundle import BundleError
    from ncf_serving.predictor import Predictor

    try:
        predictor = Predictor.load(bundle, threads)
    except BundleError as exc:
        raise NcfError(str(exc)) from None
    num_users = predictor.spec.num_users
    users = predictor.users.to_public(np.arange(num_users))

    def answers() -> Iterator[dict[str, Any]]:
        for index, user in enumerate(users):
            items, scores = predictor.top_k(index, top_k, exclude_seen)
            ranked = zip(predictor.items.to_public(items), scores.tolist(), strict=True)
            yield {"user_id": user, "items": [{"item_id": i, "score": s} for i, s in ranked]}

    return num_users, answers()


def recommend_all_users(
    config: Config,
    workspace: Workspace,
    *,
    top_k: int,
    exclude_seen: bool = True,
    compiled: str | None = None,
    model_package: str | None = None,
    backend: str = "local",
    progress: Progress = NO_PROGRESS,
) -> Artifact:
    """Top-``top_k`` for every user into a ``recommendations`` artifact (see the module doc)."""
    if top_k < 1 or top_k > config.serving.max_top_k:
        raise NcfError(
            f"`top_k` {top_k}: must be between 1 and serving.max_top_k ({config.serving.max_top_k})",
            settings=("top_k",),
        )
    if backend == "sagemaker":
        from ncfctl.serving import batch_transform

        return batch_transform.recommend(config, workspace, top_k, exclude_seen, model_package, progress)
    if model_package:
        raise NcfError(
            "`model_package` runs on SageMaker: use the sagemaker backend (or pass `compiled` for local)",
            settings=("model_package", "compiled"),
        )
    source = workspace.resolve(compiled, "compiled", COMPILED_HINT, settings=("compiled",))
    users, answers = local_answers(source.path, top_k, exclude_seen, config.bench.threads)
    task = progress.task("recommend", total=users, status=source.id)

    def counted() -> Iterator[dict[str, Any]]:
        for answer in answers:
            yield answer
            task.advance()

    info = RecommendationsInfo(backend="local", source=source.id, top_k=top_k, exclude_seen=exclude_seen, users=users)
    with workspace.create(KIND, parent=source.id, info=info) as writer:
        writer.manifest.metrics["rows"] = write_parquet(writer.path / FILE, counted())
    return writer.artifact
