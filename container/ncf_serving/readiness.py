"""Whether every worker of the server has loaded and warmed up, shared through marker files.

The workers are separate processes behind one listening socket, and ``GET /ping`` is answered by
whichever of them accepts the connection, so each needs to know about the others. Each worker
touches ``<pid>.ready`` in the server's run folder once its model is warm; the one that brings
the count to the number of workers also touches ``serving``: from then on the server has been
ready as a whole, and ``/ping`` is 200 from every ready worker.

A worker started after that is a replacement (the master restarts a worker that died): it loads
its model *before* it accepts connections, so no request ever reaches a worker that cannot
answer it, and ``/ping`` stays 200 while the other workers carry the traffic. The master removes
a dead worker's marker. A worker whose model cannot load writes the reason to ``failed`` for the
master's last log line.
"""

from __future__ import annotations

import os
from pathlib import Path

SERVING = "serving"
FAILED = "failed"
READY_SUFFIX = ".ready"


class Readiness:
    def __init__(self, folder: Path, workers: int):
        self.folder = folder
        self.workers = workers
        self._serving = False  # cached per process once true: it never turns false again

    def mark_ready(self) -> None:
        """This worker's model is loaded and warm."""
        (self.folder / f"{os.getpid()}{READY_SUFFIX}").touch()
        if self.ready_workers() >= self.workers:
            (self.folder / SERVING).touch()

    def forget(self, pid: int) -> None:
        """Worker ``pid`` is gone (called by the master)."""
        (self.folder / f"{pid}{READY_SUFFIX}").unlink(missing_ok=True)

    def ready_workers(self) -> int:
        return sum(1 for path in self.folder.iterdir() if path.name.endswith(READY_SUFFIX))

    def serving(self) -> bool:
        """Every worker has been ready: the server as a whole is up (a worker starting now is a replacement)."""
        if not self._serving:
            self._serving = (self.folder / SERVING).exists()
        return self._serving

    def record_failure(self, error: str) -> None:
        (self.folder / FAILED).write_text(error, encoding="utf-8")

    def failure(self) -> str | None:
        try:
            return (self.folder / FAILED).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
