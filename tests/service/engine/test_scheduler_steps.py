"""The Scheduler stepped by hand against a fake char LM: no server, no thread, no timing.

The fake model's next character is fixed by the sum of every id it has read, so the text a stream
should get is known in advance (`expected`), whatever the batch around it does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from service.artifact.tokenizer import Tokenizer
from service.engine.scheduler import Scheduler
from service.engine.stream import Chunk, GenerateParams, Stream
from service.settings import Settings

TOKENIZER = Tokenizer("char", ("<unk>", *"abcdefghij"), unk_id=0)
V = TOKENIZER.vocab_size


class SumRunner:
    """A stateful "char LM": the state is the sum of the ids read, the next id 1 + sum % (V - 1) (never <unk>)."""

    vocab_size = V

    def __init__(self, peaked: bool = True) -> None:
        # peaked: the next id has all the probability; else logits from a fixed random table, for sampling
        self.table = None if peaked else np.random.default_rng(0).normal(0, 2, (V - 1, V)).astype(np.float32)

    def zero_state(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((1, batch, 1), np.float32)]

    def run(self, tokens: np.ndarray, state: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        B, T = tokens.shape
        h = state[0][0, :, 0].astype(np.int64)
        logits = np.full((B, T, V), -30.0, np.float32)  # (B, T, V)
        for t in range(T):
            h = h + tokens[:, t]
            if self.table is None:
                logits[np.arange(B), t, 1 + h % (V - 1)] = 30.0
            else:
                logits[:, t] = self.table[h % (V - 1)]
        return logits, [h.astype(np.float32)[None, :, None]]

    def prefill(self, tokens: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
        return self.run(tokens, state)[1]


def expected(prompt: str, n: int) -> str:
    """What greedy decoding of SumRunner writes after `prompt`."""
    h, out = int(TOKENIZER.encode(prompt).sum()), []
    for _ in range(n):
        nxt = 1 + h % (V - 1)
        out.append(TOKENIZER.token(nxt))
        h += nxt
    return "".join(out)


def params(prompt: str, max_tokens: int, **fields) -> GenerateParams:
    values = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0, "stop": (), "logprobs": False,
              "flush_chars": 4, "flush_s": 1e9, **fields}  # flush_s: only characters decide when text is sent
    return GenerateParams(prompt_ids=TOKENIZER.encode(prompt), max_tokens=max_tokens, **values)


class Stepper:
    """Steps a Scheduler on the test's own event loop: run_once (the decode thread's work), then deliver."""

    def __init__(self, runner: SumRunner | None = None, **settings) -> None:
        s = Settings(**{"max_streams": 4, "max_queue": 8, "prefill_chunk": 256, **settings})
        self.scheduler = Scheduler("unit", 1, runner or SumRunner(), TOKENIZER, s, asyncio.get_running_loop())
        self.chunks: dict[Stream, list[Chunk]] = {}
        self.readers: dict[Stream, AsyncIterator[Chunk]] = {}

    def submit(self, p: GenerateParams, arrival: float | None = None) -> Stream:
        stream = self.scheduler.submit(p, arrival)
        self.chunks[stream], self.readers[stream] = [], stream.chunks()
        return stream

    def cancel(self, stream: Stream) -> None:
        """The client goes away: the scheduler frees its slot, and the stream is read no more."""
        self.scheduler.cancel(stream)
        del self.chunks[stream], self.readers[stream]

    def done(self, stream: Stream) -> bool:
        return bool(self.chunks[stream]) and self.chunks[stream][-1].finished is not None

    async def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.scheduler.run_once()
            self.scheduler.deliver()
            for stream, reader in self.readers.items():
                if stream.ready.is_set() and not self.done(stream):
                    self.chunks[stream].append(await anext(reader))

    async def finish(self, limit: int = 5000) -> None:
        for _ in range(limit):
            if all(self.done(s) for s in self.chunks):
                return
            await self.step()
        raise AssertionError(f"streams still running after {limit} steps")

    def text(self, stream: Stream) -> str:
        return "".join(c.text for c in self.chunks[stream])


def run(test) -> None:
    asyncio.run(test())


def test_a_stream_gets_its_first_character_at_once_then_chunks_of_flush_chars():
    async def test() -> None:
        st = Stepper()  # flush_s is 1e9: only the first step and flush_chars can send text
        s = st.submit(params("abc", 10))
        for _ in range(3):  # prefill, then the first decode step
            await st.step()
            if st.chunks[s]:
                break
        assert [c.text for c in st.chunks[s]] == [expected("abc", 1)]  # the first step's character, alone
        await st.finish()
        assert st.text(s) == expected("abc", 10)
        assert [len(c.text) for c in st.chunks[s]] == [1, 4, 4, 1]
        f = st.chunks[s][-1].finished
        assert (f.reason, f.prompt_chars, f.generated_chars) == ("length", 3, 10)
    run(test)


def test_the_first_text_reaches_the_stream_before_the_next_step_without_waiting_for_a_delivery_poll():
    async def test() -> None:
        st = Stepper(deliver_ms=3_600_000)  # the event loop's poll for text is an hour away
        s = st.submit(params("abc", 10))
        st.scheduler.run_once()  # admit, read the prompt, first decode step: the first character exists
        for _ in range(10):  # the decode thread's wake-up is a callback on the loop: a few turns of it at most
            if s.ready.is_set():
                break
            await asyncio.sleep(0)
        assert s.ready.is_set() and s.unsent == [expected("abc", 1)] and s.finished is None
        s.ready.clear()
        s.unsent = []
        for _ in range(8):  # later chunks (flush_chars 4) leave with the next poll, not at once
            st.scheduler.run_once()
            await asyncio.sleep(0)
        assert not s.ready.is_set() and len(st.scheduler.outbox) == 2
        st.scheduler.deliver()
        assert "".join(s.unsent) == expected("abc", 9)[1:]
    run(test)


def test_time_to_first_character_counts_from_the_arrival_the_handler_gives():
    async def test() -> None:
        st = Stepper()
        s = st.submit(params("abc", 2), time.perf_counter() - 100)  # as if the handler began 100 s ago
        await st.finish()
        f = st.chunks[s][-1].finished
        assert 100 <= f.queue_time_s <= f.time_to_first_char_s <= f.total_time_s < 200
    run(test)


def test_a_prompt_read_in_many_prefill_calls_continues_as_if_read_at_once():
    async def test() -> None:
        prompt = "abcdefghij" * 7
        st = Stepper(prefill_chunk=3)
        s = st.submit(params(prompt, 12))
        await st.finish()
        assert st.text(s) == expected(prompt, 12)
    run(test)


def test_streams_that_join_and_leave_do_not_change_each_others_text():
    async def test() -> None:
        st = Stepper()
        a, b = st.submit(params("a", 30)), st.submit(params("jihgf", 5))
        await st.step(3)
        c = st.submit(params("cab", 17, flush_chars=1))
        await st.finish()
        assert (st.text(a), st.text(b), st.text(c)) == (expected("a", 30), expected("jihgf", 5), expected("cab", 17))
    run(test)


def test_a_stop_sequence_ends_the_stream_and_is_not_sent():
    async def test() -> None:
        whole = expected("b", 40)
        stop = whole[20:23]
        cut = whole.index(stop)  # the first place the sequence shows up (it may be before 20)
        st = Stepper()
        s = st.submit(params("b", 40, stop=(stop,), flush_chars=1))
        await st.finish()
        assert st.text(s) == whole[:cut]
        f = st.chunks[s][-1].finished
        assert (f.reason, f.generated_chars) == ("stop", cut + len(stop))
    run(test)


def test_text_that_could_start_a_stop_sequence_waits_until_it_cannot():
    async def test() -> None:
        whole = expected("b", 40)
        stop = whole[10:13] + "~"  # "~" is not in the vocabulary: this sequence never completes
        st = Stepper()
        s = st.submit(params("b", 40, stop=(stop,), flush_chars=1))
        sent = ""
        while not st.done(s):
            await st.step()
            sent = st.text(s)
            if not st.done(s):
                assert not any(sent.endswith(stop[:k]) for k in range(1, len(stop))), sent
        assert sent == whole and st.chunks[s][-1].finished.reason == "length"
    run(test)


def test_a_stream_waits_for_a_free_slot_and_a_cancelled_one_frees_its_slot():
    async def test() -> None:
        st = Stepper(max_streams=1)
        long, queued = st.submit(params("a", 10_000)), st.submit(params("ccc", 6))
        await st.step(20)
        assert st.text(queued) == "" and st.text(long) == expected("a", 10_000)[: len(st.text(long))] != ""
        st.cancel(long)
        await st.finish()
        assert st.text(queued) == expected("ccc", 6)
        assert st.scheduler.n_open == 0 and st.scheduler.idle
    run(test)


def test_a_seeded_stream_samples_the_same_text_alone_and_in_a_batch():
    """Across more than one block of draws (draws.BLOCK = 256 steps), joining the batch at different steps."""
    async def test() -> None:
        p = params("abc", 600, temperature=1.0, seed=7, flush_chars=64)
        alone = Stepper(runner=SumRunner(peaked=False))
        s = alone.submit(p)
        await alone.finish()
        batched = Stepper(runner=SumRunner(peaked=False))
        others = [batched.submit(params("j", 900, temperature=1.0, seed=1, flush_chars=64))]
        await batched.step(5)
        t = batched.submit(p)
        others.append(batched.submit(params("ff", 300, temperature=0.8, top_k=3, seed=2)))
        await batched.finish()
        assert batched.text(t) == alone.text(s) and len(alone.text(s)) == 600
        assert len(set(alone.text(s))) > 5  # sampled, not one character over and over
    run(test)
