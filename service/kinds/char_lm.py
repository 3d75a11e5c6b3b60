"""The char_lm kind: one stateful graph (tokens + state -> logits + state), served by continuous decode batching.

Generate streams text (native and Open Inference Protocol); Trace reads the graph's own activations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from service.api import v2_params
from service.api.params import TraceParams, generate_params, trace_params
from service.api.v2_params import FINAL, Tensor, add_output, pack_bytes, set_params
from service.artifact import MODEL_FILE, Meta
from service.artifact.tokenizer import Tokenizer
from service.engine.scheduler import Scheduler
from service.engine.stream import Chunk, Finished
from service.errors import FailedPrecondition
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.interpret.trace import TRACE_CHUNK_CHARS, Trace, Tracer, Tracers, TraceRun
from service.kinds.base import Kind, Served
from service.models.model import Model
from service.models.runners import LMRunner, load_session
from service.models.thread_policy import BandedRunner, ThreadPolicy, decode_policy
from service.settings import Settings

FINISH = {"length": pb.FINISH_REASON_LENGTH, "stop": pb.FINISH_REASON_STOP}
TRACE_MESSAGE_VALUES = 1 << 18  # floats per Trace message at most (1 MiB), well under gRPC's 4 MiB default


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
    """One computed chunk of a trace as one message, built a step at a time: the whole chunk as Python floats
    would take ~32 bytes a value (8 MB for a 1 MiB message) on top of the message itself."""
    reply = pb.TraceResponse()
    for i, c in enumerate(t.chars):
        reply.steps.append(pb.TraceStep(
            position=t.first + i, char=c, **{q: v[i].tolist() for q, v in t.values.items()},
            next=[pb.CharProbability(char=tokens[j], probability=p)
                  for j, p in zip(t.top_ids[i].tolist(), t.top_probs[i].tolist(), strict=True)]))
    return reply


def next_steps(run: TraceRun, tokens: tuple[str, ...]) -> pb.TraceResponse | None:
    """Compute the next chunk and build its message (in a worker thread: both take milliseconds)."""
    t = run.next()
    return None if t is None else trace_steps(t, tokens)


def _v2_reply(template: v2.ModelInferResponse, wanted: list[Tensor], text: str, finished: Finished | None,
              stream: bool) -> v2.ModelInferResponse:
    reply = v2.ModelInferResponse()
    reply.CopyFrom(template)
    if wanted:
        add_output(reply, wanted[0], (1,), pack_bytes([text.encode()]))
    params: dict[str, bool | int | float | str] = {FINAL: finished is not None} if stream else {}
    if finished is not None:
        params.update(finish_reason=finished.reason, prompt_chars=finished.prompt_chars,
                      generated_chars=finished.generated_chars)
    set_params(reply.parameters, params)
    return reply


class CharLM(Kind[Scheduler]):
    name = "char_lm"
    v2_decoupled = True  # ModelStreamInfer sends the text as it is produced

    def __init__(self) -> None:
        self.tracers = Tracers()  # one per loaded version, read from its model.onnx on the first Trace; traces running
        self.rpcs = {"Generate": self.generate, "Trace": self.trace}

    def load(self, path: Path, meta: Meta, tokenizer: Tokenizer, intra_op_threads: int, inter_op_threads: int) -> LMRunner:
        if tokenizer.level != "char":
            raise ValueError(f"a char_lm needs a char tokenizer, got level {tokenizer.level!r}")
        ThreadPolicy.from_runtime(meta.runtime)  # a malformed recorded policy fails the load, not the engine
        return LMRunner(load_session(path, MODEL_FILE, meta, intra_op_threads, inter_op_threads), meta)

    def engine(self, model: Model, settings: Settings, loop: asyncio.AbstractEventLoop) -> Scheduler:
        runner = model.runner
        if policy := decode_policy(settings.decode_threads_by_batch, settings.intra_op_threads, model.meta.runtime):
            runner = BandedRunner(policy, lambda t: LMRunner(
                load_session(model.path, MODEL_FILE, model.meta, t, settings.inter_op_threads), model.meta))
        scheduler = Scheduler(model.name, model.version, runner, model.tokenizer, settings, loop)
        scheduler.start()
        return scheduler

    async def generate(self, served: Served[Scheduler], request: pb.GenerateRequest) -> AsyncIterator[pb.GenerateResponse]:
        arrival = time.perf_counter()
        model, scheduler = served.model, served.engine
        stream = scheduler.submit(generate_params(request, model.tokenizer, served.settings), arrival)
        try:
            async for chunk in stream.chunks():
                yield chunk_pb(chunk, model.version)
        finally:
            scheduler.cancel(stream)  # no-op once finished; otherwise frees the slot at the next step

    async def trace(self, served: Served[Scheduler], request: pb.TraceRequest) -> AsyncIterator[pb.TraceResponse]:
        """Streamed as it is computed, one chunk at a time: a client that stops reading stops the computation
        (the next chunk waits for the send), and one that leaves ends it at the next chunk."""
        model = served.model
        if model.meta.precision != "fp32":  # the trace recomputes the cell from the ONNX LSTM/GRU/RNN op's fp32 weights
            source = model.meta.evaluation.get("quantization", {}).get("from_version")
            raise FailedPrecondition(f"version {model.version} is {model.meta.precision}; Trace reads an fp32 graph: "
                                     f"trace {f'version {source}' if source else 'an fp32 version'} instead")
        p = trace_params(request, model.meta.sizes["n_layer"], model.meta.sizes["hidden_size"], served.settings)
        with self.tracers.slot(served.settings.max_traces):
            tracer = await asyncio.to_thread(self.tracers.get, model.runner, model.path)
            per_message = max(1, TRACE_MESSAGE_VALUES // (len(p.units) * len(tracer.quantities)))
            run = TraceRun(tracer, model.runner, model.tokenizer, p.text, p.layers, p.units, p.top_k,
                           min(TRACE_CHUNK_CHARS, per_message))
            yield trace_header(model.version, tracer, len(p.text), p)
            while (reply := await asyncio.to_thread(next_steps, run, model.tokenizer.tokens)) is not None:
                yield reply

    def v2_signature(self, model: Model) -> tuple[list[Tensor], list[Tensor]]:
        return [Tensor("prompt", "BYTES", (1,))], [Tensor("text", "BYTES", (1,))]

    def v2_parameters(self, model: Model) -> dict[str, str]:
        return {"request_parameters": ",".join(v2_params.LM_PARAMS)}

    async def v2_infer(self, served: Served[Scheduler], request: v2.ModelInferRequest,
                       stream: bool) -> AsyncIterator[v2.ModelInferResponse]:
        """Each chunk as it comes when streaming, else the whole text once; the scheduler as Generate uses it."""
        arrival = time.perf_counter()
        model, scheduler = served.model, served.engine
        inputs, outputs = self.v2_signature(model)
        wanted = v2_params.requested_outputs(request, model.name, outputs)
        template = v2_params.reply_to(request, model.name, model.version)
        native = v2_params.generate_request(request, model.name, inputs[0])
        s = scheduler.submit(generate_params(native, model.tokenizer, served.settings), arrival)
        try:
            texts = []
            async for chunk in s.chunks():
                if stream:
                    yield _v2_reply(template, wanted, chunk.text, chunk.finished, stream)
                else:
                    texts.append(chunk.text)
                    if chunk.finished is not None:
                        yield _v2_reply(template, wanted, "".join(texts), chunk.finished, stream)
        finally:
            scheduler.cancel(s)  # no-op once finished; otherwise frees the slot at the next step
