"""Offline evaluation: HR@K / NDCG@K (sampled and full ranking) or RMSE / MAE, for any runtime.

A model is seen only through a ``score_fn(users, items) -> scores`` over int64 index arrays, so
the same code measures a torch model, an ONNX Runtime session or an HTTP endpoint. A scorer may
also offer ``score_fn.all_items(users) -> (len(users), num_items)`` scores; full ranking uses it
when present (a model can share the item-side work across users) and scores pairs otherwise.

Two protocols, because sampled metrics alone are known to mislead (Krichene & Rendle, KDD 2020):

* sampled: each held-out item is ranked among that row's stored negatives (99 in the NCF paper);
* full ranking: it is ranked among every item the user has not interacted with in train + val
  (other held-out items of the same user are left out of the candidates, not counted as misses).
  Its cost is users x items scores, so it ranks every held-out user only up to
  ``FULL_RANKING_CELLS`` (10^8: the 1x default's 6,040 x 3,706 is 22M); above that, a sample of
  ``max(MIN_SAMPLE_USERS, FULL_RANKING_CELLS / items)`` users drawn with a fixed seed, so every
  model (and the popularity baseline) of a dataset is ranked on the same users. ``full_users``
  says how many were ranked and ``full_hr_se`` / ``full_ndcg_se`` give the standard error of the
  mean over them (at 1,000 users and HR 0.1: about 0.01).

Ties never flatter: the 1-based rank is the number of candidates scoring >= the positive
(the positive included), so a constant model ranks last, not first. A NaN score counts against
the positive (``not neg < pos`` is true for NaN).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch

from ncfctl.data.dataset import EvalSplit, InteractionData
from ncfctl.errors import NcfError
from ncfctl.models import NCF

PAIRS_PER_CALL = 1 << 18  # pairs per score_fn call: bounded memory, few Python round trips
CELLS_PER_BLOCK = 1 << 22  # user-block size for full ranking: rows x items scores held at once ...
MIN_BLOCK_USERS = 32  # ... but at least this many users, so a scorer's per-call item-side work is shared
FULL_RANKING_CELLS = 10**8  # full ranking ranks every held-out user up to this many user x item scores
MIN_SAMPLE_USERS = 1_000  # ... and at least this many sampled users above it
SAMPLE_SEED = 20_170_403  # the users sampled depend only on the split, never on the model


class ScoreFn(Protocol):
    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray: ...


def score_pairs(score_fn: ScoreFn, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """``score_fn`` over many pairs in bounded chunks, as one float64 array."""
    out = np.empty(len(users), dtype=np.float64)
    for start in range(0, len(users), PAIRS_PER_CALL):
        stop = start + PAIRS_PER_CALL
        scores = np.asarray(score_fn(users[start:stop], items[start:stop]), dtype=np.float64).reshape(-1)
        if len(scores) != min(stop, len(users)) - start:
            raise NcfError(f"score function returned {len(scores)} scores for {min(stop, len(users)) - start} pairs")
        out[start:stop] = scores
    return out


def _hits_and_gains(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    hits = ranks <= k
    return hits, np.where(hits, 1.0 / np.log2(ranks + 1.0), 0.0)


def ranking_metrics(ranks: np.ndarray, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k from 1-based ranks (one relevant item per row)."""
    if len(ranks) == 0:
        return float("nan"), float("nan")
    hits, gains = _hits_and_gains(ranks, k)
    return float(hits.mean()), float(gains.mean())


def full_ranking_metrics(ranks: np.ndarray, users: int, k: int) -> dict[str, float]:
    """``full_hr``, ``full_ndcg``, their standard errors over the ranked rows, and ``full_users``."""
    hits, gains = _hits_and_gains(ranks, k)
    n = len(ranks)

    def se(values: np.ndarray) -> float:
        return float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    return {
        "full_hr": float(hits.mean()) if n else float("nan"),
        "full_ndcg": float(gains.mean()) if n else float("nan"),
        "full_hr_se": se(hits.astype(np.float64)),
        "full_ndcg_se": se(gains),
        "full_users": users,
    }


