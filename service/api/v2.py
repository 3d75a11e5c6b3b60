"""The Open Inference Protocol (KServe v2) servicer, inference.GRPCInferenceService: each model's kind answers its requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from service import kinds, metrics
from service.api.edge import budget_error, describe, rpc
from service.api.session import Limits, run_session
from service.api.v2_params import Tensor
from service.errors import InvalidArgument, NotFound
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.inference import grpc_service_pb2_grpc as v2_grpc
from service.gen.inference import model_config_pb2 as mc
from service.kinds import Served
from service.models.host import ModelHost
from service.models.model import Model

SERVER_NAME, SERVER_VERSION = "rnnserve", "1"
EXTENSIONS = ["model_configuration", "parameters"]
DATATYPES = {"BYTES": mc.TYPE_STRING, "FP32": mc.TYPE_FP32}


def parse_version(version: str, field: str) -> int:
    """The protocol's version string as the repository's number (0: the latest)."""
    if not version:
        return 0
    if not (version.isascii() and version.isdigit()) or int(version) == 0:  # str.isdigit alone takes "¹", int() does not
        raise InvalidArgument(field, f"must be a positive integer or empty (the latest), got {version!r}")
    return int(version)


def _tensor_meta(t: Tensor) -> v2.ModelMetadataResponse.TensorMetadata:
    return v2.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)


def model_config(m: Model) -> mc.ModelConfig:
    kind = kinds.get(m.kind)
    inputs, outputs = kind.v2_signature(m)
    params = {"kind": m.kind, "cell": m.meta.cell, "version": str(m.version), **kind.v2_parameters(m)}
    return mc.ModelConfig(
        name=m.name, platform=f"rnnserve_{m.kind}", backend="rnnserve", max_batch_size=0,
        input=[mc.ModelInput(name=t.name, data_type=DATATYPES[t.datatype], dims=t.shape) for t in inputs],
        output=[mc.ModelOutput(name=t.name, data_type=DATATYPES[t.datatype], dims=t.shape) for t in outputs],
        parameters={k: mc.ModelParameter(string_value=v) for k, v in params.items()},
        model_transaction_policy=mc.ModelTransactionPolicy(decoupled=kind.v2_decoupled))


class GRPCInferenceServicer(v2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, host: ModelHost) -> None:
        self.host, self.settings = host, host.settings

    def _served(self, name: str, version: str) -> Served:
        """The model version a ModelInfer request names, with its kind and engine; UNAVAILABLE while draining."""
        return self.host.serve(name, parse_version(version, "model_version"))

    @rpc
    async def ServerLive(self, request: v2.ServerLiveRequest, context) -> v2.ServerLiveResponse:  # noqa: N802
        return v2.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request: v2.ServerReadyRequest, context) -> v2.ServerReadyResponse:  # noqa: N802
        return v2.ServerReadyResponse(ready=not self.host.draining and bool(self.host.repo.models))

    @rpc
    async def ModelReady(self, request: v2.ModelReadyRequest, context) -> v2.ModelReadyResponse:  # noqa: N802
        try:
            self.host.repo.get(request.name, parse_version(request.version, "version"))
        except NotFound:
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=not self.host.draining)

    @rpc
    async def ServerMetadata(self, request: v2.ServerMetadataRequest, context) -> v2.ServerMetadataResponse:  # noqa: N802
        return v2.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS)

    @rpc
    async def ModelMetadata(self, request: v2.ModelMetadataRequest, context) -> v2.ModelMetadataResponse:  # noqa: N802
        m = self.host.repo.get(request.name, parse_version(request.version, "version"))
        inputs, outputs = kinds.get(m.kind).v2_signature(m)
        return v2.ModelMetadataResponse(
            name=m.name, versions=[str(v) for v in self.host.repo.models[m.name]], platform=f"rnnserve_{m.kind}",
            inputs=[_tensor_meta(t) for t in inputs], outputs=[_tensor_meta(t) for t in outputs])

    @rpc
    async def ModelConfig(self, request: v2.ModelConfigRequest, context) -> v2.ModelConfigResponse:  # noqa: N802
        m = self.host.repo.get(request.name, parse_version(request.version, "version"))
        return v2.ModelConfigResponse(config=model_config(m))

    @rpc
    async def ModelInfer(self, request: v2.ModelInferRequest, context) -> v2.ModelInferResponse:  # noqa: N802
        served = self._served(request.model_name, request.model_version)
        replies = [r async for r in served.kind.v2_infer(served, request, stream=False)]
        return replies[-1]

    @rpc(session=True)
    async def ModelStreamInfer(self, requests: AsyncIterator[v2.ModelInferRequest],  # noqa: N802
                               context) -> AsyncIterator[v2.ModelStreamInferResponse]:
        """Each request runs as it arrives, a few at a time (session_max_requests, session_max_bytes); a failed one
        is an error_message, the stream goes on."""
        s = self.settings
        limits = Limits(s.session_max_requests, s.session_max_bytes, s.max_receive_message_bytes)
        async for reply in run_session(requests, self._stream_one, limits):
            yield reply

    async def _stream_one(self, request: v2.ModelInferRequest) -> AsyncIterator[v2.ModelStreamInferResponse]:
        """One request of a session, under the time budget of a request."""
        t0, code, budget_s = time.perf_counter(), "OK", self.settings.max_request_s
        budget = asyncio.timeout(budget_s)
        try:
            async with budget:
                served = self._served(request.model_name, request.model_version)
                async with aclosing(served.kind.v2_infer(served, request, stream=True)) as replies:
                    async for reply in replies:
                        yield v2.ModelStreamInferResponse(infer_response=reply)
        except Exception as err:
            status, message = describe(budget_error(err, budget, budget_s), "ModelStreamInfer")
            code = status.name
            failed = v2.ModelStreamInferResponse(  # the id (and model) say which request failed
                error_message=message, infer_response=v2.ModelInferResponse(model_name=request.model_name, id=request.id))
        else:
            failed = None
        if failed is not None:  # sent outside the except block: while it waits for a client that does not read, the
            yield failed  # error's traceback would hold the frames that parsed the request (3 copies of its texts)
        metrics.observe_request("ModelStreamInfer.request", code, time.perf_counter() - t0)
