"""The model behind the endpoint: pair scores through the runtime, top-K through the fast path.

Top-K scores every item with the exact fast path, or, for a bundle with an ANN index
(``serving.json`` ``retrieval``), re-ranks the index's candidates with it (:mod:`ncf_serving.retrieval`).

:class:`Predictor` is plain Python (no HTTP), so benchmarks and tests call it directly. Loading
ends with :meth:`Predictor.warm_up`, which runs real inferences and checks that the fast path and
the runtime model agree on the same scores: a bundle whose ``fastpath/`` arrays do not belong to
its compiled model never reports ready.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ncf_serving.bundle import Bundle, BundleError, load_bundle
from ncf_serving.fastpath import FastPath
from ncf_serving.ids import IdMap
from ncf_serving.runtimes import Scorer, load_scorer

# Fast path vs runtime: same float32 math in a different order (and, after Neo, other kernels).
AGREEMENT_RTOL = 1e-3
AGREEMENT_ATOL = 1e-4
CHECK_ITEMS = 64


class Predictor:
    def __init__(self, bundle: Bundle, scorer: Scorer, threads: int = 1):
        self.spec = bundle.spec
        self.scorer = scorer
        self.fastpath = FastPath(bundle.fastpath)
        self.users = IdMap(bundle.user_ids, bundle.user_order)
        self.items = IdMap(bundle.item_ids, bundle.item_order)
        self.seen_indptr = bundle.seen_indptr
        self.seen_indices = bundle.seen_indices
        if (self.fastpath.num_users, self.fastpath.num_items) != (self.spec.num_users, self.spec.num_items):
            raise BundleError(
                f"{bundle.folder}: fastpath/ is for {self.fastpath.num_users} users x {self.fastpath.num_items} "
                f"items, serving.json says {self.spec.num_users} x {self.spec.num_items}"
            )
        self.retrieval = None
        if self.spec.retrieval is not None:
            from ncf_serving.retrieval import AnnRetrieval  # faiss only for bundles that have an index

            retrieval = self.spec.retrieval
            digest = self.spec.files[retrieval.path]  # present: load_bundle verified the file against it
            self.retrieval = AnnRetrieval.load(bundle.folder, retrieval, digest, self.fastpath, threads)

    @classmethod
    def load(cls, model_dir: str | Path, threads: int | None = None) -> Predictor:
        bundle = load_bundle(model_dir)
        threads = threads or bundle.spec.threads
        return cls(bundle, load_scorer(bundle.spec, Path(model_dir), threads), threads)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Raw scores of index pairs through the runtime model."""
        return self.scorer.score(np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))

    def seen(self, user: int) -> np.ndarray:
        return self.seen_indices[self.seen_indptr[user] : self.seen_indptr[user + 1]]

    def top_k(self, user: int, k: int, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` item indices for a user index, best first, with raw scores (ANN candidates when indexed)."""
        exclude = self.seen(user) if exclude_seen else None
        if self.retrieval is not None:
            return self.retrieval.top_k(self.fastpath, user, k, exclude)
        return self.fastpath.top_k(user, k, exclude)

    def exact_top_k(self, user: int, k: int) -> np.ndarray:
        """The exact top-``k`` unseen items over the whole catalogue (what ANN retrieval is measured against)."""
        return self.fastpath.top_k(user, k, self.seen(user))[0]

    def warm_up(self, rounds: int = 1) -> float:
        """Run ``rounds`` of real inferences; check fast path == runtime. Returns the largest score gap."""
        if rounds < 1:
            raise ValueError("warm-up needs at least one round")
        count = min(CHECK_ITEMS, self.spec.num_items)
        items = np.linspace(0, self.spec.num_items - 1, count).astype(np.int64)
        gap = 0.0
        for round_ in range(rounds):
            user = round_ % self.spec.num_users
            runtime = self.score(np.full(count, user, dtype=np.int64), items)
            fast = self.fastpath.score_all(user)[items]
            if not np.all(np.isfinite(runtime)):
                raise BundleError(f"{self.spec.runtime} model returned non-finite scores during warm-up")
            if not np.allclose(fast, runtime, rtol=AGREEMENT_RTOL, atol=AGREEMENT_ATOL):
                worst = float(np.max(np.abs(fast - runtime)))
                raise BundleError(
                    f"fastpath/ disagrees with the {self.spec.runtime} model by up to {worst:.3g} on user "
                    f"index {user}: the bundle's files do not belong to the same model"
                )
            gap = max(gap, float(np.max(np.abs(fast - runtime))))
            self.top_k(user, 10)
        return gap
