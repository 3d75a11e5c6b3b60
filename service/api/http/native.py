"""rnnserve.v1.Inference over HTTP: the proto's requests as JSON, streams as server-sent events, models listed.

Every Inference method a registered model kind serves (service/kinds/) is a route, POST /v1/<method in snake
case> (Generate: /v1/generate, TranslateBatch: /v1/translate_batch): a kind that adds an RPC gets its HTTP route
with it. The request and reply messages, and whether the reply streams, are the proto's. Each route runs the gRPC
servicer's own method body (servicer_method) on the message the JSON spells, so validation, engines and results
are the gRPC API's; only the edge differs (service/api/http/edge.py). For a streaming method, `stream: true`
answers text/event-stream with one event per message the servicer yields; without it, the messages are merged
into one JSON reply (merged).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf import message_factory
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.api.http.edge import Call, event
from service.api.http.messages import parse, pop_flag, read_json, to_json
from service.api.native import InferenceServicer, model_info
from service.errors import InvalidArgument
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.kinds.base import served_methods
from service.models.repository import Model

INFERENCE = pb.DESCRIPTOR.services_by_name["Inference"]
Endpoint = Callable[[Request], Awaitable[Response]]


def servicer_method(servicer: object, name: str) -> Callable[..., Any]:
    """A servicer method without its gRPC edge (@rpc, applied with functools.wraps): protos in, protos out."""
    raw = inspect.unwrap(getattr(type(servicer), name))
    return lambda request: raw(servicer, request, None)


def path_of(method: str) -> str:
    """The route of an Inference method: /v1/ and its name in snake case."""
    return "/v1/" + re.sub(r"(?<!^)(?=[A-Z])", "_", method).lower()


def merged(replies: list[dict]) -> dict:
    """A stream's messages as one reply, by the proto's rule that each message continues the ones before: text
    and repeated fields are joined in order; a field set on one message only (`finished`, `header`) is kept."""
    whole: dict = {}
    for reply in replies:
        for key, value in reply.items():
            joined = isinstance(value, str | list) and key in whole
            whole[key] = whole[key] + value if joined else value
    return whole


def model_object(servicer: InferenceServicer, m: Model) -> dict:
    """A model as OpenAI's API lists one, with rnnserve's ModelInfo (kind, cell, sizes, labels, ...) beside it."""
    return {"id": m.name, "object": "model", "created": 0, "owned_by": "rnnserve",
            "rnnserve": to_json(model_info(m, servicer.host.repo.latest(m)))}


class NativeRoutes:
    """POST /v1/<method> for each Inference method the kinds serve; GET /v1/models[/{name}] (the latter shared
    with OpenAI clients)."""

    def __init__(self, servicer: InferenceServicer) -> None:
        self.servicer = servicer
        self.budget_s = servicer.settings.max_request_s

    def routes(self) -> list[Route]:
        return [*(Route(path_of(name), self._endpoint(name), methods=["POST"], name=name) for name in served_methods()),
                Route("/v1/models", self.list_route, methods=["GET"], name="ListModels"),
                Route("/v1/models/{name}", self.get_route, methods=["GET"], name="GetModel")]

    def _endpoint(self, name: str) -> Endpoint:
        method = INFERENCE.methods_by_name[name]
        message = message_factory.GetMessageClass(method.input_type)
        run = servicer_method(self.servicer, name)

        async def streamed(request: Request) -> Response:
            call = Call(name, self.budget_s)
            try:
                doc = await read_json(request)
                stream = pop_flag(doc, "stream")
                replies = run(parse(doc, message))
            except Exception as err:
                return call.refuse(err)
            if stream:
                return await call.stream(replies, lambda r: event(to_json(r)))

            async def whole() -> Response:
                return JSONResponse(merged([to_json(r) async for r in replies]))
            return await call.unary(whole, watch=request.receive)

        async def unary(request: Request) -> Response:
            call = Call(name, self.budget_s)
            try:
                request_message = parse(await read_json(request), message)
            except Exception as err:
                return call.refuse(err)

            async def reply() -> Response:
                return JSONResponse(to_json(await run(request_message)))
            return await call.unary(reply, watch=request.receive)  # a client that leaves frees what it held

        return streamed if method.server_streaming else unary

    async def list_route(self, request: Request) -> Response:
        """One entry per model name, its latest version (what `model` selects when no version is given)."""
        async def work() -> Response:
            repo = self.servicer.host.repo
            return JSONResponse({"object": "list", "data": [model_object(self.servicer, repo.get(name))
                                                            for name in repo.models]})
        return await Call("ListModels", self.budget_s).unary(work)

    async def get_route(self, request: Request) -> Response:
        async def work() -> Response:
            version = request.query_params.get("version", "0")
            if not (version.isascii() and version.isdigit()):
                raise InvalidArgument("version", f"must be a non-negative integer (0: the latest), got {version!r}")
            m = self.servicer.host.repo.get(request.path_params["name"], int(version))
            return JSONResponse(model_object(self.servicer, m))
        return await Call("GetModel", self.budget_s).unary(work)
