"""The HTTP surface SageMaker expects: ``GET /ping``, ``POST /invocations`` (+ ``GET /metrics``).

Each worker process runs one such app. The model loads in a background thread so the port answers
at once: ``/ping`` is 503 until every worker has loaded its bundle and passed warm-up inferences
(SageMaker then starts routing), 200 after (see :mod:`ncf_serving.readiness`; a replacement worker
loads before it accepts connections instead). If loading fails the error is logged and
``on_fatal`` stops the server (the process exits 1), so a broken bundle fails the deployment fast
instead of hanging in "loading".

Inference runs inline on the event loop: a top-K or a pair takes well under a millisecond, less
than a thread-pool hop would cost, and runtimes like DLR are not thread-safe anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ncf_serving.answers import answer, kind_of
from ncf_serving.bundle import BundleError
from ncf_serving.connections import broken_body
from ncf_serving.invocations import JSON, JSON_LINES, RequestError, parse_invocation, parse_jsonlines
from ncf_serving.metrics import Metrics
from ncf_serving.predictor import Predictor
from ncf_serving.readiness import Readiness
from ncf_serving.settings import Settings

log = logging.getLogger("ncf_serving")
access_log = logging.getLogger("ncf_serving.access")
ROUTES = ("/ping", "/invocations", "/metrics")
NO_ROUTE = "not served here; the routes are GET /ping, POST /invocations and GET /metrics"


def json_response(status: int, document: dict[str, Any]) -> Response:
    return Response(json.dumps(document, separators=(",", ":")), status_code=status, media_type="application/json")


class ServerState:
    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.error: str | None = None


class AccessLog:
    """Pure ASGI middleware: one structured log line and one metrics observation per request."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        async def send_and_record(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            seconds = time.perf_counter() - start
            path = scope["path"] if scope["path"] in ROUTES else "other"
            kind = state.get("kind", "-")
            self.metrics.observe(path, kind, status, seconds)
            fields = {"method": scope["method"], "path": path, "kind": kind, "status": status}
            access_log.info("request", extra={"fields": {**fields, "latency_ms": round(seconds * 1e3, 3)}})


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or a 413 once it passes ``limit`` bytes (the rest is drained, not stored).

    A body that ends early is a RequestError too (499/408/400, see :func:`broken_body`): nobody is
    left to answer, but the access line and ``/metrics`` record it as what it is, not as a 500.
    """
    declared = request.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    body = bytearray()
    try:
        async for chunk in request.stream():
            if not too_large:
                body += chunk
                too_large = len(body) > limit
    except ClientDisconnect:
        status, message = broken_body(request.scope["state"])
        raise RequestError(status, "body", message) from None
    if too_large:
        raise RequestError(413, "body", f"larger than the {limit}-byte limit")
    return bytes(body)


def _line_answer(predictor: Predictor, parsed: Any, number: int) -> dict[str, Any]:
    """One JSON-lines request's answer; an unknown id names its line."""
    try:
        return answer(predictor, parsed)
    except RequestError as exc:
        raise RequestError(exc.status, f"line {number}.{exc.field}", exc.message) from None


def create_app(settings: Settings, readiness: Readiness, metrics: Metrics, on_fatal: Callable[[str], None]) -> FastAPI:
    state = ServerState()

    def load() -> None:
        started = time.perf_counter()
        try:
            predictor = Predictor.load(settings.model_dir, settings.threads)
            gap = predictor.warm_up(settings.warmup_rounds)
        except BundleError as exc:
            state.error = str(exc)
        except Exception as exc:  # a runtime library failing to load must still end in a clear log line
            log.exception("model load crashed")
            state.error = f"{type(exc).__name__}: {exc}"
        else:
            state.predictor = predictor
            readiness.mark_ready()
            fields = {
                "model_dir": str(settings.model_dir),
                "runtime": predictor.spec.runtime,
                "source_model": predictor.spec.source_model,
                "load_seconds": round(time.perf_counter() - started, 3),
                "fastpath_max_gap": gap,
                "threads": settings.threads,
            }
            log.info("model ready", extra={"fields": fields})
            return
        log.error(
            "model failed to load", extra={"fields": {"model_dir": str(settings.model_dir), "error": state.error}}
        )
        on_fatal(state.error)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if readiness.serving():  # a replacement worker: accept no connection before the model is warm
            await asyncio.to_thread(load)
        else:
            threading.Thread(target=load, name="model-loader", daemon=True).start()
        yield

    # redirect_slashes=False: FastAPI would answer POST /invocations/ with a 307 that clients do not
    # re-POST; SageMaker calls exactly /invocations and /ping, anything else is a JSON 404/405.
    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.state.server = state
    app.add_middleware(AccessLog, metrics=metrics)

    @app.exception_handler(HTTPException)
    async def no_route(request: Request, exc: HTTPException) -> Response:
        field = "method" if exc.status_code == 405 else "path"
        return json_response(exc.status_code, {"error": f"{field}: {NO_ROUTE}", "field": field})

    @app.get("/ping")
    async def ping() -> Response:
        if state.predictor is not None and readiness.serving():
            return json_response(200, {"status": "ready"})
        if state.error is not None:
            return json_response(503, {"status": "failed", "error": state.error})
        return json_response(503, {"status": "loading"})

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        predictor = state.predictor
        if predictor is None:
            return json_response(503, {"error": "model is not loaded yet; poll GET /ping", "field": "model"})
        request.state.kind = "invalid"
        try:
            body = await read_body(request, settings.max_body_bytes)
            media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type == JSON_LINES:
                lines = parse_jsonlines(body, settings.max_batch, settings.max_top_k)
                request.state.kind = "jsonlines"
                answers = [_line_answer(predictor, parsed, n) for n, parsed in enumerate(lines, start=1)]
                text = "".join(json.dumps(a, separators=(",", ":")) + "\n" for a in answers)
                return Response(text, status_code=200, media_type=JSON_LINES)
            if media_type != JSON:
                raise RequestError(415, "Content-Type", f"must be {JSON} or {JSON_LINES}, got {media_type or 'none'!r}")
            parsed = parse_invocation(body, settings.max_batch, settings.max_top_k)
            request.state.kind = kind_of(parsed)
            return json_response(200, answer(predictor, parsed))
        except RequestError as exc:
            return json_response(exc.status, exc.body())

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
