"""Column conversions shared by the text and Parquet readers, vectorised and failure-locating.

Each converter returns the converted values plus a boolean mask of the rows it could not
convert, so the caller can name the first bad line or row instead of failing somewhere deep.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INT64_LIMIT = 2.0**63  # |value| at or past this does not fit int64 (casting would wrap to the minimum)


def _not_int64(numbers: np.ndarray) -> np.ndarray:
    """Rows that are not finite or would not fit an int64 (they would silently wrap when cast)."""
    return ~np.isfinite(numbers) | (numbers >= INT64_LIMIT) | (numbers < -INT64_LIMIT)


def to_ratings(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Finite float32 ratings; ``bad`` marks non-numeric, missing, NaN and infinite values."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(numbers)
    return np.where(bad, 0.0, numbers).astype(np.float32), bad


def to_epoch_seconds(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Int64 Unix seconds from integers, floats, datetimes or ISO 8601 text; ``bad`` marks the rest."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        stamps = pd.to_datetime(values, utc=True)
    elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        numbers = values.to_numpy(np.float64, na_value=np.nan)
        bad = _not_int64(numbers)
        return np.floor(np.where(bad, 0.0, numbers)).astype(np.int64), bad
    else:
        text = values.astype("string")
        numbers = pd.to_numeric(text, errors="coerce")
        if not numbers.isna().any():
            return to_epoch_seconds(numbers)
        stamps = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
        stamps = stamps.where(numbers.isna(), pd.to_datetime(numbers, unit="s", utc=True, errors="coerce"))
    bad = stamps.isna().to_numpy()
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.fillna(0).to_numpy(np.int64), bad


def to_integer_ids(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer ids (MovieLens); ``bad`` marks missing, non-numeric, fractional and out-of-int64 values."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = _not_int64(numbers) | (numbers != np.floor(numbers))
    return np.where(bad, 0, numbers).astype(np.int64), bad


def empty_ids(values: pd.Series) -> np.ndarray:
    """Rows whose id is missing or blank text."""
    return (values.isna() | (values.astype("string").str.strip() == "")).to_numpy(bool, na_value=True)
