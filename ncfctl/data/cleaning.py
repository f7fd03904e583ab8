"""From a raw log to clean, indexed interactions: the documented rules, applied in this order.

1. **Order.** Rows are sorted by (user, timestamp) with a stable sort, so equal timestamps keep
   file order: of two interactions in the same second, the later line is the later one.
2. **Duplicates.** A (user, item) pair that occurs more than once keeps only its latest
   occurrence (its rating and time); the others are dropped and counted. A re-rating is the
   user's current opinion, and one pair must not be both a training and a test row.
3. **Positives.** With ``min_rating`` set, only rows rated ``>= min_rating`` remain; without it
   every interaction is a positive (NCF paper). Dropped low ratings still count as "interacted",
   so they are never sampled as evaluation negatives.
4. **Users.** Users left with fewer than ``MIN_PER_USER`` (3) interactions cannot give one
   training, one validation and one test row: they are dropped, counted and reported, not an
   error, so ``--min-rating 4`` works on real data; no user left at all is an error.
5. **Indices.** Remaining users and items get contiguous indices in sorted raw-id order (numeric
   for MovieLens, text for a user's table); the raw ids are kept so serving can translate back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ncfctl.data.dataset import Interactions
from ncfctl.data.rawlog import RawLog
from ncfctl.data.splits import MIN_PER_USER
from ncfctl.errors import NcfError


@dataclass
class CleanLog:
    rows: Interactions  # sorted by (user, timestamp, file order)
    user_ids: np.ndarray  # str, index -> raw id
    item_ids: np.ndarray
    known_keys: np.ndarray  # sorted user * num_items + item of every interaction, any rating (unique: deduped)
    counts: dict[str, int] = field(default_factory=dict)  # what each rule removed

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes in sorted raw-id order, and the raw ids as strings."""
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques.astype(str), dtype=object).astype(str)


def _renumber(codes: np.ndarray, keep: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Map the codes in ``keep`` onto 0..k-1 (order kept); returns (lookup, kept codes)."""
    present = np.zeros(size, dtype=bool)
    present[codes[keep]] = True
    lookup = np.full(size, -1, dtype=np.int64)
    lookup[present] = np.arange(int(present.sum()))
    return lookup, np.flatnonzero(present)


def clean_log(log: RawLog, min_rating: float | None, explicit: bool) -> CleanLog:
    """Apply the rules in the module docstring; ``explicit`` keeps ratings (else every rating is 1.0)."""
    if (explicit or min_rating is not None) and not log.has_ratings:
        what = "explicit mode" if explicit else f"--min-rating {min_rating}"
        raise NcfError(f"{what} needs ratings but {log.origin} has no rating column", hint="set --rating-col")
    frame = log.frame
    users, user_ids = _codes(frame["user"])
    items, item_ids = _codes(frame["item"])
    ratings = frame["rating"].to_numpy(np.float32)
    times = frame["timestamp"].to_numpy(np.int64)

    order = np.lexsort((times, users))  # stable: ties keep file order
    users, items, ratings, times = users[order], items[order], ratings[order], times[order]
    pair = users * np.int64(len(item_ids)) + items
    latest = ~pd.Series(pair).duplicated(keep="last").to_numpy()
    counts = {"raw_interactions": len(frame), "duplicates_dropped": int((~latest).sum())}
    users, items, ratings, times = users[latest], items[latest], ratings[latest], times[latest]
    interacted_users, interacted_items = users, items

    positive = np.ones(len(users), dtype=bool) if min_rating is None else ratings >= min_rating
    counts["below_min_rating"] = int((~positive).sum())
    per_user = np.bincount(users[positive], minlength=len(user_ids))
    keep = positive & (per_user[users] >= MIN_PER_USER)
    counts["users_dropped"] = int((per_user < MIN_PER_USER).sum())  # including users with no positive left
    counts["interactions_dropped"] = int((positive & ~keep).sum())
    if not keep.any():
        rule = f" rated >= {min_rating}" if min_rating is not None else ""
        raise NcfError(f"{log.origin}: no user has {MIN_PER_USER} or more interactions{rule} (nothing to split)")

    user_lookup, kept_users = _renumber(users, keep, len(user_ids))
    item_lookup, kept_items = _renumber(items, keep, len(item_ids))
    rows = Interactions(
        users=user_lookup[users[keep]],
        items=item_lookup[items[keep]],
        ratings=ratings[keep] if explicit else np.ones(int(keep.sum()), dtype=np.float32),
        timestamps=times[keep],
    )
    known_users = user_lookup[interacted_users]
    known_items = item_lookup[interacted_items]
    in_catalogue = (known_users >= 0) & (known_items >= 0)
    known_keys = np.sort(known_users[in_catalogue] * np.int64(len(kept_items)) + known_items[in_catalogue])
    return CleanLog(rows, user_ids[kept_users], item_ids[kept_items], known_keys, counts)
