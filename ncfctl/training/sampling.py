"""Training examples for one epoch, built with whole-array numpy operations.

Per-sample Python (a ``Dataset.__getitem__`` drawing negatives one by one) dominates NCF training
time on CPU; here an epoch of millions of examples is a handful of vectorised calls. Every epoch
draws from its own generator seeded by ``(seed, epoch)``, so an epoch's examples depend only on
those two numbers: a resumed run and every DDP rank see exactly the examples an uninterrupted
single process would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ncfctl.data.dataset import Interactions
from ncfctl.errors import NcfError

MAX_REDRAWS = 64  # each redraw keeps only colliding draws; 64 rounds leave none unless a user knows ~all items


SAMPLE_BLOCK = 1 << 22  # negatives drawn at once: bounds the sampler's int64 temporaries at ~100 MB


@dataclass
class EpochExamples:
    """One epoch's shuffled examples, stored once in compact form and read batch by batch.

    Example ``e`` is training row ``e % rows`` paired with ``items[e]``: the first ``rows``
    entries of ``items`` are the rows' own items (positives), each further block of ``rows`` one
    round of negatives for the same rows. Its target is ``targets[e]`` for ratings (explicit) or
    ``e < rows`` (implicit: 1 for a positive, 0 for a negative). ``order`` is the shuffled
    sequence of example ids; a batch is a slice of it, so nothing of size ``rows x (1 +
    negatives)`` is ever copied. Indices are int32 (half of int64, and what the embedding
    lookups take) whenever they fit.
    """

    users: np.ndarray  # (rows,) int32: the training rows' users
    items: np.ndarray  # (rows * (1 + negatives),) int32
    order: np.ndarray  # (len(items),) int32 permutation of the example ids
    ratings: np.ndarray | None = None  # (rows,) float32 for the explicit task, else None

    def __len__(self) -> int:
        return len(self.order)

    @property
    def rows(self) -> int:
        return len(self.users)


def index_dtype(size: int) -> type:
    """int32 when every index below ``size`` fits, else int64."""
    return np.int32 if size <= np.iinfo(np.int32).max else np.int64


def narrow(indices: np.ndarray) -> np.ndarray:
    """``indices`` (non-negative) in the narrowest index type that holds them."""
    return indices.astype(index_dtype(int(indices.max(initial=0)) + 1), copy=False)


def shuffled(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``0..size-1`` in the narrowest index type."""
    order = np.arange(size, dtype=index_dtype(size))
    rng.shuffle(order)
    return order


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch])


def subsample(train: Interactions, fraction: float, seed: int) -> Interactions:
    """A fixed random ``fraction`` of the training rows (fine-tuning on part of the data)."""
    if fraction >= 1.0:
        return train
    keep = max(1, round(len(train) * fraction))
    index = np.sort(np.random.default_rng([seed, 0x5EED]).choice(len(train), size=keep, replace=False))
    return train.subset(index)


class NegativeSampler:
    """Uniform negatives: items the user has no training interaction with."""

    def __init__(self, train: Interactions, num_items: int):
        self.num_items = np.int64(num_items)
        keys = np.sort(train.users * self.num_items + train.items)
        self.known = keys[np.r_[True, keys[1:] != keys[:-1]]]  # sorted unique pair keys (np.unique is slower)
        per_user = np.bincount(self.known // self.num_items)
        if len(per_user) and per_user.max() >= num_items:
            user = int(per_user.argmax())
            raise NcfError(f"user index {user} interacted with all {num_items} items: no negatives to sample")

    def is_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.num_items + items
        pos = np.searchsorted(self.known, keys)
        pos[pos == len(self.known)] = 0
        return self.known[pos] == keys

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of ``users`` (rejection sampling, redrawing only collisions)."""
        items = rng.integers(0, self.num_items, size=len(users), dtype=np.int64)
        todo = np.flatnonzero(self.is_known(users, items))
        for _ in range(MAX_REDRAWS):
            if len(todo) == 0:
                return items
            items[todo] = rng.integers(0, self.num_items, size=len(todo), dtype=np.int64)
            todo = todo[self.is_known(users[todo], items[todo])]
        raise NcfError(f"negative sampling did not converge for {len(todo)} draws (users with almost every item)")


def implicit_examples(
    train: Interactions, sampler: NegativeSampler, negatives: int, rng: np.random.Generator
) -> EpochExamples:
    """Every positive once plus ``negatives`` fresh negatives per positive, in a shuffled order."""
    rows = len(train)
    items = np.empty(rows * (1 + negatives), dtype=index_dtype(sampler.num_items))
    items[:rows] = train.items
    for start in range(0, rows * negatives, SAMPLE_BLOCK):  # block of negatives, row-major over rounds
        stop = min(start + SAMPLE_BLOCK, rows * negatives)
        owners = train.users[np.arange(start, stop) % rows]
        items[rows + start : rows + stop] = sampler.sample(owners, rng)
    return EpochExamples(narrow(train.users), items, shuffled(len(items), rng))


def explicit_examples(train: Interactions, rng: np.random.Generator) -> EpochExamples:
    """The rated pairs with their ratings, in a shuffled order."""
    order = shuffled(len(train), rng)
    return EpochExamples(narrow(train.users), narrow(train.items), order, ratings=train.ratings.astype(np.float32))
