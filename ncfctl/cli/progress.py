"""The domain's :class:`~ncfctl.progress.Progress` drawn as Rich progress bars on stderr.

Every command that runs a long service opens :func:`progress_bars` and passes what it yields to the
service; this is the only place that knows Rich's task API and the column layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import (
    Progress as RichBars,
)

from ncfctl.progress import Progress, Task


class RichTask(Task):
    """One Rich bar; remembers its total so :meth:`finish` can fill it."""

    def __init__(self, bars: RichBars, task_id: TaskID, total: float | None):
        self.bars, self.task_id, self.total = bars, task_id, total

    def advance(self, amount: float = 1, status: str | None = None) -> None:
        self.bars.update(self.task_id, advance=amount, **_status(status))

    def update(self, *, completed: float | None = None, total: float | None = None, status: str | None = None) -> None:
        if total is not None:
            self.total = total
        fields = {"completed": completed, "total": total}
        self.bars.update(self.task_id, **{k: v for k, v in fields.items() if v is not None}, **_status(status))

    def finish(self, status: str | None = None) -> None:
        done = self.total or 1
        self.bars.update(self.task_id, total=done, completed=done, **_status(status))

    def remove(self) -> None:
        self.bars.remove_task(self.task_id)


def _status(status: str | None) -> dict[str, str]:
    return {} if status is None else {"status": status}


class RichProgress(Progress):
    """Tasks as rows of one Rich ``Progress``; log lines printed above it."""

    def __init__(self, bars: RichBars):
        self.bars = bars

    @property
    def console(self) -> Console:
        """The display's console: print here so lines appear above the bars, not through them."""
        return self.bars.console

    def task(self, description: str, total: float | None = None, status: str = "") -> RichTask:
        return RichTask(self.bars, self.bars.add_task(description, total=total, status=status), total)

    def log(self, line: str) -> None:
        self.bars.console.print(line, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def progress_bars(console: Console, transient: bool = False) -> Iterator[RichProgress]:
    """Live progress bars on ``console`` while the block runs (cleared at the end when ``transient``)."""
    bars = RichBars(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    )
    with bars:
        yield RichProgress(bars)
