"""The dataset artifact's contract: what ``ncfctl data`` writes and every later step reads.

Files in a dataset artifact folder (all compact columnar / numpy formats):

* ``train.parquet``, ``val.parquet``, ``test.parquet``: columns ``user``, ``item`` (contiguous int64
  indices), ``rating`` (float32; 1.0 for implicit data), ``timestamp`` (int64 seconds).
  ``val`` is the validation holdout carved from the training data (used to pick the epoch),
  ``test`` the held-out evaluation rows.
* ``val_negatives.npy``, ``test_negatives.npy``: int64 ``(rows, E)``, the sampled evaluation
  negatives of each row of ``val``/``test`` (items that user never interacted with).
* ``user_ids.parquet``, ``item_ids.parquet``: column ``raw_id`` (string); row ``i`` is the original
  id of index ``i``, so serving can translate ids back.

Training negatives are not stored: trainers sample them every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ncfctl.errors import NcfError

SPLIT_FILES = ("train", "val", "test")


@dataclass
class Interactions:
    """Parallel arrays of (user, item, rating, timestamp) rows."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Interactions:
        return cls(
            users=frame["user"].to_numpy(np.int64),
            items=frame["item"].to_numpy(np.int64),
            ratings=frame["rating"].to_numpy(np.float32),
            timestamps=frame["timestamp"].to_numpy(np.int64),
        )

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"user": self.users, "item": self.items, "rating": self.ratings, "timestamp": self.timestamps}
        )

    def subset(self, mask_or_index: np.ndarray) -> Interactions:
        return Interactions(
            self.users[mask_or_index],
            self.items[mask_or_index],
            self.ratings[mask_or_index],
            self.timestamps[mask_or_index],
        )


@dataclass
class EvalSplit:
    """Held-out rows plus their sampled negatives (``negatives[r]`` belongs to row ``r``)."""

    rows: Interactions
    negatives: np.ndarray  # int64 (len(rows), E)


