"""One JSON object per log line (CloudWatch and ``jq`` read it; no request bodies, no secrets).

Each line carries the ``pid`` of the process that wrote it: the server's master and its workers
share one log stream.
"""

from __future__ import annotations

import json
import logging
import sys
import time

# One encoder for every line: json.dumps with options builds a new one per call (~1.5 µs).
_ENCODER = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(payload)


def configure_logging(level: int = logging.INFO) -> None:
    """Route every logger (ours and uvicorn's) to stderr as JSON lines.

    The lines carry no source location, thread or multiprocessing name, so records do not collect
    them (the logging HOWTO's "Optimization" switches): ~4 µs less per access line.
    """
    logging._srcfile = None  # no frame walk for file/line/function
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
