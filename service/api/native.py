"""The rnnserve.v1.Inference servicer: protos in, domain objects to the engines, protos out. Nothing else."""

from __future__ import annotations

import asyncio
import numbers
from collections.abc import AsyncIterator

from service.api.edge import rpc
from service.api.params import TraceParams, classify_rows, generate_params, trace_params
from service.engine.classify_batcher import Batcher
from service.engine.scheduler import Scheduler
from service.engine.stream import Chunk
from service.errors import FailedPrecondition, Unavailable
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.gen.rnnserve.v1 import rnnserve_pb2_grpc as pb_grpc
from service.interpret.trace import TRACE_CHUNK_CHARS, Trace, Tracer, Tracers, TraceRun
from service.models.repository import Model, Repository
from service.settings import Settings

FINISH = {"length": pb.FINISH_REASON_LENGTH, "stop": pb.FINISH_REASON_STOP}
TRACE_MESSAGE_VALUES = 1 << 18  # floats per Trace message at most (1 MiB), well under gRPC's 4 MiB default


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


def trace_header(version: int, tracer: Tracer, n_chars: int, p: TraceParams) -> pb.TraceResponse:
    """The first message of a Trace: what every step's columns are."""
    return pb.TraceResponse(header=pb.TraceHeader(
        version=version, cell=tracer.cell, n_chars=n_chars, quantities=list(tracer.quantities),
        columns=[pb.TraceColumn(layer=layer, unit=u) for layer, u in zip(p.layers, p.units, strict=True)]))


def trace_steps(t: Trace, tokens: tuple[str, ...]) -> pb.TraceResponse:
    """One computed chunk of a trace as one message."""
    rows = {q: v.tolist() for q, v in t.values.items()}
    return pb.TraceResponse(steps=[
        pb.TraceStep(position=t.first + i, char=c, **{q: r[i] for q, r in rows.items()},
                     next=[pb.CharProbability(char=tokens[j], probability=p)
                           for j, p in zip(t.top_ids[i].tolist(), t.top_probs[i].tolist(), strict=True)])
        for i, c in enumerate(t.chars)])


def _next_steps(run: TraceRun, tokens: tuple[str, ...]) -> pb.TraceResponse | None:
    """Compute the next chunk and build its message (in a worker thread: both take milliseconds)."""
    t = run.next()
    return None if t is None else trace_steps(t, tokens)


class InferenceServicer(pb_grpc.InferenceServicer):
    def __init__(self, repo: Repository, engines: dict[tuple[str, int], Scheduler | Batcher], settings: Settings) -> None:
        self.repo, self.engines, self.settings = repo, engines, settings
        self.draining = False
        self.tracers = Tracers(settings.max_traces)

    def _engine(self, name: str, version: int, kind: str, method: str) -> tuple[Model, Scheduler | Batcher]:
        if self.draining:
            raise Unavailable("the server is shutting down")
        model = self.repo.get(name, version)
        if model.kind != kind:
            raise FailedPrecondition(f"{method} needs a {kind} model; {name!r} is a {model.kind}")
        return model, self.engines[(model.name, model.version)]

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
        return pb.ListModelsResponse(models=[model_info(m, self.repo.latest(m)) for m in self.repo.all()])

    @rpc
    async def GetModel(self, request: pb.GetModelRequest, context) -> pb.ModelInfo:  # noqa: N802
        m = self.repo.get(request.name, request.version)
        return model_info(m, self.repo.latest(m))

    @rpc
    async def Trace(self, request: pb.TraceRequest, context) -> AsyncIterator[pb.TraceResponse]:  # noqa: N802
        """Streamed as it is computed, one chunk at a time: a client that stops reading stops the computation
        (the next chunk waits for the send), and one that leaves ends it at the next chunk."""
        model, _ = self._engine(request.model, request.version, "char_lm", "Trace")
        p = trace_params(request, model.meta.sizes["n_layer"], model.meta.sizes["hidden_size"], self.settings)
        with self.tracers.slot():
            tracer = await asyncio.to_thread(self.tracers.get, model.runner, model.path)
            per_message = max(1, TRACE_MESSAGE_VALUES // (len(p.units) * len(tracer.quantities)))
            run = TraceRun(tracer, model.runner, model.tokenizer, p.text, p.layers, p.units, p.top_k,
                           min(TRACE_CHUNK_CHARS, per_message))
            yield trace_header(model.version, tracer, len(p.text), p)
            while (reply := await asyncio.to_thread(_next_steps, run, model.tokenizer.tokens)) is not None:
                yield reply
