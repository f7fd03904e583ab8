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
   for integer ids, text order for text ids); the raw ids are kept so serving can translate back.
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
    known_keys: np.ndarray  # sorted unique user * num_items + item of every interaction, any rating
    counts: dict[str, int] = field(default_factory=dict)  # what each rule removed

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes in sorted raw-id order, and the raw ids as strings."""
    if isinstance(values.dtype, pd.CategoricalDtype):  # text ids: factorize follows category order
        values = values.cat.reorder_categories(values.cat.categories.sort_values())
    codes, uniques = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(uniques.astype(str), dtype=object).astype(str)


def _renumber(codes: np.ndarray, keep: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Map the codes in ``keep`` onto 0..k-1 (order kept); returns (lookup, kept codes)."""
    present = np.zeros(size, dtype=bool)
    present[codes[keep]] = True
    lookup = np.full(size, -1, dtype=np.int64)
    lookup[present] = np.arange(int(present.sum()))
    return lookup, np.flatnonzero(present)


def user_time_order(users: np.ndarray, times: np.ndarray, num_users: int) -> np.ndarray:
    """Row order by (user, time), stable so that equal times keep file order.

    One stable argsort of a combined int64 key is ~3x faster than ``np.lexsort`` on 20M rows;
    lexsort remains for time spans too wide to pack beside the user index.
    """
    if not len(times):
        return np.arange(0)
    first = times.min()
    span = int(times.max()) - int(first) + 1  # Python ints: the int64 difference can overflow
    if num_users * span < 2**62:
        return np.argsort(users * np.int64(span) + (times - first), kind="stable")
    return np.lexsort((times, users))


def clean_log(log: RawLog, min_rating: float | None, explicit: bool) -> CleanLog:
    """Apply the rules in the module docstring; ``explicit`` keeps ratings (else every rating is 1.0)."""
    if (explicit or min_rating is not None) and not log.has_ratings:
        what = "explicit mode" if explicit else f"data.min_rating {min_rating}"
        raise NcfError(
            f"{what} needs ratings but {log.origin} has no rating column",
            hint="set data.rating_col",
            settings=("data.min_rating", "data.rating_col"),
        )
    frame = log.frame
    users, user_ids = _codes(frame["user"])
    items, item_ids = _codes(frame["item"])
    ratings = frame["rating"].to_numpy(np.float32)
    times = frame["timestamp"].to_numpy(np.int64)

    order = user_time_order(users, times, len(user_ids))
    users, items, ratings, times = users[order], items[order], ratings[order], times[order]
    # A stable sort by pair puts each pair's occurrences in time order: the last one is the latest.
    # The same sort yields every known pair, sorted (cheaper than hashing 20M keys, then sorting).
    pair = users * np.int64(len(item_ids)) + items
    by_pair = np.argsort(pair, kind="stable")
    sorted_pairs = pair[by_pair]
    run_end = np.r_[sorted_pairs[1:] != sorted_pairs[:-1], True] if len(pair) else np.zeros(0, dtype=bool)
    known_pairs = sorted_pairs[run_end]
    latest = np.zeros(len(pair), dtype=bool)
    latest[by_pair[run_end]] = True
    del pair, by_pair, sorted_pairs  # ~0.5 GiB at 20M rows, not needed below
    counts = {"raw_interactions": len(frame), "duplicates_dropped": int((~latest).sum())}
    users, items, ratings, times = users[latest], items[latest], ratings[latest], times[latest]

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
    # Renumbering keeps the order of users and of items, so the remapped pairs stay sorted.
    known_users = user_lookup[known_pairs // len(item_ids)]
    known_items = item_lookup[known_pairs % len(item_ids)]
    in_catalogue = (known_users >= 0) & (known_items >= 0)
    known_keys = known_users[in_catalogue] * np.int64(len(kept_items)) + known_items[in_catalogue]
    return CleanLog(rows, user_ids[kept_users], item_ids[kept_items], known_keys, counts)
