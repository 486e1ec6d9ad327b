"""The prediction service: FastAPI, following the MLflow production model without downtime.

co2 serve --host 0.0.0.0 --port 8000      (or: uvicorn serving.main:app)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from co2.logs import get_logger
from co2.settings import Settings, get_settings
from serving import metrics
from serving.batching import Batcher
from serving.registry import ModelFollower
from serving.routes import health, model, predict

log = get_logger("co2.serving")


class RequestMetrics:
    """Requests and latency by route template, method and status (plain ASGI: cheap per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics.REQUESTS.labels(route=route, method=scope["method"], status=str(status)).inc()
            metrics.LATENCY.labels(route=route, method=scope["method"]).observe(time.perf_counter() - started)


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

    app = FastAPI(
        title="co2 prediction service",
        description="Predicts new cars' WLTP CO₂ emissions (g/km) with the model in production in the MLflow registry.",
        version="0.1.0",
        lifespan=lifespan,
    )

    app.add_middleware(RequestMetrics)
    app.include_router(predict.router)
    app.include_router(model.router)
    app.include_router(health.router)
    return app


app = create_app()
