"""The HTTP application: every protocol's routes, the playground's files, and what guards them all.

Guards, outermost first: CORS (only for the configured origins), the request-size limit, the bearer token
(health and the playground's static files are open; the API calls the playground makes are not).
"""

from __future__ import annotations

from pathlib import Path

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.api.http.edge import PROTOCOL, error_response
from service.api.http.native import NativeRoutes
from service.api.http.openai import CompletionRoutes
from service.api.http.v2 import V2Routes
from service.api.native import InferenceServicer
from service.api.security import MISSING, TokenAuth
from service.api.v2 import GRPCInferenceServicer
from service.settings import Settings

STATIC = Path(__file__).with_name("static")
OPEN_PATHS = ("/v2/health/",)  # probes and load balancers carry no token
MISSING_HEADER = "missing bearer token: send the header 'Authorization: Bearer <token>'"


def method_of(routes: list[BaseRoute], scope: Scope) -> str:
    """The metrics name of the route a request is for ("unknown" for none: clients must not make label values)."""
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] == Match.FULL:
            return route.name
    return "unknown"


class Guard:
    """The request-size limit and the bearer token, before any route reads a byte of the body.

    A body is read whole here (every API route needs all of it) up to max_receive_message_bytes:
    a larger one is refused with 413 as soon as its Content-Length, or its bytes so far, say so.
    """

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], max_bytes: int, auth: TokenAuth | None) -> None:
        self.app, self.routes, self.max_bytes, self.auth = app, routes, max_bytes, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if self.auth is not None and path.startswith(("/v1/", "/v2")) and not path.startswith(OPEN_PATHS):
            header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
            why = self.auth.refusal([("authorization", header)] if header is not None else [])
            if why is not None:
                return await self._refuse(scope, receive, send, grpc.StatusCode.UNAUTHENTICATED,
                                          MISSING_HEADER if why == MISSING else why)
        length = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await self._too_large(scope, receive, send)
        body, more = [], True
        size = 0
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(scope, receive, send)
            body.append(chunk)
            more = message.get("more_body", False)
        whole: Message | None = {"type": "http.request", "body": b"".join(body), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: http.disconnect, when the client goes
        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._refuse(scope, receive, send, grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"request body over max_receive_message_bytes = {self.max_bytes}", status=413)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, code: grpc.StatusCode, message: str,
                      status: int | None = None) -> None:
        metrics.count_refused(method_of(self.routes, scope), code.name, PROTOCOL)
        response = error_response(code, message, v2=scope["path"].startswith("/v2"))
        if status is not None:
            response.status_code = status
            del response.headers["Retry-After"]  # a body too large stays too large
            response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


async def _no_route(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods: a JSON error in the protocol's shape, counted once as "unknown"."""
    assert isinstance(exc, HTTPException)
    code = grpc.StatusCode.NOT_FOUND if exc.status_code == 404 else grpc.StatusCode.UNIMPLEMENTED
    metrics.count_refused("unknown", code.name, PROTOCOL)
    response = error_response(code, f"{request.method} {request.url.path[:200]}: {exc.detail}",
                              v2=request.url.path.startswith("/v2"))
    response.status_code = exc.status_code
    return response


async def _playground(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


def create_app(native: InferenceServicer, v2: GRPCInferenceServicer, settings: Settings,
               auth: TokenAuth | None) -> Starlette:
    routes = [*NativeRoutes(native).routes(), *CompletionRoutes(native).routes(), *V2Routes(v2).routes(),
              Route("/", _playground, methods=["GET"], name="Playground"),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    middleware = [Middleware(Guard, routes=routes, max_bytes=settings.max_receive_message_bytes, auth=auth)]
    if origins := [o.strip() for o in settings.http_cors_origins.split(",") if o.strip()]:
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                                        allow_headers=["authorization", "content-type",
                                                       "inference-header-content-length"]))
    return Starlette(routes=routes, middleware=middleware, exception_handlers={404: _no_route, 405: _no_route})
