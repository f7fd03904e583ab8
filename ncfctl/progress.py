"""How a long-running service says what it is doing, without knowing who (if anyone) watches.

A service takes ``progress: Progress = NO_PROGRESS`` and opens one :class:`Task` per unit of work
(an epoch loop, an upload, a cloud job), then advances it, sets its status text and finishes it.
The base classes here do nothing with those calls, so a library caller gets silence and no service
needs an ``if progress`` guard. The CLI passes an adapter that draws the tasks as Rich bars
(:mod:`ncfctl.cli.progress`); the domain never imports Rich.

:meth:`Progress.log` is the one exception to silence: it carries lines the user asked to see (a
cloud job's own log), which by default go to stderr as they did before there was a display.
"""

from __future__ import annotations

import sys


class Task:
    """One row of progress: a description, a position out of an optional total, a status text.

    This base ignores every call; :class:`Progress` subclasses return their own tasks.
    """

    def advance(self, amount: float = 1, status: str | None = None) -> None:
        """Move forward by ``amount`` (and replace the status text when given)."""

    def update(self, *, completed: float | None = None, total: float | None = None, status: str | None = None) -> None:
        """Set the position, the total (``None`` keeps it) or the status text."""

    def finish(self, status: str | None = None) -> None:
        """Mark the work done (a task without a total shows as complete too)."""

    def remove(self) -> None:
        """Drop the row (e.g. a per-batch bar once its epochs are over)."""


class Progress:
    """Where services report long work. This base reports nowhere: the default for library callers."""

    def task(self, description: str, total: float | None = None, status: str = "") -> Task:
        """Start a row of progress; ``total=None`` means the amount of work is unknown."""
        return Task()

    def log(self, line: str) -> None:
        """Show one line of text to the user as plain text (never markup), e.g. a cloud job's log."""
        print(line, file=sys.stderr, flush=True)


NO_PROGRESS = Progress()
