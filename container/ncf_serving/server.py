"""Run the app under uvicorn as SageMaker's ``serve``: one process, graceful SIGTERM, exit 1 on a bad model.

uvicorn turns SIGTERM into a graceful shutdown: it stops accepting, lets in-flight requests
finish for at most ``NCF_GRACEFUL_SECONDS`` (default 10 s, well inside SageMaker's 30 s before
SIGKILL). uvicorn re-raises the caught signal once it is done, to whatever handler was installed
before it; ours records it, so the process logs "server stopped" and exits 0 instead of dying by
the signal's default action.
"""

from __future__ import annotations

import functools
import logging
import signal

import uvicorn

from ncf_serving.app import create_app
from ncf_serving.connections import DeadlineHttpProtocol
from ncf_serving.logs import configure_logging
from ncf_serving.settings import Settings


def run(settings: Settings) -> int:
    configure_logging()
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=stop)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=settings.graceful_seconds,
        http=functools.partial(DeadlineHttpProtocol, read_seconds=settings.request_read_seconds),
    )
    server = uvicorn.Server(config)
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: received.append(number))
    server.run()
    failed = app.state.server.error is not None
    fields = {"exit_code": int(failed), "signal": signal.Signals(received[0]).name if received else None}
    logging.getLogger("ncf_serving").info("server stopped", extra={"fields": fields})
    return 1 if failed else 0
