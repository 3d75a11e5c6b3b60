"""The translator kind: an encoder graph and a decoder-step graph, served by continuous batching of decoder steps.

Translate streams a translation as it is decoded; TranslateBatch translates many texts at once; both are
served over the Open Inference Protocol too (ModelInfer, and ModelStreamInfer streaming one text).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path

from service.api import v2_params
from service.api.params import flush
from service.api.translate_params import LengthRule, Search, count_texts, search, seq2seq_params, source_ids
from service.api.v2_params import Tensor
from service.artifact import DECODER_FILE, ENCODER_FILE, Meta
from service.engine.seq2seq import Seq2SeqEngine
from service.engine.seq2seq_stream import Seq2SeqFinished, Seq2SeqStream
from service.engine.stream import MAX_FLUSH_CHARS
from service.errors import InvalidArgument
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.kinds import seq2seq_v2
from service.kinds.base import Kind, Served
from service.metrics import Seq2SeqMetrics
from service.models.model import Model
from service.models.runners import TranslatorRunner, load_session
from service.models.subwords import SubwordPair
from service.settings import Settings

FINISH = {"length": pb.FINISH_REASON_LENGTH, "stop": pb.FINISH_REASON_STOP}
WHOLE = (MAX_FLUSH_CHARS, 1e9)  # flush settings of a request whose text is wanted only at the end (finite: staggered)


def _rule(meta: Meta) -> LengthRule:
    rule = meta.translator["max_len"]
    return LengthRule(rule["a"], rule["b"])


def _default_penalty(meta: Meta) -> float:
    return float(meta.translator["beam"]["length_penalty"])


def finished_pb(f: Seq2SeqFinished, version: int, source: Sequence[int], tok: SubwordPair) -> pb.TranslateFinished:
    reply = pb.TranslateFinished(
        finish_reason=FINISH[f.reason], version=version,
        usage=pb.TranslateUsage(source_tokens=f.source_tokens, generated_tokens=f.generated_tokens,
                                time_to_first_token_s=f.time_to_first_token_s, total_time_s=f.total_time_s,
                                queue_time_s=f.queue_time_s))
    if f.attention is not None:
        target = tok.target_tokens([*f.tokens, *([tok.eos] if f.reason == "stop" else [])])
        reply.alignment.CopyFrom(pb.Alignment(source_tokens=tok.source_tokens(source), target_tokens=target,
                                              weights=f.attention.ravel().tolist()))
    return reply


class Translator(Kind[Seq2SeqEngine]):
    name = "translator"
    v2_decoupled = True  # ModelStreamInfer sends the translation as it is decoded

    def __init__(self) -> None:
        self.rpcs = {"Translate": self.translate, "TranslateBatch": self.translate_batch}

    def read_tokenizer(self, path: Path, meta: Meta) -> SubwordPair:
        return SubwordPair.read(path, meta)

    def load(self, path: Path, meta: Meta, tokenizer: SubwordPair, intra_op_threads: int,
             inter_op_threads: int) -> TranslatorRunner:
        encoder = load_session(path, ENCODER_FILE, meta, intra_op_threads, inter_op_threads)
        decoder = load_session(path, DECODER_FILE, meta, intra_op_threads, inter_op_threads)
        return TranslatorRunner(encoder, decoder, meta, tokenizer.pad)

    def engine(self, model: Model, settings: Settings, loop: asyncio.AbstractEventLoop) -> Seq2SeqEngine:
        longest = min(_rule(model.meta)(settings.max_source_tokens), settings.max_tokens_limit)
        metrics = Seq2SeqMetrics.bind(model.name, model.version, self.name, "Translate")
        engine = Seq2SeqEngine(model.name, model.version, metrics, model.runner, model.runner, model.tokenizer, longest,
                               settings, loop)
        engine.start()
        return engine

    def _submit(self, served: Served[Seq2SeqEngine], texts: Sequence[tuple[str, str]], options: Search,
                flushing: tuple[int, float]) -> list[Seq2SeqStream]:
        """(field, text) pairs -> running requests, all or none."""
        model, s = served.model, served.settings
        ids = [source_ids(text, field, model.tokenizer.encode_source, s) for field, text in texts]
        return served.engine.submit([seq2seq_params(x, options, _rule(model.meta), *flushing) for x in ids])

    async def translate(self, served: Served[Seq2SeqEngine],
                        request: pb.TranslateRequest) -> AsyncIterator[pb.TranslateResponse]:
        model, engine = served.model, served.engine
        options = search(request, _default_penalty(model.meta), served.settings)
        (stream,) = self._submit(served, [("text", request.text)], options, flush(request, served.settings))
        try:
            async for chunk in stream.chunks():
                reply = pb.TranslateResponse(text=chunk.text)
                if chunk.finished is not None:
                    reply.finished.CopyFrom(finished_pb(chunk.finished, model.version, stream.params.source, model.tokenizer))
                yield reply
        finally:
            engine.cancel(stream)  # no-op once finished; otherwise frees its rows at the next step

    async def translate_batch(self, served: Served[Seq2SeqEngine],
                              request: pb.TranslateBatchRequest) -> pb.TranslateBatchResponse:
        model, engine, s = served.model, served.engine, served.settings
        count_texts(len(request.texts), "texts", s)
        options = search(request, _default_penalty(model.meta), s)
        streams = self._submit(served, [(f"texts[{i}]", t) for i, t in enumerate(request.texts)], options, WHOLE)
        try:
            done = await asyncio.gather(*(x.whole() for x in streams))
        finally:
            for x in streams:
                engine.cancel(x)
        return pb.TranslateBatchResponse(version=model.version, translations=[
            pb.Translation(text=text, finished=finished_pb(f, model.version, x.params.source, model.tokenizer))
            for x, (text, f) in zip(streams, done, strict=True)])

    def v2_signature(self, model: Model) -> tuple[list[Tensor], list[Tensor]]:
        return [Tensor("text", "BYTES", (-1,))], [Tensor("translation", "BYTES", (-1,))]

    def v2_parameters(self, model: Model) -> dict[str, str]:
        languages = model.meta.translator["languages"]
        return {"request_parameters": ",".join(v2_params.TRANSLATE_PARAMS),
                "source_language": str(languages.get("source", "")), "target_language": str(languages.get("target", ""))}

    async def v2_infer(self, served: Served[Seq2SeqEngine], request: v2.ModelInferRequest,
                       stream: bool) -> AsyncIterator[v2.ModelInferResponse]:
        """ModelInfer: every text's translation at once. ModelStreamInfer: one text, its chunks as they are decoded."""
        model, engine = served.model, served.engine
        inputs, outputs = self.v2_signature(model)
        wanted = v2_params.requested_outputs(request, model.name, outputs)
        template = v2_params.reply_to(request, model.name, model.version)
        texts, native = v2_params.translate_request(request, model.name, inputs[0])
        count_texts(len(texts), f"inputs[{inputs[0].name!r}]", served.settings)
        if stream and len(texts) != 1:
            raise InvalidArgument(f"inputs[{inputs[0].name!r}].shape",
                                  f"ModelStreamInfer translates one text per request, got {len(texts)}")
        options = search(native, _default_penalty(model.meta), served.settings)
        flushing = flush(native, served.settings) if stream else WHOLE
        streams = self._submit(served, [(f"inputs[{inputs[0].name!r}][{i}]", t) for i, t in enumerate(texts)],
                               options, flushing)
        # aclosing: when the client leaves, closing this generator closes the replies' too, which cancels the streams.
        async with aclosing(seq2seq_v2.replies(engine, streams, template, wanted, stream, "source_tokens")) as replies:
            async for reply in replies:
                yield reply
