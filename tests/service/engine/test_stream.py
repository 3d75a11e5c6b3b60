"""The hand-off between the decode thread and a Generate handler: a reader that falls behind costs little memory."""

from __future__ import annotations

import asyncio
import tracemalloc

import numpy as np
import pytest

from service.engine.stream import Chunk, Finished, GenerateParams, Stream

N = 100_000  # characters, one per delivered chunk (flush_chars=1), with log-probabilities


def _params() -> GenerateParams:
    return GenerateParams(prompt_ids=np.array([1], np.int64), max_tokens=N, temperature=1.0, top_k=0, top_p=1.0,
                          seed=0, stop=(), logprobs=True, flush_chars=1, flush_s=0.05)


def test_a_reader_that_never_reads_holds_a_few_bytes_per_character_and_gets_it_all_in_one_message():
    async def run() -> tuple[int, list[Chunk]]:
        stream = Stream(_params())
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(N):
            stream.put(Chunk(chr(ord("a") + i % 26), [-float(i % 7)]))
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        stream.put(Chunk("", None, Finished("length", 1, N, 0.0, 1.0, 0.0)))
        return held, [c async for c in stream.chunks()]

    held, chunks = asyncio.run(run())
    assert held < 16 * N, f"{held / N:.0f} bytes per unsent character"  # as queued messages: ~230 bytes
    assert len(chunks) == 1 and chunks[0].finished is not None
    assert chunks[0].text == "".join(chr(ord("a") + i % 26) for i in range(N))
    assert chunks[0].logprobs == [-float(i % 7) for i in range(N)]


def test_text_that_arrived_before_a_failure_is_not_sent_as_if_the_stream_were_fine():
    async def run() -> list[Chunk]:
        stream = Stream(_params())
        stream.put(Chunk("abc", [-1.0, -1.0, -1.0]))
        got = []
        async for chunk in stream.chunks():
            got.append(chunk)
            stream.put(Chunk("def", [-1.0] * 3))
            stream.put(RuntimeError("the model failed"))
        return got

    with pytest.raises(RuntimeError, match="the model failed"):
        asyncio.run(run())
