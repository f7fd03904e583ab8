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


@dataclass
class EpochExamples:
    """Shuffled ``(user, item, target)`` arrays: target is 1/0 (implicit) or the rating (explicit)."""

    users: np.ndarray
    items: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


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
    """Every positive once plus ``negatives`` fresh negatives per positive, shuffled."""
    neg_users = np.repeat(train.users, negatives)
    users = np.concatenate([train.users, neg_users])
    items = np.concatenate([train.items, sampler.sample(neg_users, rng)])
    targets = np.concatenate([np.ones(len(train), np.float32), np.zeros(len(neg_users), np.float32)])
    order = rng.permutation(len(users))
    return EpochExamples(users[order], items[order], targets[order])


def explicit_examples(train: Interactions, rng: np.random.Generator) -> EpochExamples:
    """The rated pairs with their ratings, shuffled."""
    order = rng.permutation(len(train))
    return EpochExamples(train.users[order], train.items[order], train.ratings[order].astype(np.float32))
