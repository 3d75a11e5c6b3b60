"""The rnnserve.v1.Inference servicer: protos in, domain objects to the engines, protos out. Nothing else."""

from __future__ import annotations

import asyncio
import numbers
from collections.abc import AsyncIterator
from typing import Any

from service.api.edge import rpc
from service.api.params import classify_rows, generate_params, trace_params
from service.engine.stream import Chunk
from service.errors import FailedPrecondition
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.interpret.trace import Trace, Tracers, trace_text
from service.models.host import ModelHost
from service.models.repository import Model

FINISH = {"length": pb.FINISH_REASON_LENGTH, "stop": pb.FINISH_REASON_STOP}
TRACE_MESSAGE_VALUES = 1 << 18  # floats per Trace message (1 MiB), well under gRPC's 4 MiB default


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


def chunk_pb(chunk: Chunk, version: int) -> pb.GenerateResponse:
    reply = pb.GenerateResponse(text=chunk.text, logprobs=chunk.logprobs or ())
    if (f := chunk.finished) is not None:
        reply.finished.CopyFrom(pb.Finished(
            finish_reason=FINISH[f.reason], version=version,
            usage=pb.Usage(prompt_chars=f.prompt_chars, generated_chars=f.generated_chars,
                           time_to_first_char_s=f.time_to_first_char_s, total_time_s=f.total_time_s,
                           queue_time_s=f.queue_time_s)))
    return reply


def trace_pb(t: Trace, version: int, cell: str, tokens: tuple[str, ...]) -> list[pb.TraceResponse]:
    """The header message, then the steps in messages of at most TRACE_MESSAGE_VALUES activations each."""
    header = pb.TraceHeader(version=version, cell=cell, n_chars=len(t.chars), quantities=list(t.values),
                            columns=[pb.TraceColumn(layer=layer, unit=u) for layer, u in zip(t.layers, t.units, strict=True)])
    rows = {q: v.tolist() for q, v in t.values.items()}
    per_message = max(1, TRACE_MESSAGE_VALUES // (len(t.units) * len(rows)))
    replies = [pb.TraceResponse(header=header)]
    for start in range(0, len(t.chars), per_message):
        replies.append(pb.TraceResponse(steps=[
            pb.TraceStep(position=i, char=t.chars[i], **{q: r[i] for q, r in rows.items()},
                         next=[pb.CharProbability(char=tokens[j], probability=p)
                               for j, p in zip(t.top_ids[i].tolist(), t.top_probs[i].tolist(), strict=True)])
            for i in range(start, min(start + per_message, len(t.chars)))]))
    return replies


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(self, host: ModelHost) -> None:
        self.host, self.settings = host, host.settings
        self.tracers = Tracers()

    def _engine(self, name: str, version: int, kind: str, method: str) -> tuple[Model, Any]:
        self.host.check_open()
        model = self.host.repo.get(name, version)
        if model.kind != kind:
            raise FailedPrecondition(f"{method} needs a {kind} model; {name!r} is a {model.kind}")
        return model, self.host.engine(model)

    @rpc
    async def Generate(self, request: pb.GenerateRequest, context) -> AsyncIterator[pb.GenerateResponse]:  # noqa: N802
        model, scheduler = self._engine(request.model, request.version, "char_lm", "Generate")
        stream = scheduler.submit(generate_params(request, model.tokenizer, self.settings))
        try:
            async for chunk in stream.chunks():
                yield chunk_pb(chunk, model.version)
        finally:
            scheduler.cancel(stream)  # no-op once finished; otherwise frees the slot at the next step

    @rpc
    async def Classify(self, request: pb.ClassifyRequest, context) -> pb.ClassifyResponse:  # noqa: N802
        model, batcher = self._engine(request.model, request.version, "classifier", "Classify")
        probs = await batcher.classify(classify_rows(request, model.tokenizer, self.settings))
        labels = model.meta.labels
        return pb.ClassifyResponse(version=model.version, results=[
            pb.Classification(label=labels[int(p.argmax())], probabilities=p.tolist(), labels=labels) for p in probs])

    @rpc
    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:  # noqa: N802
        repo = self.host.repo
        return pb.ListModelsResponse(models=[model_info(m, repo.latest(m)) for m in repo.all()])

    @rpc
    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelInfo:  # noqa: N802
        m = self.host.repo.get(request.name, request.version)
        return model_info(m, self.host.repo.latest(m))

    @rpc
    async def Trace(self, request: pb.TraceRequest, context) -> AsyncIterator[pb.TraceResponse]:  # noqa: N802
        model, _ = self._engine(request.model, request.version, "char_lm", "Trace")
        p = trace_params(request, model.meta.sizes["n_layer"], model.meta.sizes["hidden_size"], self.settings)
        tracer = await asyncio.to_thread(self.tracers.get, model.runner, model.path)
        t = await asyncio.to_thread(trace_text, tracer, model.runner, model.tokenizer, p.text, p.layers, p.units, p.top_k)
        for reply in await asyncio.to_thread(trace_pb, t, model.version, tracer.cell, model.tokenizer.tokens):
            yield reply
