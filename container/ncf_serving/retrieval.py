"""Approximate top-K for large catalogues: retrieve candidates from a FAISS index, re-rank them exactly.

The exact fast path scores every item per request, which at a million items is tens of
milliseconds. NeuMF's GMF branch is an inner product, ``h . (p_u * q_i) = p_u . (h * q_i)``, so
maximum inner product search over the GMF item vectors (``gmf_item``, with ``h`` folded in)
finds the items that branch ranks highest. The MLP branch does not decompose, so each item
vector gets one more dimension, the item's mean MLP-branch score over a sample of users, matched
by a constant 1 in the query: the index ranks by ``GMF score + typical MLP score``. The
``candidates`` best items it returns from the ``nprobe`` nearest inverted lists (the user's seen
items filtered inside the search) are then scored by the exact fast path
(:meth:`ncf_serving.fastpath.FastPath.score_items`), so every returned score is the model's own
and only the candidate set is approximate.

The index (``retrieval.faiss``, written by ``ncfctl neo compile``) and its parameters live in
``serving.json`` under ``retrieval`` (:class:`ncf_serving.bundle.RetrievalSpec`). A missing or
changed index is refused with the bundle's other files (``serving.json`` ``files``, checked by
:func:`ncf_serving.bundle.load_bundle`); loading also refuses, with one line, a file that FAISS
cannot read, whose shape differs from the model's, or whose stored item vectors are not this
model's ``gmf_item`` rows: a bundle never serves items retrieved for another model.

FAISS is imported only here and only for bundles that have an index (``faiss-cpu``).

Memory with several workers: FAISS reads an IVF-Flat index into anonymous memory (143 MB at a
million items), and neither of its memory-mapping read flags shares it (the mapped pages end up
private and dirty, measured in README "Results"). So the server's master reads the index once
before it forks (:func:`read_shared_index`) and each worker's :meth:`AnnRetrieval.load` takes that
copy, whose pages the workers then share copy-on-write: a search never writes them. The master
hashes the bytes as FAISS reads them and keeps the index only under the sha256 that
``serving.json`` records, so a worker (which verifies the file against the same sha256 first) only
ever gets the index its bundle names, and reads the file itself when the master could not.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ncf_serving.bundle import BundleError, RetrievalSpec, ServingSpec
from ncf_serving.fastpath import FastPath

CHECK_ROWS = 64  # item vectors compared with the model's gmf_item at load
READ_CHUNK = 1 << 20

_shared_indexes: dict[str, Any] = {}  # sha256 of an index file -> the index read from exactly those bytes


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise BundleError(
            "serving.json asks for ANN retrieval but faiss is not installed (pip install faiss-cpu)"
        ) from None
    return faiss


def read_shared_index(folder: Path, spec: ServingSpec) -> None:
    """In the server's master, before forking: read the bundle's index for the workers to share.

    Anything wrong (no faiss, a missing, unreadable or changed file) leaves nothing shared: the
    workers then read the file themselves and refuse it with the reason.
    """
    digest = spec.files.get(spec.retrieval.path) if spec.retrieval else None
    if digest is None:
        return
    try:
        faiss = _import_faiss()
        with open(folder / spec.retrieval.path, "rb") as fh:
            sha256 = hashlib.sha256()

            def read(size: int) -> bytes:
                chunk = fh.read(size)
                sha256.update(chunk)
                return chunk

            index = faiss.read_index(faiss.PyCallbackIOReader(read, READ_CHUNK))
            for rest in iter(lambda: fh.read(READ_CHUNK), b""):
                sha256.update(rest)
    except (BundleError, OSError, RuntimeError):
        return
    if sha256.hexdigest() == digest:
        index.make_direct_map()  # what the workers' check needs, made once here and shared with the lists
        _shared_indexes[digest] = index


class AnnRetrieval:
    """Candidate generation over the bundle's FAISS index, for one :class:`FastPath`'s users and items."""

    def __init__(self, index, spec: RetrievalSpec, fastpath: FastPath, faiss_module):
        self.index = index
        self.spec = spec
        self.faiss = faiss_module
        self.queries = np.hstack([fastpath.gmf_user, np.ones((fastpath.num_users, 1), np.float32)])

    @classmethod
    def load(cls, folder: Path, spec: RetrievalSpec, digest: str, fastpath: FastPath, threads: int = 1) -> AnnRetrieval:
        """Open and verify the index whose file has sha256 ``digest`` (the master's copy if it read one;
        see the module docstring for what is refused)."""
        path = folder / spec.path  # present and unchanged: load_bundle checked it against ``digest``
        if not fastpath.has_gmf:
            raise BundleError(f"{folder}: ANN retrieval needs the GMF arrays in the fast path, which has none")
        faiss = _import_faiss()
        faiss.omp_set_num_threads(threads)
        index = _shared_indexes.get(digest)
        if index is None:
            try:
                index = faiss.read_index(str(path))
            except RuntimeError as exc:
                raise BundleError(f"{path} is not a readable FAISS index: {str(exc).splitlines()[0]}") from None
        cls._check_matches(index, fastpath, path, faiss)
        return cls(index, spec, fastpath, faiss)

    @property
    def shared(self) -> bool:
        """Whether this is the index the master read before forking (one copy for every worker)."""
        return any(index is self.index for index in _shared_indexes.values())

    @staticmethod
    def _check_matches(index, fastpath: FastPath, path: Path, faiss) -> None:
        dim = fastpath.gmf_item.shape[1] + 1
        if (index.ntotal, index.d) != (fastpath.num_items, dim):
            raise BundleError(
                f"{path} holds {index.ntotal} vectors of dimension {index.d}, the model has "
                f"{fastpath.num_items} items of dimension {dim}"
            )
        if not isinstance(index, faiss.IndexIVFFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise BundleError(f"{path} is not an inner-product IVF-Flat index")
        if index.direct_map.no():
            index.make_direct_map()  # item id -> stored vector (a few MB), for the check below
        rows = np.linspace(0, fastpath.num_items - 1, min(CHECK_ROWS, fastpath.num_items)).astype(np.int64)
        stored = np.stack([index.reconstruct(int(row)) for row in rows])[:, :-1]
        if not np.allclose(stored, fastpath.gmf_item[rows], rtol=1e-6, atol=1e-7):
            raise BundleError(f"{path}: its item vectors are not this model's GMF item embeddings (another model?)")

    def search(self, user: int, count: int, exclude: np.ndarray | None) -> np.ndarray:
        """Up to ``count`` candidate item indices for ``user``, never one of ``exclude``."""
        faiss = self.faiss
        params = faiss.SearchParametersIVF(nprobe=self.spec.nprobe)
        if exclude is not None and len(exclude):
            # the selectors hold raw pointers to each other: keep both alive until the search returns
            seen = faiss.IDSelectorBatch(np.ascontiguousarray(exclude, dtype=np.int64))
            unseen = faiss.IDSelectorNot(seen)
            params.sel = unseen
        _, found = self.index.search(self.queries[user : user + 1], count, params=params)
        found = found[0]
        return found[found >= 0]

    def top_k(self, fastpath: FastPath, user: int, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of the retrieved candidates, scored exactly; same ordering rule as the fast path."""
        candidates = self.search(user, max(k, self.spec.candidates), exclude)
        return fastpath.rank(candidates, fastpath.score_items(user, candidates), k)