def full_ranking_rows(split: EvalSplit, num_items: int) -> tuple[np.ndarray, int]:
    """The held-out rows full ranking ranks (all, or those of a seeded user sample) and their user count."""
    users = np.unique(split.rows.users)
    if len(users) * num_items <= FULL_RANKING_CELLS:
        return np.arange(len(split.rows)), len(users)
    size = max(MIN_SAMPLE_USERS, FULL_RANKING_CELLS // num_items)
    if size >= len(users):
        return np.arange(len(split.rows)), len(users)
    chosen = np.random.default_rng(SAMPLE_SEED).choice(users, size=size, replace=False)
    return np.flatnonzero(np.isin(split.rows.users, chosen)), size


def pessimistic_rank(candidates: np.ndarray, positive: np.ndarray, excluded: np.ndarray | None = None) -> np.ndarray:
    """1 + number of candidates (per row) that do not score strictly below the positive.

    ``candidates`` is ``(rows, n)``, ``positive`` ``(rows,)``; ``excluded`` masks candidates that
    do not compete (known items). ``~(c < p)`` is true for ties and for NaN on either side.
    """
    beats = ~(candidates < positive[:, None])
    if excluded is not None:
        beats &= ~excluded
    return 1 + beats.sum(axis=1)


def sampled_ranks(score_fn: ScoreFn, split: EvalSplit) -> np.ndarray:
    """Rank of each held-out item among its row's stored negatives."""
    rows, negatives = split.rows, split.negatives
    if negatives.ndim != 2 or len(negatives) != len(rows):
        raise NcfError(f"evaluation negatives have shape {negatives.shape}, expected ({len(rows)}, E)")
    width = 1 + negatives.shape[1]
    items = np.concatenate([rows.items[:, None], negatives], axis=1).reshape(-1)
    users = np.repeat(rows.users, width)
    scores = score_pairs(score_fn, users, items).reshape(len(rows), width)
    return pessimistic_rank(scores[:, 1:], scores[:, 0])


def _all_item_scores(score_fn: ScoreFn, users: np.ndarray, num_items: int) -> np.ndarray:
    all_items = getattr(score_fn, "all_items", None)
    if all_items is not None:
        scores = np.asarray(all_items(users), dtype=np.float64)
    else:
        pair_users = np.repeat(users, num_items)
        pair_items = np.tile(np.arange(num_items, dtype=np.int64), len(users))
        scores = score_pairs(score_fn, pair_users, pair_items)
    return scores.reshape(len(users), num_items)


def csr_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(local_row, column)`` of every stored entry of CSR ``rows``, vectorised (no per-row loop)."""
    starts, counts = indptr[rows], indptr[rows + 1] - indptr[rows]
    local = np.repeat(np.arange(len(rows)), counts)
    first_of_row = np.repeat(np.cumsum(counts) - counts, counts)
    return local, indices[np.repeat(starts, counts) + np.arange(counts.sum()) - first_of_row]


def full_ranks(score_fn: ScoreFn, data: InteractionData, split: EvalSplit, row_index: np.ndarray) -> np.ndarray:
    """Rank of each held-out row in ``row_index`` among all items its user has not interacted with.

    Users are scored in blocks (``CELLS_PER_BLOCK`` scores at a time); within a block the known
    items (train + val) and the user's other held-out items are masked out of the candidates.
    """
    rows = split.rows
    num_items = data.num_items
    indptr, indices = data.seen_items()
    order = row_index[np.argsort(rows.users[row_index], kind="stable")]
    sorted_users = rows.users[order]
    uniq = np.unique(sorted_users)
    block = max(MIN_BLOCK_USERS, CELLS_PER_BLOCK // num_items)
    ranks = np.empty(len(rows), dtype=np.int64)
    for start in range(0, len(uniq), block):
        users = uniq[start : start + block]
        lo = np.searchsorted(sorted_users, users[0], side="left")
        hi = np.searchsorted(sorted_users, users[-1], side="right")
        block_rows = order[lo:hi]
        local = np.searchsorted(users, rows.users[block_rows])
        held_items = rows.items[block_rows]
        scores = _all_item_scores(score_fn, users, num_items)
        excluded = np.zeros((len(users), num_items), dtype=bool)
        excluded[csr_rows(indptr, indices, users)] = True
        excluded[local, held_items] = True  # held-out items of the block never compete
        ranks[block_rows] = pessimistic_rank(scores[local], scores[local, held_items], excluded[local])
    return ranks[row_index]


def rating_metrics(score_fn: ScoreFn, split: EvalSplit) -> dict[str, float]:
    """RMSE and MAE of predicted ratings on the held-out rows (explicit task)."""
    rows = split.rows
    errors = score_pairs(score_fn, rows.users, rows.items) - rows.ratings.astype(np.float64)
    return {"rmse": float(np.sqrt(np.mean(errors**2))), "mae": float(np.mean(np.abs(errors)))}


def check_top_k(data: InteractionData, k: int) -> None:
    """Refuse a K at which HR@K says nothing: sampled ranking has ``1 + E`` candidates per row,
    so any ``K >= 1 + E`` puts every held-out item in the top K (HR@K = 1.0 by construction)."""
    if k <= 0:
        raise NcfError(f"top_k must be positive, got {k}")
    if data.explicit:
        return  # RMSE/MAE: K plays no part
    negatives = min(data.val.negatives.shape[1], data.test.negatives.shape[1])
    if k > negatives:
        raise NcfError(
            f"train.top_k {k} is not below the {negatives + 1} candidates each held-out item is ranked among "
            f"(itself + {negatives} sampled negatives): HR@{k} would be 1.0 by construction",
            hint=f"set train.top_k to {negatives} or less, or prepare the dataset with more data.eval_negatives",
            settings=("train.top_k", "data.eval_negatives"),
        )


def evaluate(
    score_fn: ScoreFn, data: InteractionData, split: str = "test", k: int = 10, full_ranking: bool = True
) -> dict[str, float]:
    """Metrics of ``score_fn`` on ``data``'s ``split`` ("val" or "test").

    Implicit data: ``hr``, ``ndcg`` (sampled), with ``full_ranking`` also ``full_hr``,
    ``full_ndcg``, ``full_hr_se``, ``full_ndcg_se`` and ``full_users`` (see the module
    docstring), and ``k``. Explicit data: ``rmse`` and ``mae``.
    """
    if split not in ("val", "test"):
        raise NcfError(f"evaluation split must be 'val' or 'test', got {split!r}")
    check_top_k(data, k)
    held_out = data.val if split == "val" else data.test
    if len(held_out.rows) == 0:
        raise NcfError(f"the dataset's {split} split is empty: nothing to evaluate")
    if data.explicit:
        return rating_metrics(score_fn, held_out)
    hr, ndcg = ranking_metrics(sampled_ranks(score_fn, held_out), k)
    metrics: dict[str, float] = {"hr": hr, "ndcg": ndcg}
    if full_ranking:
        row_index, users = full_ranking_rows(held_out, data.num_items)
        metrics.update(full_ranking_metrics(full_ranks(score_fn, data, held_out, row_index), users, k))
    metrics["k"] = k
    return metrics


class TorchScorer:
    """Adapts an ``NCF`` to the ``score_fn`` protocol: eval mode, no grad, numpy out."""

    pairs_per_pass = 1 << 15  # user x item pairs per tower pass in ``all_items`` (cache-sized; >= 1 user)

    def __init__(self, model: NCF, device: torch.device | str | None = None):
        if not isinstance(model, NCF):
            raise TypeError(f"TorchScorer adapts ncfctl.models.NCF, got {type(model).__name__}")
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        with _eval_mode(self.model):
            u, i = _index_tensor(users, self.device), _index_tensor(items, self.device)
            return self.model(u, i).float().cpu().numpy()

    @torch.no_grad()
    def all_items(self, users: np.ndarray) -> np.ndarray:
        """Scores of every item for each user, sharing the item-side work (same numbers as pairs).

        GMF: ``(p_u * q_i) . h == p_u . (q_i * h)``, one mat-vec for all items. MLP: the first
        layer splits as ``W_u m_u + (W_i m_i + b)``, so the item half is computed once per call,
        and each hidden state is kept as ``H + s`` (per-item matrix plus the user's row, using
        ``relu(x + s) = max(x, -s) + s``): per user, one matmul and one ``maximum`` per layer.
        This is the serving fast path's algorithm (:mod:`ncf_serving.fastpath`), here in torch so
        it runs on the training device; on one CPU thread it is ~5x faster than running the tower
        on ``user + item`` sums (measured at 528k items: 65 vs 360 ms per user).
        """
        model = self.model
        spec = model.spec
        with _eval_mode(model):
            u = _index_tensor(users, self.device)
            out_weight = model.predict.weight[0]
            scores = torch.zeros(len(u), spec.num_items, device=self.device) + model.predict.bias
            if spec.has_gmf:
                scores += model.gmf_user(u) @ (model.gmf_item.weight * out_weight[: spec.factors]).T
            if spec.has_mlp:
                self._add_mlp_scores(scores, u, out_weight[-spec.hidden[-1] :])
            return scores.float().cpu().numpy()

    def _add_mlp_scores(self, scores: torch.Tensor, u: torch.Tensor, out_weight: torch.Tensor) -> None:
        """Adds the MLP branch, ``pairs_per_pass`` (user, item) pairs at a time (several users per pass
        for small catalogues); buffers are allocated once per call (fresh 100 MB tensors per user cost
        more in page faults than the arithmetic)."""
        model = self.model
        first, *rest = model.linear_layers()
        user_dim = model.spec.mlp_user_dim
        item_pre = model.mlp_item.weight @ first.weight[:, user_dim:].T + first.bias
        shifts = model.mlp_user(u) @ first.weight[:, :user_dim].T
        weights = [layer.weight.T.contiguous() for layer in rest]
        num_items = item_pre.shape[0]
        step = max(1, min(len(u), self.pairs_per_pass // num_items))
        widths = [first.weight.shape[0], *(weight.shape[1] for weight in weights)]
        hidden = [torch.empty(step, num_items, width, device=self.device) for width in widths]
        for start in range(0, len(u), step):
            shift = shifts[start : start + step]
            rows = len(shift)
            h = torch.maximum(item_pre, -shift[:, None, :], out=hidden[0][:rows])
            for layer, weight, nxt in zip(rest, weights, hidden[1:], strict=True):
                h = torch.matmul(h, weight, out=nxt[:rows])
                shift = shift @ weight + layer.bias
                h = torch.maximum(h, -shift[:, None, :], out=h)
            scores[start : start + rows] += h @ out_weight + (shift @ out_weight)[:, None]


def _index_tensor(indices: np.ndarray, device: torch.device) -> torch.Tensor:
    """int64 indices as a tensor; a read-only array (a memory-mapped split) is copied, since torch
    cannot wrap one (it warns and the tensor would alias memory it must not write)."""
    array = np.asarray(indices, dtype=np.int64)
    return torch.as_tensor(array if array.flags.writeable else array.copy(), device=device)


@contextmanager
def _eval_mode(model: torch.nn.Module):
    """Score in eval mode (no dropout) and give the model back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def torch_score_fn(model: NCF, device: torch.device | str | None = None) -> TorchScorer:
    return TorchScorer(model, device)


class PopularityScorer:
    """The ranking baseline every model must beat: an item's score is its training interaction count."""

    def __init__(self, data: InteractionData):
        self.scores = np.bincount(data.train.items, minlength=data.num_items).astype(np.float64)

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.scores[np.asarray(items, dtype=np.int64)]

    def all_items(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores, (len(users), len(self.scores)))


class ItemMeanScorer(PopularityScorer):
    """The rating baseline: an item's mean training rating, shrunk towards the global mean.

    Shrinkage (``prior`` pseudo-ratings at the global mean) keeps items rated once or never from
    predicting extreme values, which is what makes this a fair RMSE baseline.
    """

    def __init__(self, data: InteractionData, prior: float = 5.0):
        train = data.train
        global_mean = float(train.ratings.mean()) if len(train) else 0.0
        sums = np.bincount(train.items, weights=train.ratings, minlength=data.num_items)
        counts = np.bincount(train.items, minlength=data.num_items)
        self.scores = (sums + prior * global_mean) / (counts + prior)


def popularity_score_fn(data: InteractionData) -> PopularityScorer:
    """The non-personalised baseline of ``data``'s task: popularity (implicit) or item mean (explicit)."""
    return ItemMeanScorer(data) if data.explicit else PopularityScorer(data)
