"""Where interaction logs come from: the MovieLens releases and a user's own CSV/Parquet table.

Every reader returns a :class:`~ncfctl.data.rawlog.RawLog`. For MovieLens, ``--source`` may be the
release ``.zip``, its unpacked folder (or the folder holding it), or the ratings file itself:

========================  =======================  ==========================================
dataset                   file in the archive      format
========================  =======================  ==========================================
ml-1m                     ``ml-1m/ratings.dat``    ``UserID::MovieID::Rating::Timestamp``
ml-100k                   ``ml-100k/u.data``       tab-separated ``user item rating timestamp``
ml-20m, ml-25m,           ``<name>/ratings.csv``   header ``userId,movieId,rating,timestamp``
ml-latest-small
========================  =======================  ==========================================

A user's table (``csv``: a ``.csv``/``.csv.gz`` file; ``parquet``: a file or a folder of them) names
its columns with ``--user-col --item-col [--rating-col] [--time-col]``. Its ids are kept as text
(so "007" stays "007"); times may be Unix seconds or ISO 8601 dates. Without a rating column every
row is a positive with rating 1.0; without a time column, file order alone decides "latest".
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ncfctl.config import DataConfig
from ncfctl.data import columns
from ncfctl.data.rawlog import RawLog
from ncfctl.data.textfile import SourceFile, TextLayout, read_text
from ncfctl.errors import NcfError

STANDARD = ("user", "item", "rating", "timestamp")
COLUMN_KEYS = {  # standard column -> the config key that names it in a user's table
    "user": "data.user_col",
    "item": "data.item_col",
    "rating": "data.rating_col",
    "timestamp": "data.time_col",
}


@dataclass(frozen=True)
class MovieLensRelease:
    member: str  # the ratings file inside the release folder
    layout: TextLayout


_ML_CSV = TextLayout(",", {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"})
MOVIELENS: dict[str, MovieLensRelease] = {
    "ml-1m": MovieLensRelease(
        "ratings.dat",
        TextLayout(":", {c: c for c in STANDARD}, fields=("user", "", "item", "", "rating", "", "timestamp")),
    ),
    "ml-100k": MovieLensRelease("u.data", TextLayout("\t", {c: c for c in STANDARD}, fields=STANDARD)),
    "ml-20m": MovieLensRelease("ratings.csv", _ML_CSV),
    "ml-25m": MovieLensRelease("ratings.csv", _ML_CSV),
    "ml-latest-small": MovieLensRelease("ratings.csv", _ML_CSV),
}


def _zip_member(archive: Path, member_name: str, dataset: str) -> SourceFile:
    """A release archive's ratings file, read in place (nothing is extracted, so no path can escape)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as exc:
        raise NcfError(f"{archive} is not a readable zip archive: {exc}") from None
    preferred = f"{dataset}/{member_name}"
    matches = [n for n in names if n == preferred] or [n for n in names if Path(n).name == member_name]
    if not matches:
        raise NcfError(
            f"{archive} has no {member_name} (expected {preferred} for data.dataset {dataset})",
            settings=("data.dataset",),
        )
    member = matches[0]

    def open_member():
        # The member stream keeps the archive's file open until the stream itself is closed.
        with zipfile.ZipFile(archive) as zf:
            return zf.open(member)

    return SourceFile(f"{archive}:{member}", open_member)


def _plain_file(path: Path) -> SourceFile:
    return SourceFile(str(path), lambda: open(path, "rb"))


def locate_movielens(dataset: str, source: Path) -> SourceFile:
    """The ratings file of a MovieLens release, given the ``.zip``, its folder (or parent) or the file."""
    member = MOVIELENS[dataset].member
    if not source.exists():
        raise NcfError(f"data.source {source} does not exist", settings=("data.source",))
    if source.is_dir():
        for candidate in (source / member, source / dataset / member):
            if candidate.is_file():
                return _plain_file(candidate)
        raise NcfError(
            f"{source} has no {member} (nor {dataset}/{member}) for data.dataset {dataset}", settings=("data.dataset",)
        )
    if zipfile.is_zipfile(source):
        return _zip_member(source, member, dataset)
    return _plain_file(source)


