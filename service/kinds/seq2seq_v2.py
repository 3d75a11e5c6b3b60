"""The Open Inference Protocol replies of the encoder-decoder kinds (translator, captioner): their outputs are
text decoded by the seq2seq engine, whatever the source was."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence

from service.api.v2_params import FINAL, Tensor, add_output, pack_bytes, set_params
from service.engine.seq2seq import Seq2SeqEngine
from service.engine.seq2seq_stream import Seq2SeqFinished, Seq2SeqStream
from service.gen.inference import grpc_service_pb2 as v2


async def replies(engine: Seq2SeqEngine, streams: Sequence[Seq2SeqStream], template: v2.ModelInferResponse,
                  wanted: list[Tensor], stream: bool, source_size: str) -> AsyncGenerator[v2.ModelInferResponse, None]:
    """ModelStreamInfer (`stream`, one source): a response per chunk as it is decoded, the last one final.
    ModelInfer: one response with every output. `source_size` names the parameter that reports the source's
    size (a text's tokens, an image's regions). The streams are cancelled however the caller stops reading."""
    try:
        if stream:
            async for chunk in streams[0].chunks():
                finished = [chunk.finished] if chunk.finished else []
                yield _reply(template, wanted, [chunk.text], finished, True, source_size)
        else:
            done = await asyncio.gather(*(x.whole() for x in streams))
            yield _reply(template, wanted, [text for text, _ in done], [f for _, f in done], False, source_size)
    finally:
        for x in streams:
            engine.cancel(x)


def _reply(template: v2.ModelInferResponse, wanted: list[Tensor], texts: list[str], finished: list[Seq2SeqFinished],
           stream: bool, source_size: str) -> v2.ModelInferResponse:
    """The outputs as a BYTES tensor; with one source, how it ended as parameters (on the final response)."""
    reply = v2.ModelInferResponse()
    reply.CopyFrom(template)
    if wanted:
        add_output(reply, wanted[0], (len(texts),), pack_bytes([t.encode() for t in texts]))
    params: dict[str, bool | int | float | str] = {FINAL: bool(finished)} if stream else {}
    if len(finished) == 1:
        f = finished[0]
        params.update({"finish_reason": f.reason, source_size: f.source_tokens, "generated_tokens": f.generated_tokens})
    set_params(reply.parameters, params)
    return reply
