"""The prediction service: FastAPI, following the MLflow production model without downtime.

co2 serve --host 0.0.0.0 --port 8000      (or: uvicorn serving.main:app)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from co2.logs import get_logger
from co2.settings import Settings, get_settings
from serving import metrics
from serving.batching import Batcher
from serving.deps import require_api_key
from serving.guard import RequestGuard, guarded_routes
from serving.registry import ModelFollower
from serving.routes import events, health, model, predict

log = get_logger("co2.serving")

# A 422 lists what is wrong, never the input itself: that could be megabytes, or not even JSON-encodable.
SHOWN_ERRORS = 100
SHOWN_NAME_CHARS = 64


class RequestMetrics:
    """Requests and latency by route template, method and status (plain ASGI: cheap per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Each series' children, looked up once: `labels()` takes a lock and checks its arguments
        # on every call. Bounded: routes x the methods the HTTP parser accepts x statuses.
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            route, method = getattr(scope.get("route"), "path", "unmatched"), scope["method"]
            series = self._series.get((route, method, status))
            if series is None:
                series = self._series[route, method, status] = (
                    metrics.REQUESTS.labels(route=route, method=method, status=str(status)),
                    metrics.LATENCY.labels(route=route, method=method),
                )
            series[0].inc()
            series[1].observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; the lifespan owns the registry poller and the batcher."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = settings or get_settings()
        follower = ModelFollower(config)
        batcher = Batcher(follower)
        app.state.settings, app.state.follower, app.state.batcher = config, follower, batcher
        tasks = [asyncio.create_task(follower.run()), asyncio.create_task(batcher.run())]
        log.info(
            "service_started", registry=config.mlflow_tracking_uri, model=config.model_name, alias=config.model_alias
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            metrics.process_ended()

    # Swagger UI and ReDoc from the service's own files: /docs works without network
    app = FastAPIOffline(
        title="co2 prediction service",
        description="Predicts new cars' WLTP CO₂ emissions (g/km) with the model in production in the MLflow registry.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(predict.router)
    app.include_router(model.router)
    app.include_router(health.router)
    app.include_router(events.router)
    # The API's routes first: the router tries each route's pattern in turn on every request, and
    # the documentation pages, added first, are the rarest. No two patterns overlap.
    app.router.routes.sort(key=lambda route: not getattr(route, "include_in_schema", False))
    app.add_exception_handler(RequestValidationError, validation_error)
    # the key and the body's size are checked before a route reads the body; the metrics see every answer
    app.add_middleware(RequestGuard, routes=guarded_routes(app.routes, require_api_key))
    app.add_middleware(RequestMetrics)
    return app


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with where and what (`loc`, `msg`, `type`) of each problem, without the input or its context."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    shown: list[dict[str, Any]] = [
        {"loc": [_short(part) for part in error["loc"]], "msg": error["msg"], "type": error["type"]}
        for error in errors[:SHOWN_ERRORS]
    ]
    if len(errors) > SHOWN_ERRORS:
        shown.append({"loc": ["body"], "msg": f"and {len(errors) - SHOWN_ERRORS} more errors", "type": "too_many"})
    return JSONResponse({"detail": shown}, status_code=422)


def _short(part: object) -> object:
    """A location part as it is, unless it is a long name (an unknown field's): then cut short."""
    if isinstance(part, str) and len(part) > SHOWN_NAME_CHARS:
        return f"{part[:SHOWN_NAME_CHARS]}…"
    return part


app = create_app()
