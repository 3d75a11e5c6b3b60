"""ModelStreamInfer for a char LM, step by step: each chunk the scheduler hands over is one response, the last final.

The engine is a stand-in whose stream the test feeds one chunk at a time, so how many responses a
request gets is decided here, not by timing (through a real server, chunks merge when the reader lags).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.artifact import Meta, state_specs
from service.artifact.tokenizer import Tokenizer
from service.engine.stream import Chunk, Finished, GenerateParams, Stream
from service.gen.inference import grpc_service_pb2 as v2
from service.kinds import Served
from service.kinds.char_lm import CharLM
from service.models.model import Model
from service.settings import Settings

TOKENIZER = Tokenizer("char", ("<unk>", *"abcdefghij"), unk_id=0)
META = Meta(kind="char_lm", cell="gru", sizes={"n_layer": 1, "n_embd": 4, "hidden_size": 4, "vocab_size": 11},
            state=state_specs("gru", 1, 4))


class HandFed:
    """Stands in for the Scheduler: it keeps the streams it is given, and the test puts their chunks."""

    n_open = 0

    def __init__(self) -> None:
        self.streams: list[Stream] = []
        self.cancelled: list[Stream] = []

    def submit(self, params: GenerateParams, arrival: float | None = None) -> Stream:
        self.streams.append(Stream(params, arrival))
        return self.streams[-1]

    def cancel(self, stream: Stream) -> None:
        self.cancelled.append(stream)

    async def close(self) -> None:
        return None


def _request() -> v2.ModelInferRequest:
    req = v2.ModelInferRequest(model_name="lm", id="r1")
    prompt = req.inputs.add(name="prompt", datatype="BYTES", shape=[1])
    prompt.contents.bytes_contents.append(b"abc")
    req.parameters["max_tokens"].int64_param = 8
    return req


def _text(reply: v2.ModelInferResponse) -> str:
    raw = reply.raw_output_contents[0]
    return raw[4:4 + int.from_bytes(raw[:4], "little")].decode()


def _params(reply: v2.ModelInferResponse) -> dict:
    return {k: getattr(p, p.WhichOneof("parameter_choice")) for k, p in reply.parameters.items()}


CHUNKS = [Chunk("abc"), Chunk("def"), Chunk("gh", finished=Finished("length", 3, 8, 0.0, 0.0, 0.0))]


async def _responses(stream: bool) -> tuple[list[v2.ModelInferResponse], HandFed]:
    engine = HandFed()
    model = Model("lm", 3, Path("."), META, TOKENIZER, runner=None)
    served = Served(CharLM(), model, engine, Settings())
    replies = served.kind.v2_infer(served, _request(), stream)
    got, pending = [], asyncio.ensure_future(anext(replies))
    for chunk in CHUNKS:
        await asyncio.sleep(0)  # the handler runs until it waits for the stream's next chunk
        engine.streams[0].put(chunk)
        await asyncio.sleep(0)
        if pending.done():  # a response for this chunk (streaming), or for the whole text
            got.append(pending.result())
            pending = asyncio.ensure_future(anext(replies, None))
    assert await pending is None  # and nothing after the last
    return got, engine


def test_each_chunk_is_one_response_and_only_the_last_is_final():
    got, engine = asyncio.run(_responses(stream=True))
    assert [_text(r) for r in got] == ["abc", "def", "gh"]
    assert [_params(r)["triton_final_response"] for r in got] == [False, False, True]
    assert _params(got[-1])["finish_reason"] == "length" and _params(got[-1])["generated_chars"] == 8
    assert all((r.model_name, r.model_version, r.id) == ("lm", "3", "r1") for r in got)
    assert engine.cancelled == engine.streams  # the handler always hands its stream back


def test_model_infer_sends_the_whole_text_once():
    got, _ = asyncio.run(_responses(stream=False))
    assert [_text(r) for r in got] == ["abcdefgh"]
    assert "triton_final_response" not in _params(got[0]) and _params(got[0])["finish_reason"] == "length"
