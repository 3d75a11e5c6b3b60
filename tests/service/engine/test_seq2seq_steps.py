"""The encoder–decoder engine stepped by hand against a fake translator: no server, no thread, no timing.

The fake model's logits are a fixed random table's rows, picked by the source, the previous token and the
step, so greedy and beam search have many paths to choose from; training's numpy search (the reference the
export verifies ONNX Runtime against) decodes the same model one sentence at a time, and every request of
the engine must get exactly its tokens, whatever joins or leaves the batch around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from service.engine.encdec import Memory
from service.engine.seq2seq import Seq2SeqEngine
from service.engine.seq2seq_stream import Seq2SeqFinished, Seq2SeqParams, Seq2SeqStream
from service.engine.stream import Chunk
from service.metrics import Seq2SeqMetrics
from service.settings import Settings
from training.search import LengthRule, Specials, beam_search, greedy

PAD, BOS, EOS = 0, 1, 2
LETTERS = "abcdefgh"
V = 3 + len(LETTERS)
SPECIALS = Specials(PAD, BOS, EOS)
RULE = LengthRule(1.5, 3)
ROWS = 97  # rows of the logits table


class TableModel:
    """The state is (the sum of the source and of the tokens fed so far, the step); a step attends uniformly to the
    real source positions, and its logits are a fixed random table's row picked by the state, the previous token
    and the context (the mean of the source ids): wrong state after a beam's reordering, or attention that reads
    padding, changes them. `eos_bias` makes ends likelier (or impossible at -inf)."""

    def __init__(self, seed: int = 0, eos_bias: float = 1.0) -> None:
        self.table = np.random.default_rng(seed).normal(0, 2, (ROWS, V)).astype(np.float32)
        self.table[:, [PAD, BOS]] = -30.0
        self.table[:, EOS] += eos_bias

    def encode(self, sources: list[np.ndarray]) -> list[Memory]:
        """The engine's Encoder: one Memory per source."""
        return [Memory(s[:, None].astype(np.float32), np.ones((len(s), 1), np.float32),
                       [np.array([[float(s.sum()), 0.0]], np.float32)]) for s in sources]

    def step(self, prev: np.ndarray, state: list[np.ndarray], memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        h = state[0][0]  # (B, 2)
        attention = mask / mask.sum(axis=1, keepdims=True)  # (B, S)
        context = np.round(10 * (attention * memory[:, :, 0]).sum(axis=1)).astype(np.int64)  # (B,)
        logits = self.table[(h[:, 0].astype(np.int64) + 7 * prev + 13 * h[:, 1].astype(np.int64) + context) % ROWS]
        new = np.stack([h[:, 0] + prev, h[:, 1] + 1], axis=1).astype(np.float32)
        return logits, [new[None]], attention


class Reference:
    """The same model as training/search.py's Stepper (padded sources in, padded memories out)."""

    def __init__(self, model: TableModel) -> None:
        self.model = model

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        memories = self.model.encode([row[:n] for row, n in zip(src, lengths, strict=True)])
        S = src.shape[1]
        memory = np.stack([np.pad(m.memory, ((0, S - m.length), (0, 0))) for m in memories])
        keys = np.stack([np.pad(m.keys, ((0, S - m.length), (0, 0))) for m in memories])
        return memory, keys, np.stack([m.state[0] for m in memories], axis=1)

    def step(self, prev, h, memory, keys, mask):
        logits, new, attention = self.model.step(prev, [h], memory, keys, mask)
        return logits, new[0], attention


class Text:
    """The target vocabulary: a letter per token after the specials."""

    bos, eos = BOS, EOS
    piece_chars = np.array([0, 0, 0] + [1] * len(LETTERS), np.int64)

    def decode(self, ids) -> str:
        return "".join(LETTERS[i - 3] for i in ids if i >= 3)


def params(source: list[int], beam: int = 1, alpha: float = 0.6, attention: bool = False, flush_chars: int = 3,
           max_tokens: int | None = None, flush_s: float = 1e9) -> Seq2SeqParams:
    """flush_s: by default only characters decide when greedy text is sent."""
    src = np.array(source, np.int64)
    limit = RULE(len(src)) if max_tokens is None else max_tokens
    return Seq2SeqParams(src, len(src), beam, alpha, int(limit), attention, flush_chars, flush_s)


def reference(model: TableModel, p: Seq2SeqParams) -> list[int]:
    rule = LengthRule(0, p.max_tokens)
    if p.beam_size == 1:
        return greedy(Reference(model), [p.source], SPECIALS, rule)[0]
    return beam_search(Reference(model), [p.source], SPECIALS, rule, p.beam_size, p.length_penalty)[0]


class Stepper:
    """Steps an engine on the test's own event loop: run_once (the decode thread's work), then deliver."""

    def __init__(self, model: TableModel, **settings) -> None:
        s = Settings(**{"max_streams": 16, "max_queue": 16, "encode_batch": 2, **settings})
        metrics = Seq2SeqMetrics.bind("unit", 1, "translator", "Translate")
        self.engine = Seq2SeqEngine("unit", 1, metrics, model, model, Text(), 64, s, asyncio.get_running_loop())
        self.chunks: dict[Seq2SeqStream, list[Chunk[Seq2SeqFinished]]] = {}
        self.readers: dict[Seq2SeqStream, AsyncIterator[Chunk[Seq2SeqFinished]]] = {}

    def submit(self, *ps: Seq2SeqParams) -> list[Seq2SeqStream]:
        streams = self.engine.submit(list(ps))
        for s in streams:
            self.chunks[s], self.readers[s] = [], s.chunks()
        return streams

    def cancel(self, stream: Seq2SeqStream) -> None:
        self.engine.cancel(stream)
        del self.chunks[stream], self.readers[stream]

    def done(self, stream: Seq2SeqStream) -> bool:
        return bool(self.chunks[stream]) and self.chunks[stream][-1].finished is not None

    async def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.engine.run_once()
            self.engine.deliver()
            for stream, reader in self.readers.items():
                if stream.ready.is_set() and not self.done(stream):
                    self.chunks[stream].append(await anext(reader))

    async def finish(self, limit: int = 500) -> None:
        for _ in range(limit):
            if all(self.done(s) for s in self.chunks):
                return
            await self.step()
        raise AssertionError(f"requests still running after {limit} steps")

    def text(self, stream: Seq2SeqStream) -> str:
        return "".join(c.text for c in self.chunks[stream])

    def finished(self, stream: Seq2SeqStream) -> Seq2SeqFinished:
        f = self.chunks[stream][-1].finished
        assert f is not None
        return f


def run(test) -> None:
    asyncio.run(test())


SOURCES = [[5, 3, 9], [4], [7, 7, 8, 3, 6, 5, 4], [10, 3], [6, 6, 6, 6, 6], [9, 8, 7, 6]]


@pytest.mark.parametrize("beam", [1, 2, 3, 5])
def test_requests_decode_as_the_reference_alone_whatever_joins_or_leaves_the_batch(beam):
    """Sources of different lengths (memories padded and masked), joining at different steps, greedy and beams."""
    async def test() -> None:
        model = TableModel(seed=beam)
        st = Stepper(model)
        ps = [params(src, beam=beam if i % 2 == 0 else 1, alpha=0.6 * (i % 3)) for i, src in enumerate(SOURCES)]
        first = st.submit(*ps[:2])
        await st.step(2)
        later = st.submit(*ps[2:5])
        await st.step(1)
        last = st.submit(ps[5])
        await st.finish()
        for p, s in zip(ps, first + later + last, strict=True):
            f = st.finished(s)
            assert f.tokens == reference(model, p), p
            assert st.text(s) == Text().decode(f.tokens)
            assert f.generated_tokens == len(f.tokens) + (f.reason == "stop")
        assert st.engine.idle and st.engine.n_open == 0 and st.engine.free_rows == 16
    run(test)


def test_beam_text_is_sent_as_soon_as_every_hypothesis_that_can_win_agrees_on_it():
    async def test() -> None:
        model = TableModel(seed=0, eos_bias=-1.0)  # a search whose hypotheses agree on a start early
        st = Stepper(model)
        (s,) = st.submit(params([3, 4, 5, 6, 7, 8], beam=4, flush_s=0.0))  # agreement checked every step
        early = []
        while not st.done(s):
            await st.step()
            if not st.done(s):
                early.append(st.text(s))
        final = Text().decode(st.finished(s).tokens)
        assert all(final.startswith(x) for x in early)
        assert early[-1], "no text before the search ended"
    run(test)


@pytest.mark.parametrize("beam", [1, 3])
def test_attention_has_a_row_per_output_token_over_the_real_source_positions(beam):
    async def test() -> None:
        st = Stepper(TableModel(seed=3))
        short, long = st.submit(params([4, 5], beam=beam, attention=True), params([3, 4, 5, 6, 7, 8, 9], attention=True))
        await st.finish()
        for s, n in ((short, 2), (long, 7)):
            f = st.finished(s)
            assert f.attention is not None and f.attention.shape == (f.generated_tokens, n)
            np.testing.assert_allclose(f.attention, 1 / n, rtol=1e-6)
    run(test)


def test_max_tokens_caps_the_length_and_says_so():
    async def test() -> None:
        st = Stepper(TableModel(eos_bias=-np.inf))  # never ends a sentence
        greedy_, beam = st.submit(params([3, 4, 5], max_tokens=4), params([3, 4, 5], beam=3, max_tokens=6))
        await st.finish()
        assert (st.finished(greedy_).reason, len(st.finished(greedy_).tokens)) == ("length", 4)
        assert (st.finished(beam).reason, len(st.finished(beam).tokens)) == ("length", 6)
    run(test)


def test_a_beam_waits_for_enough_free_rows_and_a_cancelled_request_frees_its_rows():
    async def test() -> None:
        st = Stepper(TableModel(eos_bias=-np.inf), max_streams=4)
        (long,) = st.submit(params([3], beam=2, max_tokens=64))
        (wide,) = st.submit(params([4, 5], beam=3))
        await st.step(5)
        assert st.engine.free_rows == 2 and st.text(wide) == "" and wide.slot == -1  # needs 3 of the 4 rows
        st.cancel(long)
        await st.finish()
        assert st.finished(wide).tokens == reference(st.engine.encoder, params([4, 5], beam=3))
        assert st.engine.free_rows == 4 and st.engine.n_open == 0 and st.engine.idle
    run(test)
