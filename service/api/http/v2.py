"""The Open Inference Protocol's HTTP/REST binding (KServe v2, as Triton serves it) over the v2 gRPC servicer.

Each route runs the GRPCInferenceServicer method of the same name on the message the URL and body spell
(service/api/http/v2_json.py), so both bindings accept, refuse and answer alike. Readiness is the status:
200 when ready; a server that is not ready answers 503, a model 404 when it is not loaded, 503 while draining,
each with an `error` saying why, like every other reply that is not 200.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.api.http import v2_json
from service.api.http.edge import Call
from service.api.http.messages import to_json
from service.api.http.native import servicer_method
from service.api.v2 import GRPCInferenceServicer
from service.errors import InvalidArgument
from service.gen.inference import grpc_service_pb2 as v2

MODEL = "/v2/models/{name}"
VERSION = "/v2/models/{name}/versions/{version}"


def _target(request: Request) -> tuple[str, str]:
    return request.path_params["name"], request.path_params.get("version", "")


class V2Routes:
    def __init__(self, servicer: GRPCInferenceServicer) -> None:
        self.servicer = servicer
        self.budget_s = servicer.settings.max_request_s
        self.call = {name: servicer_method(servicer, name) for name in (
            "ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelConfig", "ModelInfer")}

    def routes(self) -> list[Route]:
        routes = [Route("/v2/health/live", self.live, methods=["GET"], name="ServerLive"),
                  Route("/v2/health/ready", self.ready, methods=["GET"], name="ServerReady"),
                  Route("/v2", self.server_metadata, methods=["GET"], name="ServerMetadata")]
        for base in (MODEL, VERSION):
            routes += [Route(base, self.model_metadata, methods=["GET"], name="ModelMetadata"),
                       Route(f"{base}/ready", self.model_ready, methods=["GET"], name="ModelReady"),
                       Route(f"{base}/config", self.model_config, methods=["GET"], name="ModelConfig"),
                       Route(f"{base}/infer", self.infer, methods=["POST"], name="ModelInfer")]
        return routes

    async def _json(self, method: str, request: object) -> Response:
        async def work() -> Response:
            return JSONResponse(to_json(await self.call[method](request)))
        return await Call(method, self.budget_s, v2=True).unary(work)

    async def live(self, request: Request) -> Response:
        return await self._json("ServerLive", v2.ServerLiveRequest())

    async def ready(self, request: Request) -> Response:
        async def work() -> Response:
            ready = (await self.call["ServerReady"](v2.ServerReadyRequest())).ready
            if ready:
                return JSONResponse({"ready": True})
            return JSONResponse({"ready": False, "error": "the server is not ready (starting or draining)"}, 503)
        return await Call("ServerReady", self.budget_s, v2=True).unary(work)

    async def server_metadata(self, request: Request) -> Response:
        return await self._json("ServerMetadata", v2.ServerMetadataRequest())

    async def model_metadata(self, request: Request) -> Response:
        name, version = _target(request)
        return await self._json("ModelMetadata", v2.ModelMetadataRequest(name=name, version=version))

    async def model_ready(self, request: Request) -> Response:
        name, version = _target(request)

        async def work() -> Response:
            ready = (await self.call["ModelReady"](v2.ModelReadyRequest(name=name, version=version))).ready
            if ready:
                return JSONResponse({"name": name, "ready": True})
            # Not ready is an error like any other non-200 reply: it says why.
            if self.servicer.host.draining and name in self.servicer.host.repo.models:
                return JSONResponse({"name": name, "ready": False, "error": "the server is draining"}, 503)
            which = f"version {version} of model {name!r}" if version else f"model {name!r}"
            return JSONResponse({"name": name, "ready": False, "error": f"{which} is not loaded"}, 404)
        return await Call("ModelReady", self.budget_s, v2=True).unary(work)

    async def model_config(self, request: Request) -> Response:
        """The model's configuration itself, as Triton's HTTP binding returns it (gRPC wraps it in `config`)."""
        name, version = _target(request)

        async def work() -> Response:
            reply = await self.call["ModelConfig"](v2.ModelConfigRequest(name=name, version=version))
            return JSONResponse(to_json(reply.config))
        return await Call("ModelConfig", self.budget_s, v2=True).unary(work)

    async def infer(self, request: Request) -> Response:
        call = Call("ModelInfer", self.budget_s, v2=True)
        try:
            if request.headers.get("content-encoding", "identity") != "identity":
                raise InvalidArgument("Content-Encoding", "compressed requests are not accepted; send the body as it is")
            decoded = v2_json.infer_request(await request.body(), request.headers.get(v2_json.HEADER_LENGTH))
        except Exception as err:
            return call.refuse(err)
        decoded.message.model_name, decoded.message.model_version = _target(request)

        async def work() -> Response:
            body, header_length = v2_json.infer_response(await self.call["ModelInfer"](decoded.message), decoded)
            if header_length is None:
                return Response(body, media_type="application/json")
            return Response(body, media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(header_length)})
        return await call.unary(work, watch=request.receive)
