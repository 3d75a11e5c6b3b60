"""The captioner kind: an image encoder graph and a decoder-step graph, served by the translator's engine.

An image is read (decoded, oriented, resized: artifact/image.py) in a thread pool, then becomes one request of
the encoder-decoder engine (engine/seq2seq.py): the images that join together go through the encoder in one
call, and every running caption advances by one decoder step at a time, greedy or beam search, exactly as
translations do. Caption streams a caption as it is decoded; CaptionBatch captions many images at once; both
are served over the Open Inference Protocol too (ModelInfer, and ModelStreamInfer streaming one image).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

from service.api import v2_params
from service.api.images import ImageReader
from service.api.params import flush
from service.api.translate_params import Search, search
from service.api.v2_params import Tensor
from service.artifact import DECODER_FILE, ENCODER_FILE, Meta
from service.artifact.image import ImageSpec
from service.engine.seq2seq import Seq2SeqEngine
from service.engine.seq2seq_stream import Seq2SeqFinished, Seq2SeqParams, Seq2SeqStream
from service.errors import InvalidArgument
from service.gen.inference import grpc_service_pb2 as v2
from service.gen.rnnserve.v1 import rnnserve_pb2 as pb
from service.kinds import seq2seq_v2
from service.kinds.base import Kind, Served
from service.kinds.translator import FINISH, WHOLE
from service.metrics import ImageMetrics, Seq2SeqMetrics
from service.models.model import Model
from service.models.runners import CaptionerRunner, load_session
from service.models.subwords import TargetVocab
from service.settings import Settings


class CaptionEngine(Seq2SeqEngine):
    """The encoder-decoder engine of a captioner version, with the reader of its images (closed with it)."""

    images: ImageReader

    async def close(self) -> None:
        self.images.close()
        await super().close()


def _grid(meta: Meta) -> tuple[int, int]:
    grid = meta.captioner["grid"]
    return int(grid["rows"]), int(grid["cols"])


def count_images(n: int, field: str, s: Settings) -> None:
    """A request captions 1 .. max_caption_images images."""
    if n == 0:
        raise InvalidArgument(field, "must hold at least one image")
    if n > s.max_caption_images:
        raise InvalidArgument(field, f"{n} images, at most {s.max_caption_images} per request")


def finished_pb(f: Seq2SeqFinished, version: int, tok: TargetVocab, grid: tuple[int, int],
                decode_s: float) -> pb.CaptionFinished:
    reply = pb.CaptionFinished(
        finish_reason=FINISH[f.reason], version=version,
        usage=pb.CaptionUsage(regions=f.source_tokens, generated_tokens=f.generated_tokens,
                              time_to_first_token_s=f.time_to_first_token_s, total_time_s=f.total_time_s,
                              queue_time_s=f.queue_time_s, image_decode_s=decode_s))
    if f.attention is not None:
        words = tok.target_tokens([*f.tokens, *([tok.eos] if f.reason == "stop" else [])])
        reply.attention.CopyFrom(pb.CaptionAttention(rows=grid[0], cols=grid[1], words=words,
                                                     weights=f.attention.ravel().tolist()))
    return reply


class Captioner(Kind[CaptionEngine]):
    name = "captioner"
    v2_decoupled = True  # ModelStreamInfer sends the caption as it is decoded

    def __init__(self) -> None:
        self.rpcs = {"Caption": self.caption, "CaptionBatch": self.caption_batch}

    def read_tokenizer(self, path: Path, meta: Meta) -> TargetVocab:
        return TargetVocab.read_captioner(path, meta)

    def load(self, path: Path, meta: Meta, tokenizer: TargetVocab, intra_op_threads: int,
             inter_op_threads: int) -> CaptionerRunner:
        encoder = load_session(path, ENCODER_FILE, meta, intra_op_threads, inter_op_threads, recurrent=False)
        decoder = load_session(path, DECODER_FILE, meta, intra_op_threads, inter_op_threads)
        return CaptionerRunner(encoder, decoder, meta)

    def engine(self, model: Model, settings: Settings, loop: asyncio.AbstractEventLoop) -> CaptionEngine:
        meta = model.meta
        longest = min(int(meta.captioner["max_len"]["tokens"]), settings.max_tokens_limit)
        metrics = Seq2SeqMetrics.bind(model.name, model.version, self.name, "Caption")
        # The image encoder's batch has its own setting: an image costs far more than a sentence to encode.
        engine = CaptionEngine(model.name, model.version, metrics, model.runner, model.runner, model.tokenizer, longest,
                               replace(settings, encode_batch=settings.image_encode_batch), loop)
        spec = ImageSpec(model.runner.height, model.runner.width)
        engine.images = ImageReader(spec, settings, ImageMetrics.bind(model.name, model.version))
        engine.start()
        return engine

    async def _submit(self, served: Served[CaptionEngine], images: Sequence[tuple[str, bytes]], options: Search,
                      flushing: tuple[int, float]) -> tuple[list[Seq2SeqStream], list[float]]:
        """(field, image bytes) pairs -> running requests, all or none, and the seconds each image took to read."""
        model, engine = served.model, served.engine
        read = await engine.images.read(images)
        limit = int(model.meta.captioner["max_len"]["tokens"])
        if options.max_tokens is not None:
            limit = min(limit, options.max_tokens)
        regions = model.runner.regions
        params = [Seq2SeqParams(x, regions, options.beam_size, options.length_penalty, limit, options.attention, *flushing)
                  for x, _ in read]
        return engine.submit(params), [seconds for _, seconds in read]

    def _options(self, served: Served[CaptionEngine], request: pb.CaptionRequest | pb.CaptionBatchRequest) -> Search:
        return search(request, float(served.model.meta.captioner["beam"]["length_penalty"]), served.settings)

    async def caption(self, served: Served[CaptionEngine], request: pb.CaptionRequest) -> AsyncIterator[pb.CaptionResponse]:
        model, engine = served.model, served.engine
        options, flushing = self._options(served, request), flush(request, served.settings)
        (stream,), (decode_s,) = await self._submit(served, [("image", request.image)], options, flushing)
        try:
            async for chunk in stream.chunks():
                reply = pb.CaptionResponse(text=chunk.text)
                if chunk.finished is not None:
                    reply.finished.CopyFrom(finished_pb(chunk.finished, model.version, model.tokenizer,
                                                        _grid(model.meta), decode_s))
                yield reply
        finally:
            engine.cancel(stream)  # no-op once finished; otherwise frees its rows at the next step

    async def caption_batch(self, served: Served[CaptionEngine],
                            request: pb.CaptionBatchRequest) -> pb.CaptionBatchResponse:
        model, engine = served.model, served.engine
        count_images(len(request.images), "images", served.settings)
        options = self._options(served, request)
        images = [(f"images[{i}]", data) for i, data in enumerate(request.images)]
        streams, seconds = await self._submit(served, images, options, WHOLE)
        try:
            done = await asyncio.gather(*(x.whole() for x in streams))
        finally:
            for x in streams:
                engine.cancel(x)
        grid = _grid(model.meta)
        return pb.CaptionBatchResponse(version=model.version, captions=[
            pb.Caption(text=text, finished=finished_pb(f, model.version, model.tokenizer, grid, s))
            for (text, f), s in zip(done, seconds, strict=True)])

    def v2_signature(self, model: Model) -> tuple[list[Tensor], list[Tensor]]:
        return [Tensor("image", "BYTES", (-1,))], [Tensor("caption", "BYTES", (-1,))]

    def v2_parameters(self, model: Model) -> dict[str, str]:
        rows, cols = _grid(model.meta)
        image = model.meta.captioner["image"]
        return {"request_parameters": ",".join(v2_params.TRANSLATE_PARAMS), "image_formats": "JPEG,PNG",
                "image_size": f"{image['height']}x{image['width']}", "attention_grid": f"{rows}x{cols}"}

    async def v2_infer(self, served: Served[CaptionEngine], request: v2.ModelInferRequest,
                       stream: bool) -> AsyncIterator[v2.ModelInferResponse]:
        """ModelInfer: every image's caption at once. ModelStreamInfer: one image, its caption as it is decoded."""
        model, engine = served.model, served.engine
        inputs, outputs = self.v2_signature(model)
        wanted = v2_params.requested_outputs(request, model.name, outputs)
        template = v2_params.reply_to(request, model.name, model.version)
        field = f"inputs[{inputs[0].name!r}]"
        images, native = v2_params.caption_request(request, model.name, inputs[0])
        count_images(len(images), field, served.settings)
        if stream and len(images) != 1:
            raise InvalidArgument(f"{field}.shape", f"ModelStreamInfer captions one image per request, got {len(images)}")
        options = self._options(served, native)
        flushing = flush(native, served.settings) if stream else WHOLE
        streams, _ = await self._submit(served, [(f"{field}[{i}]", x) for i, x in enumerate(images)], options, flushing)
        # aclosing: when the client leaves, closing this generator closes the replies' too, which cancels the streams.
        async with aclosing(seq2seq_v2.replies(engine, streams, template, wanted, stream, "regions")) as replies:
            async for reply in replies:
                yield reply
