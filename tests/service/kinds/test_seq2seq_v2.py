"""The v2 replies shared by the encoder-decoder kinds: one response per chunk when streaming, one with every
output otherwise, and every stream cancelled however the reading stops (a client that leaves mid-stream)."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from types import SimpleNamespace

from service.api.v2_params import Tensor
from service.gen.inference import grpc_service_pb2 as v2
from service.kinds import seq2seq_v2

FINISHED = SimpleNamespace(reason="stop", source_tokens=16, generated_tokens=3)


class Engine:
    def __init__(self) -> None:
        self.cancelled: list[object] = []

    def cancel(self, stream: object) -> None:
        self.cancelled.append(stream)


class EndlessStream:
    """A caption that never ends: only cancellation stops it."""

    async def chunks(self):
        while True:
            yield SimpleNamespace(text="a ", finished=None)
            await asyncio.sleep(0)


class DoneStream:
    async def whole(self):
        return "a dog .", FINISHED


def run(coro):
    return asyncio.run(coro)


def test_a_client_that_leaves_mid_stream_cancels_its_stream():
    async def leave_after_two() -> tuple[list[v2.ModelInferResponse], list[object]]:
        engine, stream = Engine(), EndlessStream()

        async def kind_v2_infer():  # as the kinds call it
            replies = seq2seq_v2.replies(engine, [stream], v2.ModelInferResponse(), [], True, "regions")
            async with aclosing(replies) as r:
                async for reply in r:
                    yield reply

        got = []
        async with aclosing(kind_v2_infer()) as outer:
            async for reply in outer:
                got.append(reply)
                if len(got) == 2:
                    break
        return got, engine.cancelled
    got, cancelled = run(leave_after_two())
    assert len(got) == 2 and len(cancelled) == 1


def test_model_infer_answers_every_output_at_once_and_reports_how_one_ended():
    async def infer() -> tuple[list[v2.ModelInferResponse], list[object]]:
        engine, stream = Engine(), DoneStream()
        wanted = [Tensor("caption", "BYTES", (-1,))]
        return [r async for r in seq2seq_v2.replies(engine, [stream], v2.ModelInferResponse(), wanted, False,
                                                     "regions")], engine.cancelled
    replies, cancelled = run(infer())
    assert len(replies) == 1 and len(cancelled) == 1
    params = replies[0].parameters
    assert params["finish_reason"].string_param == "stop" and params["regions"].int64_param == 16
    assert replies[0].outputs[0].name == "caption"