def read_movielens(dataset: str, source: Path) -> RawLog:
    src = locate_movielens(dataset, source)
    frame, _ = read_text(src, MOVIELENS[dataset].layout)
    return RawLog(frame, origin=src.origin)


def _user_columns(cfg: DataConfig) -> dict[str, str]:
    names = {"user": cfg.user_col, "item": cfg.item_col, "rating": cfg.rating_col, "timestamp": cfg.time_col}
    return {standard: name for standard, name in names.items() if name}


def _finish_user_table(frame: pd.DataFrame, origin: str, locate) -> RawLog:
    """Fill absent rating/time columns and convert times; ``locate(mask, what)`` names a bad row."""
    has_ratings = "rating" in frame.columns
    has_timestamps = "timestamp" in frame.columns
    if not has_ratings:
        frame["rating"] = np.float32(1.0)
    if has_timestamps:
        seconds, bad = columns.to_epoch_seconds(frame["timestamp"])
        if bad.any():
            raise locate(bad, "timestamp")
        frame["timestamp"] = seconds
    else:
        frame["timestamp"] = np.int64(0)
    return RawLog(frame[list(STANDARD)], origin=origin, has_ratings=has_ratings, has_timestamps=has_timestamps)


def read_csv_table(cfg: DataConfig, path: Path) -> RawLog:
    """A user's CSV (any pandas/pyarrow-readable delimiter-separated file with a header line)."""
    if not path.is_file():
        raise NcfError(
            f"data.source {path} is not a file (data.dataset csv reads one CSV file)",
            settings=("data.source", "data.dataset"),
        )
    layout = TextLayout(",", _user_columns(cfg), string_ids=True, column_keys=COLUMN_KEYS)
    frame, diagnose = read_text(_plain_file(path), layout)
    return _finish_user_table(frame, str(path), lambda bad, what: diagnose())


def read_parquet_table(cfg: DataConfig, path: Path) -> RawLog:
    """A user's Parquet file (or folder of files); a bad value is named by its 1-based row."""
    if not path.exists():
        raise NcfError(f"data.source {path} does not exist", settings=("data.source",))
    wanted = _user_columns(cfg)
    try:
        dataset = pq.ParquetDataset(path)
        present = dataset.schema.names
        for standard, name in wanted.items():
            if name not in present:
                raise NcfError(
                    f"{path} has no column '{name}' for the {standard} (columns: {', '.join(present)})",
                    hint=f"name it with {COLUMN_KEYS[standard]}",
                    settings=(COLUMN_KEYS[standard],),
                )
        ids = [name for standard, name in wanted.items() if standard in ("user", "item")]
        table = pq.read_table(path, columns=list(wanted.values()), read_dictionary=ids)
    except (pa.ArrowException, OSError) as exc:
        raise NcfError(f"{path} is not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    frame = table.to_pandas().rename(columns={name: standard for standard, name in wanted.items()})
    if frame.empty:
        raise NcfError(f"{path} is empty: no interactions")

    def at_row(bad: np.ndarray, what: str) -> NcfError:
        row = int(np.flatnonzero(bad)[0])
        return NcfError(f"{path} row {row + 1}: {what} {frame[what].iloc[row]!r} is not valid")

    for standard in ("user", "item"):
        empty = columns.empty_ids(frame[standard])
        if empty.any():
            raise at_row(empty, standard)
        if not pd.api.types.is_integer_dtype(frame[standard].dtype):
            frame[standard] = frame[standard].astype("string").astype("category")
    if "rating" in frame.columns:
        ratings, bad = columns.to_ratings(frame["rating"])
        if bad.any():
            raise at_row(bad, "rating")
        frame["rating"] = ratings
    return _finish_user_table(frame, str(path), at_row)


def read_source(cfg: DataConfig, source: Path) -> RawLog:
    """The raw log of ``cfg.dataset`` (not ``synthetic``) read from a local ``source``."""
    if cfg.dataset in MOVIELENS:
        return read_movielens(cfg.dataset, source)
    if cfg.dataset == "csv":
        return read_csv_table(cfg, source)
    if cfg.dataset == "parquet":
        return read_parquet_table(cfg, source)
    raise NcfError(f"data.dataset '{cfg.dataset}' has no file reader")
