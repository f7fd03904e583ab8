"""One output object per command: Rich for people, JSON for scripts.

In JSON mode stdout carries exactly one JSON document (the command's result) and everything
else (progress bars, notes) goes to stderr, so ``ncfctl train --json | jq`` works.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from ncfctl.cli.progress import RichProgress, progress_bars


def artifact_fields(artifact: Any) -> dict[str, Any]:
    """The keys every command that creates or shows an artifact prints first in ``--json``: id, kind, path."""
    return {"id": artifact.id, "kind": artifact.kind, "path": str(artifact.path)}


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return "" if value is None else str(value)


class Output:
    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        self.stdout = Console(soft_wrap=True)
        self.stderr = Console(stderr=True)

    @property
    def _human(self) -> Console:
        """Where human-readable notes go: stdout normally, stderr when stdout is JSON."""
        return self.stderr if self.json_mode else self.stdout

    def info(self, message: str) -> None:
        self._human.print(message, highlight=False)

    def warn(self, message: str) -> None:
        self.stderr.print(f"[yellow]warning:[/yellow] {message}", highlight=False)

    def success(self, message: str) -> None:
        self._human.print(f"[green]✓[/green] {message}", highlight=False)

    def progress(self, transient: bool = False) -> AbstractContextManager[RichProgress]:
        """Rich progress bars on stderr, for every long step (pass what it yields to the service)."""
        return progress_bars(self.stderr, transient)

    def status(self, message: str) -> AbstractContextManager:
        """A one-line spinner on stderr (e.g. while polling a cloud job)."""
        return self.stderr.status(message)

    def table(
        self, rows: Sequence[Mapping[str, Any]], title: str | None = None, columns: Iterable[str] | None = None
    ) -> None:
        """Render dict rows as a Rich table (human mode only: JSON mode prints via ``result``)."""
        if self.json_mode:
            return
        columns = list(columns) if columns is not None else list(rows[0].keys()) if rows else []
        cells = [[_fmt(row.get(col)) for col in columns] for row in rows]
        texts = [[col, *(line[index] for line in cells)] for index, col in enumerate(columns)]
        longest = [max(_longest_word(text) for text in column) for column in texts]
        # borders (one more than the columns) and a space either side of each cell
        narrowest = sum(longest) + 3 * len(columns) + 1
        if len(columns) > 2 and self.stdout.is_terminal and narrowest > self.stdout.width:
            # a terminal too narrow for the table's whole words would wrap its lines mid-word: one
            # key/value table per row instead, named by its first cell
            if title:
                self.stdout.print(title, highlight=False)
            for line in cells:
                self.kv(dict(zip(columns[1:], line[1:], strict=True)), title=f"{columns[0]} {line[0]}")
            return
        table = Table(title=title, title_justify="left")
        for col, column, width in zip(columns, texts, longest, strict=True):
            # a cell wraps between words, never inside one: an id or a path stays whole and copyable;
            # a column of single words cannot wrap at all, so Rich narrows the columns that can
            table.add_column(col, min_width=width, no_wrap=all(len(text.split()) <= 1 for text in column))
        for line in cells:
            table.add_row(*line)
        # in a pipe (no terminal to wrap it) a table wider than COLUMNS is printed whole, not cropped
        self.stdout.print(table, crop=False)

    def kv(self, mapping: Mapping[str, Any], title: str | None = None) -> None:
        """A two-column key/value table."""
        self.table([{"key": k, "value": v} for k, v in mapping.items()], title=title, columns=["key", "value"])

    def result(self, payload: Mapping[str, Any], render: Callable[[], None] | None = None) -> None:
        """The command's result: JSON on stdout, or ``render()`` (default: a key/value table)."""
        if self.json_mode:
            print(json.dumps(payload, indent=2, default=str))
        elif render is not None:
            render()
        else:
            self.kv({k: v for k, v in payload.items() if not isinstance(v, (dict, list))})
