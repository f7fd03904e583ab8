"""Top-K retrieval for a serving bundle: exact, or an ANN index built here at compile time.

``serving.retrieval`` picks how the bundle answers "top-K for one user": ``exact`` scores every
item (the fast path: 67-92 ms per request at 528k items, one thread), ``ann`` retrieves
``serving.ann.candidates`` items from a FAISS IVF-Flat index and re-ranks them exactly (how it
serves, and what the index holds: :mod:`ncf_serving.retrieval`), ``auto`` is ``ann`` from
``serving.ann.min_items`` items. An MLP-only model has no inner-product branch to index, so it
is always exact (``ann`` is refused).

The index's extra dimension is each item's mean MLP-branch score over ``serving.ann.mlp_users``
users sampled with the compile seed, computed with the serving fast path itself (numpy).
Measured on the 1M-item synthetic shape (528k items after cleaning, NeuMF 32 / 128,64,32, one
epoch), recall@10 of the re-ranked candidates against the exact top-10 over 300 users and p50 per
request on one thread (``python benchmarks/bench_retrieval.py --workdir W --hnsw``):

* exact inner-product search over the GMF vectors alone: recall 0.43 / 0.52 / 0.59 at 50 / 100 /
  200 candidates (the MLP branch matters);
* ... with the mean-MLP dimension: 0.96 at 10 candidates, 1.0 from 20 (also with 16 or 128 users
  averaged instead of 64);
* IVF-Flat, 1,024 lists, 100 candidates: nprobe 8 0.90 (0.09 ms), 16 0.987 (0.11 ms), 32 1.0
  (0.16 ms); the lists train in ~4 s;
* HNSW-Flat, ef_construction 64, ef = candidates = 100: M 16 0.961 (0.11 ms), M 32 0.993
  (0.13 ms); built in 21 / 26 s, and its graph makes the file 3x larger.

IVF-Flat is the choice: higher recall at about the same latency, built several times faster, a third
of the size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ncf_serving.bundle import ANN_INDEX, RetrievalSpec
from ncf_serving.fastpath import FastPath

from ncfctl import fileio
from ncfctl.config import AnnConfig, ServingConfig
from ncfctl.errors import MissingExtraError, NcfError
from ncfctl.models import NCFSpec

MIN_LIST_ITEMS = 64  # at most one inverted list per 64 items (k-means wants >= 39 points per centroid)


@dataclass(frozen=True)
class RetrievalChoice:
    ann: bool
    reason: str  # shown to the user and recorded in the compiled artifact's manifest


def choose_retrieval(serving: ServingConfig, spec: NCFSpec) -> RetrievalChoice:
    """``serving.retrieval`` for this model: exact or ANN, and why."""
    mode, threshold = serving.retrieval, serving.ann.min_items
    if mode == "exact":
        return RetrievalChoice(False, "serving.retrieval is exact")
    if not spec.has_gmf:
        if mode == "ann":
            raise NcfError(
                "serving.retrieval is ann but an MLP model has no GMF branch to build an inner-product index from",
                hint="use serving.retrieval exact (or auto) for MLP models",
            )
        return RetrievalChoice(False, "auto: an MLP model has no inner-product branch to index")
    if mode == "auto" and spec.num_items < threshold:
        return RetrievalChoice(False, f"auto: {spec.num_items:,} items < serving.ann.min_items ({threshold:,})")
    reason = "serving.retrieval is ann" if mode == "ann" else f"auto: {spec.num_items:,} items >= {threshold:,}"
    return RetrievalChoice(True, reason)


def _faiss():
    try:
        import faiss
    except ImportError:
        raise MissingExtraError(
            "ANN retrieval needs FAISS, which is not installed",
            hint="pip install 'ncfctl[ann]' (faiss-cpu), or set serving.retrieval: exact",
        ) from None
    return faiss


def mean_mlp_scores(fastpath: FastPath, users: int, seed: int) -> np.ndarray:
    """Each item's score minus its GMF part (MLP branch + output bias), averaged over sampled users."""
    rng = np.random.default_rng([seed, 0xA22])
    chosen = rng.choice(fastpath.num_users, size=min(users, fastpath.num_users), replace=False)
    total = np.zeros(fastpath.num_items, dtype=np.float64)
    for user in chosen.tolist():
        total += fastpath.score_all(user) - fastpath.gmf_item @ fastpath.gmf_user[user]
    return (total / len(chosen)).astype(np.float32)


def item_vectors(arrays: dict[str, np.ndarray], settings: AnnConfig, seed: int) -> np.ndarray:
    """``[gmf_item | mean MLP score]`` per item: the vectors the index searches."""
    fastpath = FastPath(arrays)
    extra = mean_mlp_scores(fastpath, settings.mlp_users, seed)
    return np.ascontiguousarray(np.hstack([fastpath.gmf_item, extra[:, None]]), dtype=np.float32)


def build_index(
    folder: Path, arrays: dict[str, np.ndarray], settings: AnnConfig, seed: int, threads: int
) -> RetrievalSpec:
    """Write ``retrieval.faiss`` into ``folder``; returns ``serving.json``'s ``retrieval`` entry for it."""
    faiss = _faiss()
    faiss.omp_set_num_threads(threads)
    vectors = item_vectors(arrays, settings, seed)
    lists = min(settings.lists, max(1, len(vectors) // MIN_LIST_ITEMS))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed  # k-means initialisation: the same compile gives the same index
    index.train(vectors)
    index.add(vectors)
    path = folder / ANN_INDEX
    with fileio.atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    nprobe = min(settings.nprobe, lists)
    return RetrievalSpec(candidates=settings.candidates, nprobe=nprobe)
