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
        """Read a dataset folder; sizes come from the manifest (cold items have no rows)."""
        try:
            frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in SPLIT_FILES}
            negatives = {name: np.load(folder / f"{name}_negatives.npy") for name in ("val", "test")}
            user_ids = pd.read_parquet(folder / "user_ids.parquet")["raw_id"].to_numpy()
            item_ids = pd.read_parquet(folder / "item_ids.parquet")["raw_id"].to_numpy()
        except (OSError, KeyError) as exc:
            raise NcfError(f"dataset folder {folder} is incomplete: {exc}") from None
        return cls(
            num_users=num_users,
            num_items=num_items,
            train=Interactions.from_frame(frames["train"]),
            val=EvalSplit(Interactions.from_frame(frames["val"]), negatives["val"]),
            test=EvalSplit(Interactions.from_frame(frames["test"]), negatives["test"]),
            user_ids=user_ids,
            item_ids=item_ids,
            explicit=explicit,
        )


def load_dataset(artifact) -> InteractionData:  # artifact: ncfctl.workspace.Artifact
    """Load a dataset artifact; its manifest ``info`` carries the sizes and the task."""
    info = artifact.manifest.info
    return InteractionData.load(
        artifact.path, int(info["num_users"]), int(info["num_items"]), bool(info.get("explicit", False))
    )
