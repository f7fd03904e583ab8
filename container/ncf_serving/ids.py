"""Raw ids (from the user's own interaction logs) <-> the model's contiguous indices.

Clients speak the ids of their data (``ids.npz``), never the model's internal indices. JSON
integers and strings are both accepted (``42`` and ``"42"`` name the same user). When every raw
id of a table is a plain decimal integer, ids go back to clients as JSON integers, otherwise as
strings, so a MovieLens client gets ``1196``, not ``"1196"``.
"""

from __future__ import annotations

import numpy as np


class IdMap:
    """One table of raw ids (``raw[index]``) with the reverse lookup."""

    def __init__(self, raw_ids: np.ndarray):
        self.raw = [str(value) for value in raw_ids.tolist()]
        self.index = {raw: i for i, raw in enumerate(self.raw)}
        numeric = all(_is_canonical_int(raw) for raw in self.raw)
        self.public: list[int | str] = [int(raw) for raw in self.raw] if numeric else list(self.raw)

    def lookup(self, raw_id: int | str) -> int | None:
        """The index of ``raw_id``, or None if the data never had it."""
        return self.index.get(str(raw_id))

    def to_public(self, indices: np.ndarray) -> list[int | str]:
        return [self.public[i] for i in indices.tolist()]


def _is_canonical_int(text: str) -> bool:
    """True for ``"0"``, ``"42"``, ``"-3"``; false for ``"007"`` or ``"4.0"`` (would not round-trip)."""
    try:
        return str(int(text)) == text
    except ValueError:
        return False
