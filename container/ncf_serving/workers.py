"""The process model: a gunicorn master supervising uvicorn worker processes on one listening socket.

gunicorn's arbiter forks the workers from a master that has already imported everything (the app,
numpy, the runtime library), so they share those pages copy-on-write; it restarts a worker that
dies (logging why), and on SIGTERM it closes the socket, asks every worker to drain and exits 0,
killing stragglers after ``graceful_timeout``. Each worker runs uvicorn (uvloop + httptools)
through the ``uvicorn-worker`` package. This module only configures those pieces:

* :class:`UvicornWorker`: uvicorn as before (no access log of its own, no ``Server`` header, a
  drain limit just inside the master's) with its log records going to our JSON handler.
* :class:`JsonLogger`: gunicorn's own messages ("Booting worker", "Worker (pid:N) was sent
  SIGKILL!") as the same JSON lines.
* :class:`Master`: the arbiter, remembering which signal stopped it for the last log line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import uvicorn_worker
from gunicorn import glogging
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer

from ncf_serving.connections import DeadlineHttpProtocol
from ncf_serving.settings import Settings

# The master SIGKILLs a worker this long after its SIGTERM if the worker has not drained by then;
# the worker itself gives up on open connections this much earlier, so it normally exits on its own.
KILL_MARGIN_S = 2
# A worker that has not reported to the master for this long is hung and gets replaced. A
# replacement loads its model before its event loop runs, so this also bounds that load.
HEARTBEAT_S = 120
KEEPALIVE_S = 5  # idle keep-alive connections close after this (uvicorn's default)
WORKER_BOOT_ERROR = Arbiter.WORKER_BOOT_ERROR  # a worker exiting with this stops the whole server


class UvicornWorker(uvicorn_worker.UvicornWorker):
    CONFIG_KWARGS = {"loop": "auto", "http": "auto", "access_log": False, "server_header": False}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout - KILL_MARGIN_S
        server_log = logging.getLogger("uvicorn.error")  # the base class pointed it at gunicorn's handlers
        server_log.handlers[:] = []
        server_log.propagate = True


def worker_class(read_seconds: float) -> type[UvicornWorker]:
    """:class:`UvicornWorker` whose connections carry the request-read deadline (``connections.py``)."""
    http = functools.partial(DeadlineHttpProtocol, read_seconds=read_seconds)
    return type("UvicornWorker", (UvicornWorker,), {"CONFIG_KWARGS": {**UvicornWorker.CONFIG_KWARGS, "http": http}})


class JsonLogger(glogging.Logger):
    """gunicorn's error log propagated to the root logger (our JSON handler) instead of its own format."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.handlers[:] = []
            log.propagate = True


class Application(BaseApplication):
    """An already built ASGI app and a dict of gunicorn settings (no config file, no command line)."""

    def __init__(self, app: Callable[..., Any], options: dict[str, Any]):
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Callable[..., Any]:
        return self.application


class Master(Arbiter):
    """gunicorn's arbiter, remembering which signal stopped it (for the last log line).

    When a bundle cannot load, every worker fails to boot at about the same time. gunicorn halts on
    the first; while halting it reaps the others and would raise the same halt again from inside
    its own shutdown, skipping the rest of it: once stopping, a further failed boot is only reaped.
    """

    stop_signal: str | None = None
    stopping = False

    def stop(self, graceful: bool = True) -> None:
        self.stopping = True
        super().stop(graceful)

    def reap_workers(self) -> None:
        try:
            super().reap_workers()
        except HaltServer:
            if not self.stopping:
                raise

    def handle_term(self) -> None:
        self.stop_signal = "SIGTERM"
        super().handle_term()

    def handle_int(self) -> None:
        self.stop_signal = "SIGINT"
        super().handle_int()


def options(settings: Settings, child_exit: Callable[[Any, Any], None]) -> dict[str, Any]:
    """gunicorn's settings for ``settings.workers`` uvicorn workers on ``settings.host:settings.port``."""
    host, port = settings.host, settings.port
    return {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": settings.workers,
        "worker_class": worker_class(settings.request_read_seconds),
        "preload_app": True,
        "graceful_timeout": settings.graceful_seconds + KILL_MARGIN_S,
        "timeout": HEARTBEAT_S,
        "keepalive": KEEPALIVE_S,
        "logger_class": JsonLogger,
        "child_exit": child_exit,
        "control_socket_disable": True,  # gunicorn's admin socket: nothing here uses it
        "proc_name": "ncf_serving",
    }
