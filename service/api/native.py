"""The rnnserve.v1.Inference servicer: each request goes to its model's kind; model listings."""

from __future__ import annotations

import functools
import numbers
from collections.abc import AsyncIterator, Callable
from typing import Any

from service import kinds
from service.api.edge import rpc
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.models.host import ModelHost
from service.models.model import Model


def _flat(d: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict, keys joined with dots (meta.json evaluation -> ModelInfo.evaluation)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def model_info(m: Model, latest: bool) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=m.name, version=m.version, kind=m.meta.kind, cell=m.meta.cell,
        sizes={k: int(v) for k, v in m.meta.sizes.items() if isinstance(v, numbers.Integral)},
        labels=m.meta.labels, vocab_size=m.tokenizer.vocab_size, tokenizer_level=m.tokenizer.level,
        evaluation=_flat(m.meta.evaluation), description=m.meta.description, latest=latest)


class InferenceServicer(pb_grpc.InferenceServicer):
    """Generate, Classify, Trace, Translate, TranslateBatch, Caption and CaptionBatch go to the handler of the model's
    kind (service/kinds/); listings are served here."""

    def __init__(self, host: ModelHost) -> None:
        self.host, self.settings = host, host.settings

    def _handler(self, method: str, name: str, version: int) -> Callable[[Any], Any]:
        """The kind's handler of `method` for the named version, bound to it; UNAVAILABLE, NOT_FOUND, FAILED_PRECONDITION."""
        served = self.host.serve(name, version)
        return functools.partial(kinds.handler(served.kind, method, name), served)

    @rpc
    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:  # noqa: N802
        async for reply in self._handler("Generate", request.model, request.version)(request):
            yield reply

    @rpc
    async def Classify(self, request: pb.ClassifyRequest, context) -> pb.ClassifyResponse:  # noqa: N802
        return await self._handler("Classify", request.model, request.version)(request)

    @rpc
    async def Trace(self, request: pb.TraceRequest, context) -> AsyncIterator[pb.TraceResponse]:  # noqa: N802
        version = request.version or self.host.repo.trace_version(request.model)  # an int8 default: its fp32 source
        async for reply in self._handler("Trace", request.model, version)(request):
            yield reply

    @rpc
    async def Translate(self, request: pb.TranslateRequest, context) -> AsyncIterator[pb.TranslateResponse]:  # noqa: N802
        async for reply in self._handler("Translate", request.model, request.version)(request):
            yield reply

    @rpc
    async def TranslateBatch(self, request: pb.TranslateBatchRequest, context) -> pb.TranslateBatchResponse:  # noqa: N802
        return await self._handler("TranslateBatch", request.model, request.version)(request)

    @rpc
    async def Caption(self, request: pb.CaptionRequest, context) -> AsyncIterator[pb.CaptionResponse]:  # noqa: N802
        async for reply in self._handler("Caption", request.model, request.version)(request):
            yield reply

    @rpc
    async def CaptionBatch(self, request: pb.CaptionBatchRequest, context) -> pb.CaptionBatchResponse:  # noqa: N802
        return await self._handler("CaptionBatch", request.model, request.version)(request)

    @rpc
    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:  # noqa: N802
        repo = self.host.repo
        return pb.ListModelsResponse(models=[model_info(m, repo.latest(m)) for m in repo.all()])

    @rpc
    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelInfo:  # noqa: N802
        m = self.host.repo.get(request.name, request.version)
        return model_info(m, self.host.repo.latest(m))
