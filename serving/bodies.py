"""JSON request bodies parsed and validated by pydantic-core in one pass over the bytes.

FastAPI parses a body into Python objects, then validates those against the route's model: for a
1,000-car batch the objects alone cost as much as validating them. Where a route's body is one
pydantic model, this validates the bytes straight into it; FastAPI takes a model instance as it
is. A body that fails goes the usual way, so errors read exactly as FastAPI words them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi import Request, Response, params
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope


class FastJSONRequest(Request):
    def __init__(self, scope: Scope, receive: Receive, model: type[BaseModel] | None) -> None:
        super().__init__(scope, receive)
        self._body_model = model

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if self._body_model is not None:
                try:
                    self._json: Any = self._body_model.model_validate_json(body)
                    return self._json
                except ValidationError:
                    pass  # FastAPI's own parsing and validation name what is wrong
            try:
                self._json = pydantic_core.from_json(body)
            except ValueError:
                # not JSON: `json` raises the JSONDecodeError FastAPI turns into a 422 with the position
                self._json = json.loads(body)
        return self._json


def body_model(route: APIRoute) -> type[BaseModel] | None:
    """The pydantic model a route's whole body is, if it is one (not embedded, not a form)."""
    body = get_flat_dependant(route.dependant).body_params
    if len(body) != 1 or getattr(body[0].field_info, "embed", False) or isinstance(body[0].field_info, params.Form):
        return None
    annotation = body[0].field_info.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


class FastJSONRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        model = body_model(self)

        async def parse_fast(request: Request) -> Response:
            return await handler(FastJSONRequest(request.scope, request.receive, model))

        return parse_fast
