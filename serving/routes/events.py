"""MLflow's registry webhook: a signed alias change of the served model wakes the registry follower."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from serving import metrics
from serving.deps import FollowerDep, SettingsDep
from serving.webhook import WebhookRefusedError, verify

router = APIRouter(tags=["registry"])


@router.post(
    "/registry/events",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={401: {"description": "Not signed with CO2_WEBHOOK_SECRET, or too old"}, 404: {}},
)
async def registry_event(request: Request, follower: FollowerDep, settings: SettingsDep) -> Response:
    """For MLflow's webhook (`model_version_alias.created` / `.deleted`), authenticated by its HMAC
    signature rather than an API key: an event for this service's model and alias makes it look at the
    registry now instead of at its next poll. Anything else is acknowledged and ignored."""
    secret = settings.webhook_secret.get_secret_value()
    if not secret:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "registry events are not configured (CO2_WEBHOOK_SECRET)")
    body = await request.body()  # capped by the request guard as it streams in
    try:
        event = verify(secret, dict(request.headers), body)
    except WebhookRefusedError as exc:
        metrics.REGISTRY_EVENTS.labels(outcome="refused").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    if event is None or (event.model, event.alias) != (settings.model_name, settings.model_alias):
        metrics.REGISTRY_EVENTS.labels(outcome="ignored").inc()
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    metrics.REGISTRY_EVENTS.labels(outcome="accepted").inc()
    follower.wake(f"{event.model}@{event.alias} {event.action} (version {event.version or '?'})")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
