"""Exact top-K for one user in numpy, over the item-side work precomputed in the bundle's ``fastpath/``.

Scoring every item through the runtime model repeats the item half of the network for each
request. NeuMF splits cleanly: the first MLP layer is ``W1 [u; i] + b1 = W1_user u + (W1_item i + b1)``
and the GMF term is ``h_gmf . (p_u * q_i) = p_u . (q_i * h_gmf)``, so the bundle stores the
item parts (``item_pre``, ``gmf_item``) and a request costs one small user-side mat-vec plus one
pass over the item matrices and the remaining (narrow) tower layers.

Each hidden activation is kept as ``H + s``: a per-item matrix ``H`` plus a per-request row ``s``
(the user's contribution), using ``relu(x + s) = max(x, -s) + s``. Then
``(H + s) W + b = H W + (s W + b)``: the bias and the user shift ride along in a small vector and
each layer costs one matmul and one ``maximum`` pass over the items (instead of add, relu, matmul,
bias, relu). This is algebraically exact; numerically it is float32 like the model, so scores
match the runtime to rounding (the predictor checks this at load) and rankings match except for
items whose scores tie to within rounding.

The MLP tower runs over the items in blocks of :data:`BLOCK_ITEMS`, so each thread's work buffers
(allocated once: allocating ~1 MB per request costs more than the math) stay a few MB whatever
the catalogue size, and a block's hidden states stay in cache between layers. With one buffer
row per item, every server worker would hold ~400 MB of them for a million items.
:meth:`FastPath.score_items` runs the same math on a subset of items (the candidates an ANN
index retrieved, :mod:`ncf_serving.retrieval`), so re-ranking is exact for those items.
"""

from __future__ import annotations

import threading

import numpy as np

from ncf_serving.bundle import GMF_KEYS, MLP_KEYS, OUT_BIAS, BundleError, tower_keys

BLOCK_ITEMS = 8192  # ML-1M's 3,706 items fit in one block


class FastPath:
    """Scores all items for one user index; :meth:`top_k` ranks them."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.has_gmf = all(k in arrays for k in GMF_KEYS)
        self.has_mlp = all(k in arrays for k in MLP_KEYS)
        if not (self.has_gmf or self.has_mlp):
            raise BundleError(f"fastpath arrays lack both GMF {GMF_KEYS} and MLP {MLP_KEYS} keys")
        as32 = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in arrays.items()}
        self.out_bias = np.float32(as32[OUT_BIAS])
        self.gmf_user = as32.get("gmf_user")
        self.gmf_item = as32.get("gmf_item")
        self.mlp_user = as32.get("mlp_user")
        self.w1_user = as32.get("w1_user")
        self.item_pre = as32.get("item_pre")
        self.out_mlp = as32.get("out_mlp")
        self.tower: list[tuple[np.ndarray, np.ndarray]] = []
        layer = 2
        while tower_keys(layer)[0] in as32:
            w_key, b_key = tower_keys(layer)
            self.tower.append((as32[w_key], as32[b_key]))
            layer += 1
        items_table = self.gmf_item if self.has_gmf else self.item_pre
        self.num_items = int(items_table.shape[0])
        self.num_users = int((self.gmf_user if self.has_gmf else self.mlp_user).shape[0])
        self._local = threading.local()

    def _block_buffers(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """This thread's (MLP scores of a block, hidden states of a block per layer)."""
        buffers = getattr(self._local, "blocks", None)
        if buffers is None:
            widths = [self.item_pre.shape[1], *(w.shape[1] for w, _ in self.tower)]
            block = min(BLOCK_ITEMS, self.num_items)
            buffers = np.empty(block, np.float32), [np.empty((block, width), np.float32) for width in widths]
            self._local.blocks = buffers
        return buffers

    def _catalogue_scores(self) -> np.ndarray:
        """This thread's score buffer for every item, reused by each request."""
        scores = getattr(self._local, "scores", None)
        if scores is None:
            scores = self._local.scores = np.empty(self.num_items, np.float32)
        return scores

    def _score(
        self, user: int, gmf_item: np.ndarray | None, item_pre: np.ndarray | None, scores: np.ndarray
    ) -> np.ndarray:
        """Scores (into ``scores``) of the items whose precomputed rows are given: the whole tables, or
        a gathered subset."""
        rows = len(scores)
        if self.has_gmf:
            np.matmul(gmf_item, self.gmf_user[user], out=scores)
        else:
            scores.fill(0.0)
        offset = self.out_bias
        if self.has_mlp:
            mlp_scores, hidden = self._block_buffers()
            shift = self.w1_user @ self.mlp_user[user]
            floors = [-shift]  # relu(x + s) = max(x, -s) + s, per layer
            for weight, bias in self.tower:
                shift = shift @ weight + bias
                floors.append(-shift)
            for start in range(0, rows, len(mlp_scores)):
                stop = min(start + len(mlp_scores), rows)
                n = stop - start
                h = hidden[0][:n]
                np.maximum(item_pre[start:stop], floors[0], out=h)
                for (weight, _), nxt, floor in zip(self.tower, hidden[1:], floors[1:], strict=True):
                    np.matmul(h, weight, out=nxt[:n])
                    np.maximum(nxt[:n], floor, out=nxt[:n])
                    h = nxt[:n]
                np.matmul(h, self.out_mlp, out=mlp_scores[:n])
                scores[start:stop] += mlp_scores[:n]
            offset = offset + shift @ self.out_mlp
        scores += offset
        return scores

    def _score_into_buffer(self, user: int) -> np.ndarray:
        return self._score(user, self.gmf_item, self.item_pre, self._catalogue_scores())

    def score_all(self, user: int) -> np.ndarray:
        """Raw scores of every item for user index ``user`` (a fresh array)."""
        return self._score_into_buffer(user).copy()

    def score_items(self, user: int, items: np.ndarray) -> np.ndarray:
        """Raw scores of ``items`` only (the re-ranking of retrieved candidates): same math, their rows."""
        gathered = [None if table is None else table[items] for table in (self.gmf_item, self.item_pre)]
        return self._score(user, *gathered, np.empty(len(items), np.float32))

    def rank(self, items: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best of ``items`` by ``scores`` (best first; ties by lower index), with their scores."""
        order = np.lexsort((items, -scores))[:k]
        return items[order].astype(np.int64, copy=False), scores[order].copy()

    def top_k(self, user: int, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best item indices (best first; ties by lower index) and their scores.

        ``exclude`` (item indices, e.g. the user's seen items) never appear; fewer than ``k``
        items come back when fewer remain.
        """
        scores = self._score_into_buffer(user)
        available = self.num_items
        if exclude is not None and len(exclude):
            scores[exclude] = -np.inf
            available -= len(exclude)
        k = max(0, min(k, available))
        if k == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        if k < self.num_items:
            candidates = np.argpartition(scores, self.num_items - k)[self.num_items - k :]
            kth = scores[candidates].min()
            if np.count_nonzero(scores[candidates] == kth) != np.count_nonzero(scores == kth):
                # argpartition cut a group of equal scores arbitrarily: keep its lowest indices
                above = np.flatnonzero(scores > kth)
                candidates = np.concatenate([above, np.flatnonzero(scores == kth)[: k - len(above)]])
        else:
            candidates = np.arange(self.num_items)
        return self.rank(candidates, scores[candidates], k)
