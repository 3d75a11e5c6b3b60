"""rnnserve.v1.Inference over HTTP: the proto's requests as JSON, streams as server-sent events, models listed.

Each route runs the gRPC servicer's own method body (servicer_method) on the message the JSON spells, so
validation, engines and results are the gRPC API's; only the edge differs (service/api/http/edge.py).
`stream: true` answers text/event-stream with one event per message Generate or Trace yields; without it,
the messages are merged into one JSON reply.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.api.http.edge import Call, event
from service.api.http.messages import parse, pop_flag, read_json, to_json
from service.api.native import InferenceServicer, model_info
from service.errors import InvalidArgument
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.models.repository import Model


def servicer_method(servicer: object, name: str) -> Callable[..., Any]:
    """A servicer method without its gRPC edge (@rpc, applied with functools.wraps): protos in, protos out."""
    raw = inspect.unwrap(getattr(type(servicer), name))
    return lambda request: raw(servicer, request, None)


def model_object(servicer: InferenceServicer, m: Model) -> dict:
    """A model as OpenAI's API lists one, with rnnserve's ModelInfo (kind, cell, sizes, labels, ...) beside it."""
    return {"id": m.name, "object": "model", "created": 0, "owned_by": "rnnserve",
            "rnnserve": to_json(model_info(m, servicer.host.repo.latest(m)))}


def _merged_generation(replies: list[dict]) -> dict:
    return {"text": "".join(r["text"] for r in replies), "logprobs": [x for r in replies for x in r["logprobs"]],
            "finished": replies[-1]["finished"]}


def _merged_trace(replies: list[dict]) -> dict:
    return {"header": replies[0]["header"], "steps": [s for r in replies[1:] for s in r["steps"]]}


class NativeRoutes:
    """POST /v1/generate, /v1/classify, /v1/trace; GET /v1/models[/{name}] (the latter shared with OpenAI clients)."""

    def __init__(self, servicer: InferenceServicer) -> None:
        self.servicer = servicer
        self.budget_s = servicer.settings.max_request_s
        self.generate = servicer_method(servicer, "Generate")
        self.classify = servicer_method(servicer, "Classify")
        self.trace = servicer_method(servicer, "Trace")

    def routes(self) -> list[Route]:
        return [Route("/v1/generate", self.generate_route, methods=["POST"], name="Generate"),
                Route("/v1/classify", self.classify_route, methods=["POST"], name="Classify"),
                Route("/v1/trace", self.trace_route, methods=["POST"], name="Trace"),
                Route("/v1/models", self.list_route, methods=["GET"], name="ListModels"),
                Route("/v1/models/{name}", self.get_route, methods=["GET"], name="GetModel")]

    async def _streamed(self, method: str, request: Request, message: type, run: Callable[[Any], AsyncIterator[Any]],
                        merge: Callable[[list[dict]], dict]) -> Response:
        call = Call(method, self.budget_s)
        try:
            doc = await read_json(request)
            stream = pop_flag(doc, "stream")
            replies = run(parse(doc, message))
        except Exception as err:
            return call.refuse(err)
        if stream:
            return await call.stream(replies, lambda r: event(to_json(r)))

        async def whole() -> Response:
            return JSONResponse(merge([to_json(r) async for r in replies]))
        return await call.unary(whole, watch=request.receive)

    async def generate_route(self, request: Request) -> Response:
        return await self._streamed("Generate", request, pb.GenerateRequest, self.generate, _merged_generation)

    async def trace_route(self, request: Request) -> Response:
        return await self._streamed("Trace", request, pb.TraceRequest, self.trace, _merged_trace)

    async def classify_route(self, request: Request) -> Response:
        async def work() -> Response:
            return JSONResponse(to_json(await self.classify(parse(await read_json(request), pb.ClassifyRequest))))
        return await Call("Classify", self.budget_s).unary(work)

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
