"""Delimited ratings files: one fast pyarrow pass, and a text pass that names the first bad line.

pyarrow parses and converts every column in vectorised C++ (a 20M-row file in seconds), but its
conversion errors carry no line number. So only when the fast pass fails, or leaves empty fields,
the file is read twice more: a single-threaded pyarrow pass finds the first line with the wrong
number of fields (with its physical line number), then pandas reads the lines before it as text,
in chunks, to find the first bad value. The earliest problem becomes the one-line error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from ncfctl.data import columns
from ncfctl.errors import NcfError

DIAGNOSE_CHUNK_ROWS = 1 << 20  # rows per text chunk when hunting for the first bad line


@dataclass
class SourceFile:
    """A file to parse, possibly a zip member; ``open()`` gives a fresh binary stream each time."""

    origin: str  # named in errors: "path" or "archive.zip:member"
    open: Callable[[], BinaryIO]


@dataclass(frozen=True)
class TextLayout:
    """How a delimited ratings file is laid out.

    ``columns`` maps each standard column present (``user item rating timestamp``) to its name in
    the file: the header's name or, for a headerless file, its name in ``fields``. ``fields`` lists
    every position of a headerless file; ``""`` marks a position that must be empty (ml-1m's
    ``::`` is read as ``:`` with an empty field between, pyarrow taking one-character delimiters).
    """

    delimiter: str
    columns: dict[str, str]
    fields: tuple[str, ...] = ()
    string_ids: bool = False  # a user's table: ids are text ("u042"); MovieLens ids are integers
    column_keys: dict[str, str] | None = None  # standard column -> the config key that renames it

    @property
    def header(self) -> bool:
        return not self.fields

    def physical_names(self) -> list[str]:
        return [name or f"_sep{i}" for i, name in enumerate(self.fields)]

    def separators(self) -> list[str]:
        return [name for name, role in zip(self.physical_names(), self.fields, strict=True) if not role]


def _header_names(src: SourceFile, layout: TextLayout) -> list[str]:
    with src.open() as fh:
        line = fh.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")  # Excel writes a BOM
    if not line.strip():
        raise NcfError(f"{src.origin} is empty: no header line and no interactions")
    return [name.strip().strip('"') for name in line.split(layout.delimiter)]


def _check_header(src: SourceFile, layout: TextLayout) -> None:
    present = _header_names(src, layout)
    for standard, name in layout.columns.items():
        if name not in present:
            message = f"{src.origin} has no column '{name}' for the {standard} (line 1 has: {', '.join(present)})"
            key = (layout.column_keys or {}).get(standard)
            if key is None:
                raise NcfError(message)
            raise NcfError(message, hint=f"name it with {key}", settings=(key,))


def _arrow_types(layout: TextLayout) -> dict[str, pa.DataType]:
    id_type = pa.dictionary(pa.int32(), pa.string()) if layout.string_ids else pa.int64()
    types = {layout.columns["user"]: id_type, layout.columns["item"]: id_type}
    if "rating" in layout.columns:
        types[layout.columns["rating"]] = pa.float32()
    if "timestamp" in layout.columns and not layout.string_ids:
        types[layout.columns["timestamp"]] = pa.int64()  # user tables: pyarrow infers ints or datetimes
    types.update({name: pa.null() for name in layout.separators()})  # anything but empty fails
    return types


def _read_fast(src: SourceFile, layout: TextLayout) -> pd.DataFrame | None:
    """One pyarrow pass; ``None`` when the file has a problem the text pass must locate."""
    wanted = list(layout.columns.values())
    read_options = pacsv.ReadOptions(column_names=layout.physical_names() or None, block_size=16 << 20)
    convert = pacsv.ConvertOptions(
        column_types=_arrow_types(layout),
        include_columns=wanted + layout.separators(),
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    try:
        with src.open() as fh:
            table = pacsv.read_csv(fh, read_options, pacsv.ParseOptions(delimiter=layout.delimiter), convert)
    except pa.ArrowInvalid:
        return None
    if any(table.column(name).null_count for name in wanted):
        return None
    frame = table.select(wanted).to_pandas()
    if "rating" in layout.columns and not np.isfinite(frame[layout.columns["rating"]].to_numpy()).all():
        return None  # "nan" / "inf" parse as floats but are not ratings
    return frame


def _first_bad_shape(src: SourceFile, layout: TextLayout) -> tuple[int, NcfError] | None:
    """The first line with the wrong number of fields, as ``(line, error)``.

    pyarrow reports such rows with their physical line number when read on one thread with
    empty lines kept; columns are read as text so no conversion can stop the pass earlier.
    """
    found = []

    def on_invalid_row(row) -> str:
        found.append(row)
        return "error"  # stop at the first one

    names = list(layout.columns.values()) + layout.separators()
    try:
        with src.open() as fh:
            pacsv.read_csv(
                fh,
                pacsv.ReadOptions(column_names=layout.physical_names() or None, use_threads=False),
                pacsv.ParseOptions(
                    delimiter=layout.delimiter, invalid_row_handler=on_invalid_row, ignore_empty_lines=False
                ),
                pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()), include_columns=names),
            )
    except pa.ArrowInvalid:
        pass
    if not found:
        return None
    row = found[0]
    line = row.number or 0
    return line, NcfError(
        f"{src.origin} line {line}: expected {row.expected_columns} fields, found {row.actual_columns}"
    )


def _first_bad_value(chunk: pd.DataFrame, layout: TextLayout) -> tuple[int, str] | None:
    """``(row, message)`` of the earliest bad value in a chunk read as text, or ``None``."""
    blank = (chunk == "").all(axis=1).to_numpy()  # empty lines: the fast pass skips them too
    found: list[tuple[int, str]] = []

    def first(mask: np.ndarray, describe: Callable[[int], str]) -> None:
        rows = np.flatnonzero(mask & ~blank)
        if len(rows):
            found.append((int(rows[0]), describe(int(rows[0]))))

    for name in layout.separators():
        values = chunk[name]
        first((values != "").to_numpy(), lambda r, v=values: f"unexpected text {v.iloc[r]!r}")
    for standard, name in layout.columns.items():
        text = chunk[name]
        empty = columns.empty_ids(text)
        first(empty, lambda r, s=standard: f"empty {s} field")
        usable = text.where(~empty, "0")
        if standard == "rating":
            bad, what = columns.to_ratings(usable)[1], "a finite number"
        elif standard == "timestamp" and layout.string_ids:
            bad, what = columns.to_epoch_seconds(usable)[1], "Unix seconds or an ISO 8601 date"
        elif not layout.string_ids:
            bad, what = columns.to_integer_ids(usable)[1], "an integer"
        else:
            continue
        first(bad, lambda r, s=standard, t=text, w=what: f"{s} {t.iloc[r]!r} is not {w}")
    return min(found) if found else None


def _scan_values(src: SourceFile, layout: TextLayout, rows: int | None) -> NcfError | None:
    """Read the first ``rows`` data lines (all when ``None``) as text; the first bad value, or ``None``."""
    skip = 1 if layout.header else 0
    names = layout.physical_names() or _header_names(src, layout)
    seen = 0
    with src.open() as fh:
        reader = pd.read_csv(
            fh,
            sep=layout.delimiter,
            header=None,
            names=names,
            skiprows=skip,
            nrows=rows,
            usecols=list(layout.columns.values()) + layout.separators(),
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            chunksize=DIAGNOSE_CHUNK_ROWS,
        )
        for chunk in reader:
            problem = _first_bad_value(chunk, layout)
            if problem is not None:
                return NcfError(f"{src.origin} line {skip + seen + problem[0] + 1}: {problem[1]}")
            seen += len(chunk)
    return None if seen else NcfError(f"{src.origin} is empty: no interactions")


def _diagnose(src: SourceFile, layout: TextLayout) -> NcfError:
    """The error for a file the fast pass rejected: its first malformed line or bad value."""
    shape = _first_bad_shape(src, layout)
    rows_before = None if shape is None else shape[0] - 1 - (1 if layout.header else 0)
    try:
        value_error = _scan_values(src, layout, rows_before) if rows_before != 0 else None
    except (pd.errors.ParserError, ValueError) as exc:
        return NcfError(f"{src.origin}: cannot parse: {str(exc).splitlines()[0]}")
    if value_error is not None:
        return value_error
    return shape[1] if shape else NcfError(f"{src.origin}: cannot parse (no bad line found)")


def read_text(src: SourceFile, layout: TextLayout) -> tuple[pd.DataFrame, Callable[[], NcfError]]:
    """Parse a delimited file into the standard columns of ``layout``, in file order.

    Also returns ``diagnose()``, which re-reads the file as text and names its first bad line:
    the caller uses it when a later conversion (user-table timestamps) finds a bad value.
    """
    if layout.header:
        _check_header(src, layout)
    frame = _read_fast(src, layout)
    if frame is None:
        raise _diagnose(src, layout)
    if frame.empty:
        raise NcfError(f"{src.origin} is empty: no interactions")
    frame = frame.rename(columns={name: standard for standard, name in layout.columns.items()})
    return frame, lambda: _diagnose(src, layout)
