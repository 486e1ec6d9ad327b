"""Liveness, readiness and Prometheus metrics: open, without an API key."""

from __future__ import annotations

import math

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from serving import metrics
from serving.deps import FollowerDep
from serving.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
async def ready(follower: FollowerDep) -> JSONResponse:
    """Ready when a model is loaded and the registry was reached recently (503 otherwise, with reasons)."""
    reasons = []
    if follower.current is None:
        reasons.append("no production model loaded yet")
    if follower.stale():
        reasons.append("registry not reached for more than three poll intervals; serving the last good model")
    since = follower.seconds_since_poll()
    body = Readiness(
        ready=not reasons,
        model_version=follower.current.version if follower.current else None,
        registry_reachable=follower.state.reachable,
        seconds_since_registry_poll=None if math.isinf(since) else round(since, 1),
        last_error=follower.state.last_error,
        reasons=reasons,
        registry_events=follower.state.registry_events,
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", response_class=Response)
async def prometheus_metrics(follower: FollowerDep) -> Response:
    """Prometheus exposition of the service's metrics."""
    follower.observe_readiness()
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
