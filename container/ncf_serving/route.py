"""``POST /invocations`` as a plain ASGI app: the route that carries the traffic, without FastAPI's layers.

Through FastAPI, a request paid for route matching, dependency solving, a ``Request`` and a
``Response`` object and four middlewares before and after the few lines that do the work: ~50 µs
of server CPU, as much as parsing, id lookup, logging and metrics together. This route reads the
ASGI messages itself and answers exactly as the FastAPI route did (same JSON, same headers, same
4xx + JSON for every bad request, same body bound, same 499/408/400 for a body that ends early);
the other routes (``/ping``, ``/metrics``, the JSON 404/405) stay FastAPI's (:mod:`ncf_serving.app`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ncf_serving.answers import answer, kind_of
from ncf_serving.connections import broken_body
from ncf_serving.invocations import JSON, JSON_LINES, RequestError, parse_invocation, parse_jsonlines
from ncf_serving.predictor import Predictor
from ncf_serving.settings import Settings

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
# One encoder for every answer: json.dumps with options builds a new one per call (~1.5 µs).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def json_bytes(document: Any) -> bytes:
    return _COMPACT.encode(document).encode("utf-8")


def header(scope: dict[str, Any], name: bytes) -> str | None:
    """The first value of request header ``name`` (lower case, as ASGI servers give names), like Starlette's
    ``Headers.get``."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def send_response(send: Send, status: int, body: bytes, media_type: str = JSON) -> None:
    headers = [(b"content-length", str(len(body)).encode("latin-1")), (b"content-type", media_type.encode("latin-1"))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(scope: dict[str, Any], receive: Receive, limit: int) -> bytes:
    """The request body, or a 413 once it passes ``limit`` bytes (the rest is drained, not stored).

    A body that ends early is a RequestError too (499/408/400, see :func:`broken_body`): nobody is
    left to answer, but the access line and ``/metrics`` record it as what it is, not as a 500.
    """
    declared = header(scope, b"content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            status, text = broken_body(scope["state"])
            raise RequestError(status, "body", text)
        if not too_large:
            body += message.get("body", b"")
            too_large = len(body) > limit
        if not message.get("more_body", False):
            break
    if too_large:
        raise RequestError(413, "body", f"larger than the {limit}-byte limit")
    return bytes(body)


def _line_answer(predictor: Predictor, parsed: Any, number: int) -> dict[str, Any]:
    """One JSON-lines request's answer; an unknown id names its line."""
    try:
        return answer(predictor, parsed)
    except RequestError as exc:
        raise RequestError(exc.status, f"line {number}.{exc.field}", exc.message) from None


class InvocationsRoute:
    """The ASGI app of ``POST /invocations``; ``predictor()`` is the loaded model, None while loading.

    The request's form goes to ``scope["state"]["kind"]`` for the access line and ``/metrics``.
    """

    def __init__(self, settings: Settings, predictor: Callable[[], Predictor | None]):
        self.settings = settings
        self.predictor = predictor

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        predictor = self.predictor()
        if predictor is None:
            document = {"error": "model is not loaded yet; poll GET /ping", "field": "model"}
            await send_response(send, 503, json_bytes(document))
            return
        state = scope["state"]
        state["kind"] = "invalid"
        try:
            body = await read_body(scope, receive, self.settings.max_body_bytes)
            media_type = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
            answered = self.answer(predictor, state, media_type, body)
        except RequestError as exc:
            await send_response(send, exc.status, json_bytes(exc.body()))
            return
        await send_response(send, 200, answered, media_type)

    def answer(self, predictor: Predictor, state: dict[str, Any], media_type: str, body: bytes) -> bytes:
        """The answer's bytes in ``media_type`` (JSON, or one JSON document per line)."""
        settings = self.settings
        if media_type == JSON_LINES:
            lines = parse_jsonlines(body, settings.max_batch, settings.max_top_k)
            state["kind"] = "jsonlines"
            answers = [_line_answer(predictor, parsed, n) for n, parsed in enumerate(lines, start=1)]
            return b"".join(json_bytes(a) + b"\n" for a in answers)
        if media_type != JSON:
            raise RequestError(415, "Content-Type", f"must be {JSON} or {JSON_LINES}, got {media_type or 'none'!r}")
        parsed = parse_invocation(body, settings.max_batch, settings.max_top_k)
        state["kind"] = kind_of(parsed)
        return json_bytes(answer(predictor, parsed))
