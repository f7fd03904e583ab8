"""``--nproc N`` on one machine: N worker processes through torch's elastic launcher.

``torch.distributed.launcher.elastic_launch`` is what ``torchrun --standalone`` runs: it picks
a free rendezvous port, sets ``RANK``/``WORLD_SIZE``/``MASTER_ADDR`` for each worker and tears
the group down if one fails. Rank 0 appends a JSON line per epoch to an events file; a thread
here tails it so the caller's progress bar moves while the workers train.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ncfctl.errors import NcfError
from ncfctl.training.worker import WorkerJob, run_worker


def _tail(path: Path, on_line: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
    offset = 0
    while True:
        finished = stop.wait(0.2)
        if path.exists():
            with open(path, encoding="utf-8") as fh:
                fh.seek(offset)
                for line in fh:
                    if line.endswith("\n"):
                        on_line(json.loads(line))
                        offset += len(line.encode("utf-8"))
        if finished:
            return


def launch_local(nproc: int, job: WorkerJob, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict:
    """Run ``job`` on ``nproc`` local ranks; returns rank 0's fit result."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not job.events:
        raise ValueError("launch_local needs job.events (the progress file rank 0 writes)")
    events = Path(job.events)
    events.unlink(missing_ok=True)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"ncfctl-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint="127.0.0.1:0",
        max_restarts=0,
        monitor_interval=0.1,
        start_method="spawn",
    )
    stop = threading.Event()
    tail = threading.Thread(target=_tail, args=(events, on_epoch or (lambda _: None), stop), daemon=True)
    tail.start()
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # failures become one NcfError line
    try:
        results = elastic_launch(config, run_worker)(job)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        message = str(failure.message).strip().splitlines()[-1] if failure.message else "no message"
        raise NcfError(f"training rank {rank} failed (exit code {failure.exitcode}): {message}") from None
    finally:
        stop.set()
        tail.join()
    errors = [r["error"] for r in results.values() if "error" in r]
    if errors:
        raise NcfError(errors[0])
    return results[0]
