"""The raw interaction log: what every source (a MovieLens file, a user's table, the generator) yields.

Sources differ in format but all reduce to the same four columns, in file order, so the cleaning
and splitting code is written once. Ids stay raw here (ints, strings or categoricals): they are
remapped to contiguous indices only after filtering, in :mod:`ncfctl.data.prepare`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

COLUMNS = ("user", "item", "rating", "timestamp")


@dataclass
class RawLog:
    """One interaction per row, in the source's order (row order breaks timestamp ties).

    ``frame`` has columns ``user``, ``item`` (raw ids), ``rating`` (float32; 1.0 when the source
    has no ratings) and ``timestamp`` (int64 seconds; 0 when the source has no times).
    ``origin`` names the file (or generator) in error messages.
    """

    frame: pd.DataFrame
    origin: str
    has_ratings: bool = True
    has_timestamps: bool = True

    def __len__(self) -> int:
        return len(self.frame)