@dataclass
class InteractionData:
    num_users: int
    num_items: int
    train: Interactions
    val: EvalSplit
    test: EvalSplit
    user_ids: np.ndarray  # raw ids (str), index -> original id
    item_ids: np.ndarray
    explicit: bool = False

    def seen_items(self, include_val: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """CSR ``(indptr, indices)`` of each user's known items (train, and val by default).

        Used to exclude known items from full-ranking evaluation and from served top-K lists.
        Indices are sorted and unique within each user.
        """
        users = self.train.users
        items = self.train.items
        if include_val:
            users = np.concatenate([users, self.val.rows.users])
            items = np.concatenate([items, self.val.rows.items])
        keys = np.sort(users * np.int64(self.num_items) + items)
        keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # dedupe; np.unique (numpy 2.4) is ~20x slower
        key_users = keys // self.num_items
        indptr = np.zeros(self.num_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(key_users, minlength=self.num_users), out=indptr[1:])
        return indptr, (keys % self.num_items).astype(np.int64)

    def save(self, folder: Path) -> None:
        """Write the files listed in the module docstring into ``folder`` (a staging folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.train.to_frame().to_parquet(folder / "train.parquet", index=False)
        for name, split in (("val", self.val), ("test", self.test)):
            split.rows.to_frame().to_parquet(folder / f"{name}.parquet", index=False)
            np.save(folder / f"{name}_negatives.npy", split.negatives.astype(np.int64))
        pd.DataFrame({"raw_id": self.user_ids.astype(str)}).to_parquet(folder / "user_ids.parquet", index=False)
        pd.DataFrame({"raw_id": self.item_ids.astype(str)}).to_parquet(folder / "item_ids.parquet", index=False)

    @classmethod
    def load(cls, folder: Path, num_users: int, num_items: int, explicit: bool = False) -> InteractionData:
        """Read a dataset folder; sizes come from the manifest (cold items have no rows).

        Every file is checked against the contract in the module docstring (columns, index
        ranges, negatives' shape), so a damaged or foreign file is one line naming it rather than
        an index error deep in training or, worse, scores for the wrong rows.
        """
        frames = {name: _read_split(folder / f"{name}.parquet", num_users, num_items) for name in SPLIT_FILES}
        if not len(frames["train"]):
            raise NcfError(f"{folder / 'train.parquet'} has no rows: nothing to train on")
        negatives = {
            name: _read_negatives(folder / f"{name}_negatives.npy", len(frames[name]), num_items)
            for name in ("val", "test")
        }
        return cls(
            num_users=num_users,
            num_items=num_items,
            train=frames["train"],
            val=EvalSplit(frames["val"], negatives["val"]),
            test=EvalSplit(frames["test"], negatives["test"]),
            user_ids=_read_raw_ids(folder / "user_ids.parquet", num_users),
            item_ids=_read_raw_ids(folder / "item_ids.parquet", num_items),
            explicit=explicit,
        )


def _read_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise NcfError(f"dataset file {path} is missing") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise NcfError(f"{path} is not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise NcfError(f"{path} lacks column(s) {missing} (it has {list(frame.columns)})")
    return frame


def _read_split(path: Path, num_users: int, num_items: int) -> Interactions:
    frame = _read_parquet(path, ["user", "item", "rating", "timestamp"])
    for column, size in (("user", num_users), ("item", num_items)):
        values = frame[column]
        if not pd.api.types.is_integer_dtype(values.dtype):
            raise NcfError(f"{path}: column '{column}' holds {values.dtype}, not integer indices")
        if len(values) and (values.min() < 0 or values.max() >= size):
            bad = values[(values < 0) | (values >= size)].iloc[0]
            raise NcfError(f"{path}: column '{column}' holds {bad}, outside [0, {size}) that the manifest gives")
    if not pd.api.types.is_integer_dtype(frame["timestamp"].dtype):
        raise NcfError(f"{path}: column 'timestamp' holds {frame['timestamp'].dtype}, not int64 seconds")
    ratings = frame["rating"]
    if not pd.api.types.is_numeric_dtype(ratings.dtype) or not np.isfinite(ratings.to_numpy(np.float64)).all():
        raise NcfError(f"{path}: column 'rating' must hold finite numbers")
    return Interactions.from_frame(frame)


def _read_negatives(path: Path, rows: int, num_items: int) -> np.ndarray:
    try:
        negatives = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise NcfError(f"dataset file {path} is missing") from None
    except (OSError, ValueError, EOFError) as exc:
        raise NcfError(f"{path} is not a readable .npy file: {str(exc).splitlines()[0]}") from None
    if negatives.ndim != 2 or negatives.shape[0] != rows or not np.issubdtype(negatives.dtype, np.integer):
        raise NcfError(
            f"{path} holds {negatives.dtype} {negatives.shape}; expected integer ({rows}, negatives per row)"
        )
    if negatives.size and (negatives.min() < 0 or negatives.max() >= num_items):
        raise NcfError(f"{path} holds item indices outside [0, {num_items})")
    return negatives.astype(np.int64, copy=False)


def _read_raw_ids(path: Path, count: int) -> np.ndarray:
    ids = _read_parquet(path, ["raw_id"])["raw_id"].to_numpy()
    if len(ids) != count:
        raise NcfError(f"{path} holds {len(ids)} ids; the manifest gives {count}")
    return ids


def load_dataset(artifact) -> InteractionData:  # artifact: ncfctl.workspace.Artifact
    """Load a dataset artifact after checking its files against the manifest; ``info`` carries the sizes."""
    info = artifact.manifest.info
    if info.num_users is None or info.num_items is None:
        raise NcfError(f"dataset {artifact.id}: manifest lacks integer num_users/num_items ({artifact.path})")
    return InteractionData.load(artifact.verify(), info.num_users, info.num_items, info.explicit)
