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
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware

from ncf_serving.bundle import BundleError
from ncf_serving.invocations import JSON
from ncf_serving.metrics import Metrics
from ncf_serving.predictor import Predictor
from ncf_serving.readiness import Readiness
from ncf_serving.route import InvocationsRoute, json_bytes
from ncf_serving.settings import Settings

log = logging.getLogger("ncf_serving")
access_log = logging.getLogger("ncf_serving.access")
ROUTES = ("/ping", "/invocations", "/metrics")
NO_ROUTE = "not served here; the routes are GET /ping, POST /invocations and GET /metrics"


def json_response(status: int, document: dict[str, Any]) -> Response:
    return Response(json_bytes(document), status_code=status, media_type=JSON)


class ServerState:
    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.error: str | None = None


class Front:
    """The ASGI app a worker runs: ``POST /invocations`` straight to its plain route
    (:mod:`ncf_serving.route`, the endpoint FastAPI's router would reach too), everything else
    (lifespan, ``/ping``, ``/metrics``, 404/405) through FastAPI; one structured log line and one
    metrics observation per request.

    An unexpected error in the route gets the plain-text 500 that FastAPI's routes give (Starlette's
    ``ServerErrorMiddleware``) and is re-raised for uvicorn to log.
    """

    def __init__(self, app: FastAPI, invocations: InvocationsRoute, metrics: Metrics):
        self.app = app
        self.invocations = ServerErrorMiddleware(invocations)
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

        path = scope["path"]
        route = self.invocations if path == "/invocations" and scope["method"] == "POST" else self.app
        try:
            await route(scope, receive, send_and_record)
        finally:
            seconds = time.perf_counter() - start
            path = path if path in ROUTES else "other"
            kind = state.get("kind", "-")
            self.metrics.observe(path, kind, status, seconds)
            fields = {"method": scope["method"], "path": path, "kind": kind, "status": status}
            access_log.info("request", extra={"fields": {**fields, "latency_ms": round(seconds * 1e3, 3)}})


def create_app(settings: Settings, readiness: Readiness, metrics: Metrics, on_fatal: Callable[[str], None]) -> Front:
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
                "ann_index": None if predictor.retrieval is None else "shared" if predictor.retrieval.shared else "own",
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

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    # In FastAPI's route table too, so that other methods on /invocations get its JSON 405.
    invocations = InvocationsRoute(settings, lambda: state.predictor)
    app.router.add_route("/invocations", invocations, methods=["POST"], include_in_schema=False)
    return Front(app, invocations, metrics)
