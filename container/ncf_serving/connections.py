"""Connection-level bounds uvicorn lacks: a deadline for reading each request, one line for a broken body.

uvicorn's only timeout is ``timeout_keep_alive``: idle time *after* a response, cancelled by the
first byte of the next request. A connection that never sends a request, trickles its headers a
byte at a time (slowloris) or stalls its body is never closed, and each holds a file descriptor
and a parser. :class:`DeadlineHttpProtocol` is uvicorn's httptools protocol with one deadline:
from the moment a connection opens, or its previous response completes, the whole next request
(headers and body) must arrive within ``read_seconds`` (``NCF_REQUEST_READ_SECONDS``); otherwise
the connection is closed. The deadline is off while the server answers a complete request.

A body that ends early (the client disconnected, the deadline closed it, or its chunked framing
is malformed: uvicorn then answers 400 itself and closes) reaches the app as a disconnect.
:func:`broken_body` turns that into the status the access line and ``/metrics`` record (499
client closed, 408 read timeout, 400 malformed), so it is one log line and never counted as a
server error; uvicorn's own "Invalid HTTP request received." warning is dropped for a body, where
the access line already reports it (a malformed request head still logs it: no access line
exists then).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("ncf_serving.connections")
BROKEN_BODY = "broken_body"  # key in the request's scope["state"]: why its body ended early
UVICORN_INVALID_REQUEST = "Invalid HTTP request received."
_PARSING: ContextVar[DeadlineHttpProtocol | None] = ContextVar("parsing", default=None)  # set in data_received


class _BodyParseErrorFilter(logging.Filter):
    """Drops uvicorn's parse-error warning when it is about a request body (the access line reports it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        protocol = _PARSING.get()
        return not (protocol is not None and protocol.reading_body() and record.getMessage() == UVICORN_INVALID_REQUEST)


logging.getLogger("uvicorn.error").addFilter(_BodyParseErrorFilter())  # at import: in every worker process


class DeadlineHttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection not delivering a complete request in ``read_seconds``.

    Pass it to uvicorn as ``http=functools.partial(DeadlineHttpProtocol, read_seconds=...)``.
    """

    def __init__(self, *args: Any, read_seconds: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_seconds = read_seconds
        self.read_deadline: Any = None  # asyncio.TimerHandle while a request is awaited
        self.bytes_since_armed = False

    def _arm(self) -> None:
        self._disarm()
        self.bytes_since_armed = False
        self.read_deadline = self.loop.call_later(self.read_seconds, self._expire)

    def _disarm(self) -> None:
        if self.read_deadline is not None:
            self.read_deadline.cancel()
            self.read_deadline = None

    def reading_body(self) -> bool:
        """A request's head is in and its body is not complete yet."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and cycle.more_body

    def _expire(self) -> None:
        self.read_deadline = None
        if self.transport.is_closing():
            return
        if self.reading_body():  # the app's access line reports it (408)
            self.cycle.scope["state"][BROKEN_BODY] = "timeout"
        elif self.bytes_since_armed:  # an incomplete request head: no access line will exist
            log.warning("request head not complete in time", extra={"fields": {"read_seconds": self.read_seconds}})
        self.transport.close()  # an idle connection (nothing sent) closes quietly, like a keep-alive timeout

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.bytes_since_armed = True
        token = _PARSING.set(self)
        try:
            super().data_received(data)
        finally:
            _PARSING.reset(token)
        if self.transport.is_closing() and self.reading_body():  # uvicorn found the body malformed, answered 400
            self.cycle.scope["state"][BROKEN_BODY] = "malformed"

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # the request is in: answering it is not bounded here

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request (or the idle wait for it) gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def broken_body(state: dict[str, Any]) -> tuple[int, str]:
    """(status, message) for a request whose body ended early; ``state`` is its ``scope["state"]``."""
    reason = state.get(BROKEN_BODY)
    if reason == "timeout":
        return 408, "not complete within NCF_REQUEST_READ_SECONDS; connection closed"
    if reason == "malformed":
        return 400, "malformed HTTP body framing (e.g. chunked encoding); connection closed"
    return 499, "the client disconnected before the body was complete"
