"""What is checked before a route reads its body: the API key, and the body's size as it streams in.

FastAPI reads and parses a body before it runs the route's dependencies, so a key checked there
comes after a 50 MB body was received and parsed. This plain ASGI layer checks the key on the
headers alone, and counts the body's bytes as they arrive (whatever Content-Length says),
answering 413 once a body exceeds what the largest legal request of its route needs.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import HTTPException, status
from fastapi.routing import APIRoute
from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from co2.settings import Settings
from serving.limits import BODY_BYTES, OTHER_BODY_BYTES

API_KEY_HEADER = "X-API-Key"


def api_key_refusal(settings: Settings, given: str | None) -> HTTPException | None:
    """None when the key is good (or no keys are configured); else the 401 or 403 to answer."""
    if not settings.api_keys:
        return None
    if not given:
        return HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing API key: send it in the {API_KEY_HEADER} header",
            {"WWW-Authenticate": "APIKey"},
        )
    if not any(secrets.compare_digest(given.encode(), key.encode()) for key in settings.api_keys):
        return HTTPException(status.HTTP_403_FORBIDDEN, "the API key is not valid")
    return None


@dataclass(frozen=True)
class GuardedRoute:
    route: APIRoute
    needs_key: bool
    body_bytes: int


def guarded_routes(routes: Sequence[object], key_dependency: object) -> list[GuardedRoute]:
    """Each API route, whether it requires a key (it declares `key_dependency`), and its body cap."""
    return [
        GuardedRoute(
            route,
            any(getattr(depends, "dependency", None) is key_dependency for depends in route.dependencies),
            BODY_BYTES.get(route.path, OTHER_BODY_BYTES),
        )
        for route in routes
        if isinstance(route, APIRoute)
    ]


class BodyTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"request body larger than the {limit:,} bytes the largest valid request of this route needs",
        )


class RequestGuard:
    """Plain ASGI, in front of the routes: API key first, then a cap on the body's bytes."""

    def __init__(self, app: ASGIApp, routes: list[GuardedRoute]) -> None:
        self.app = app
        self.routes = routes
        # A path without parameters is found by lookup, not by trying each route's pattern in turn
        # (every request pays for the scan), up to the first route with parameters, which could
        # match the same path first.
        self._by_path: dict[str, GuardedRoute] = {}
        for guarded in routes:
            if guarded.route.param_convertors:
                break
            self._by_path.setdefault(guarded.route.path, guarded)

    def _route_of(self, scope: Scope) -> GuardedRoute | None:
        if not scope.get("root_path"):  # behind a path prefix the routes see less than `path`
            found = self._by_path.get(scope["path"])
            if found is not None:
                return found
        for guarded in self.routes:
            match, _ = guarded.route.matches(scope)
            if match is not Match.NONE:  # a wrong method on a protected path still needs the key
                return guarded
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        guarded = self._route_of(scope)
        if guarded is not None:
            scope["route"] = guarded.route  # the request metrics' route label, also when refused here
        limit = guarded.body_bytes if guarded is not None else OTHER_BODY_BYTES
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        if guarded is not None and guarded.needs_key:
            refusal = api_key_refusal(scope["app"].state.settings, headers.get(API_KEY_HEADER.lower()))
            if refusal is not None:
                await _answer(refusal, scope, receive, send)
                return
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _answer(BodyTooLargeError(limit), scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes an HTTPException raised while reading the body on to its handler
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, counted_receive, send)


async def _answer(refusal: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse({"detail": refusal.detail}, refusal.status_code, headers=refusal.headers)
    await response(scope, receive, send)
