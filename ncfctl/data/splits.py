"""Train / validation / test splits and evaluation negatives, as whole-array numpy operations.

Every function takes interactions sorted by (user, timestamp, file order), users numbered
0..U-1 with at least ``MIN_PER_USER`` rows each (``ncfctl.data.cleaning`` guarantees both), so a
user's rows are one contiguous block and "latest" is the block's end: timestamp ties are broken
by file order (a later line is later).

* ``leave-one-out``: each user's latest interaction is the test row, the next-latest the
  validation row (used to pick the training epoch), the rest is training data (NCF protocol).
* ``ratio``: ``round(test_ratio * n_u)`` rows per user (at least 1, leaving at least 2) are test
  rows: the latest ones (``temporal``) or a seeded random choice (``random``). The validation row
  is the latest remaining one. Splitting per user keeps every test user known to the model.

Evaluation negatives are drawn per held-out row, without replacement, uniformly from the items
the user never interacted with (in any split, at any rating); training negatives are not stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ncfctl.data.dataset import Interactions
from ncfctl.errors import NcfError
from ncfctl.progress import NO_PROGRESS, Progress

MIN_PER_USER = 3  # one training, one validation and one test interaction
ROWS_PER_BLOCK = 1 << 16  # evaluation rows sampled at once: bounds memory at rows x negatives
EXACT_BELOW = 2  # users with fewer than EXACT_BELOW x count candidates get an exact permutation


@dataclass
class Split:
    train: Interactions
    val: Interactions
    test: Interactions


def _user_bounds(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) row of each user's block."""
    counts = np.bincount(users)
    ends = np.cumsum(counts)
    return ends - counts, ends


def _assemble(rows: Interactions, test_mask: np.ndarray) -> Split:
    """Test rows from the mask; validation = each user's latest remaining row; training = the rest."""
    remaining = np.flatnonzero(~test_mask)
    owners = rows.users[remaining]
    latest = remaining[np.r_[owners[1:] != owners[:-1], True]]
    train_mask = ~test_mask
    train_mask[latest] = False
    return Split(rows.subset(train_mask), rows.subset(latest), rows.subset(test_mask))


def leave_one_out(rows: Interactions) -> Split:
    _, ends = _user_bounds(rows.users)
    test_mask = np.zeros(len(rows), dtype=bool)
    test_mask[ends - 1] = True
    return _assemble(rows, test_mask)


def ratio_split(rows: Interactions, test_ratio: float, order: str, rng: np.random.Generator) -> Split:
    starts, ends = _user_bounds(rows.users)
    counts = ends - starts
    held_out = np.clip(np.floor(test_ratio * counts + 0.5).astype(np.int64), 1, counts - 2)
    position = np.arange(len(rows)) - starts[rows.users]  # 0 = the user's earliest row
    if order == "temporal":
        test_mask = position >= (counts - held_out)[rows.users]
    else:  # random: rank rows within each user by a random key, hold out the lowest ranks
        shuffled = np.lexsort((rng.random(len(rows)), rows.users))
        rank = np.empty(len(rows), dtype=np.int64)
        rank[shuffled] = position
        test_mask = rank < held_out[rows.users]
    return _assemble(rows, test_mask)


def split_interactions(rows: Interactions, method: str, test_ratio: float, order: str, rng) -> Split:
    if method == "leave-one-out":
        return leave_one_out(rows)
    return ratio_split(rows, test_ratio, order, rng)


def _distinct_ranks(candidates: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct integers in ``[0, candidates[r])`` per row ``r``, uniform over subsets.

    Draw with replacement, then redraw only the colliding entries until none collide: by symmetry
    every subset stays equally likely. Rows with few candidates (where collisions would keep
    recurring) take the first ``count`` of an exact random permutation instead.
    """
    out = np.empty((len(candidates), count), dtype=np.int64)
    exact = candidates < EXACT_BELOW * count
    if exact.any():
        width = int(candidates[exact].max())
        keys = rng.random((int(exact.sum()), width))
        keys[np.arange(width)[None, :] >= candidates[exact][:, None]] = np.inf  # not a candidate
        out[exact] = np.argsort(keys, axis=1)[:, :count]
    loose = np.flatnonzero(~exact)
    if len(loose):
        limit = candidates[loose][:, None]
        draws = np.sort((rng.random((len(loose), count)) * limit).astype(np.int64), axis=1)
        while True:
            collide = np.zeros(draws.shape, dtype=bool)
            collide[:, 1:] = draws[:, 1:] == draws[:, :-1]
            if not collide.any():
                break
            rows = np.nonzero(collide)[0]
            draws[collide] = (rng.random(len(rows)) * limit[rows, 0]).astype(np.int64)
            draws.sort(axis=1)
        out[loose] = draws
    return out


class UnseenItemSampler:
    """Evaluation negatives: items a user never interacted with, ``count`` distinct per row."""

    def __init__(self, known_keys: np.ndarray, num_users: int, num_items: int, names: np.ndarray | None = None):
        """``known_keys``: sorted unique ``user * num_items + item`` of every known interaction;
        ``names``: raw user ids, to name a user in errors."""
        self.names = names
        self.num_items = np.int64(num_items)
        users = known_keys // self.num_items
        items = known_keys % self.num_items
        self.known_per_user = np.bincount(users, minlength=num_users)
        starts = np.cumsum(self.known_per_user) - self.known_per_user
        # The r-th unknown item of a user is r + #{known items s_i with s_i - i <= r}, where i is
        # s_i's position among that user's known items: one searchsorted over all users at once.
        gaps = items - (np.arange(len(known_keys)) - starts[users])
        self.stride = self.num_items + 1
        self.gap_keys = users * self.stride + gaps
        self.starts = starts

    def sample(
        self, users: np.ndarray, count: int, rng: np.random.Generator, progress: Progress = NO_PROGRESS, label=""
    ) -> np.ndarray:
        candidates = self.num_items - self.known_per_user[users]
        if len(users) and candidates.min() < count:
            user = int(users[candidates.argmin()])
            who = f"user '{self.names[user]}'" if self.names is not None else f"user index {user}"
            raise NcfError(
                f"{who} interacted with {int(self.known_per_user[user])} of {int(self.num_items)} items, leaving "
                f"{int(self.num_items - self.known_per_user[user])} < data.eval_negatives={count} negatives",
                hint="lower data.eval_negatives",
                settings=("data.eval_negatives",),
            )
        task = progress.task(f"sample {label} negatives", total=len(users))
        out = np.empty((len(users), count), dtype=np.int64)
        for start in range(0, len(users), ROWS_PER_BLOCK):
            block = users[start : start + ROWS_PER_BLOCK]
            ranks = _distinct_ranks(candidates[start : start + ROWS_PER_BLOCK], count, rng)
            owner = block[:, None]
            before = np.searchsorted(self.gap_keys, owner * self.stride + ranks, side="right") - self.starts[owner]
            out[start : start + ROWS_PER_BLOCK] = ranks + before
            task.update(completed=start + len(block))
        return out
