"""Dependencies of the routes: the settings, the model in production, the API key check.

All `async`: FastAPI runs a plain `def` dependency in a worker thread, a hop that costs more
than the dependency itself on every request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from co2.settings import Settings
from serving.batching import Batcher
from serving.guard import API_KEY_HEADER, api_key_refusal
from serving.registry import LoadedModel, ModelFollower

api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="Required when CO2_API_KEYS is set")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_follower(request: Request) -> ModelFollower:
    follower: ModelFollower = request.app.state.follower
    return follower


async def get_batcher(request: Request) -> Batcher:
    batcher: Batcher = request.app.state.batcher
    return batcher


def no_model_yet() -> HTTPException:
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "no production model is loaded yet; the service is waiting for one (see /ready)",
    )


async def get_current_model(follower: Annotated[ModelFollower, Depends(get_follower)]) -> LoadedModel:
    model = follower.current
    if model is None:
        raise no_model_yet()
    return model


async def require_api_key(request: Request, api_key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Open when no keys are configured; otherwise 401 without a key, 403 with a wrong one.

    Declaring it on a route is what makes the route protected: `serving.guard` checks the key on
    the headers before the body is read, this check stands behind it.
    """
    refusal = api_key_refusal(request.app.state.settings, api_key)  # not a dependency: one fewer per request
    if refusal is not None:
        raise refusal


SettingsDep = Annotated[Settings, Depends(get_settings)]
FollowerDep = Annotated[ModelFollower, Depends(get_follower)]
CurrentModel = Annotated[LoadedModel, Depends(get_current_model)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
