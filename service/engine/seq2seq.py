"""Continuous batching of encoder–decoder requests (translations): one decoder call per step for every request's rows.

Each iteration of the decode thread (service/engine/loop.py): admit waiting requests while rows are free,
read the sources of up to encode_batch joiners in one encoder call, then one decoder step for every row.
A greedy request is one row; a beam search of size K is K rows that share its memory. Requests join at
the next step and leave the step they finish or are cancelled. The memories of the batch are padded to
the longest source and masked, so a step costs the same at every output position: the state is carried,
and attention reads a fixed memory.

Text goes out in chunks of about flush_chars characters or every flush_ms. A greedy request's text is
final token by token; a beam search sends the prefix every hypothesis that can still win agrees on.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.engine.beam import candidates
from service.engine.encdec import DecoderStep, Encoder, TargetText
from service.engine.loop import DecodeLoop
from service.engine.seq2seq_batch import Rows
from service.engine.seq2seq_stream import Seq2SeqFinished, Seq2SeqParams, Seq2SeqStream
from service.engine.stream import Chunk
from service.metrics import Seq2SeqMetrics
from service.settings import Settings

Event = tuple[Seq2SeqStream, Chunk[Seq2SeqFinished]]


class Seq2SeqEngine(DecodeLoop[Seq2SeqStream]):
    def __init__(self, name: str, version: int, metrics: Seq2SeqMetrics, encoder: Encoder, decoder: DecoderStep,
                 text: TargetText, max_tokens: int, settings: Settings, loop: asyncio.AbstractEventLoop) -> None:
        """`metrics`: bound by the kind (its name and RPC label them); `max_tokens`: the most target tokens any
        request may ask for (the width of the per-slot token buffer)."""
        super().__init__(name, version, settings, loop, metrics)
        self.m = metrics
        self.encoder, self.decoder, self.text = encoder, decoder, text
        self.encode_batch = settings.encode_batch
        self.hist = np.zeros((self.max_streams, max_tokens), np.int64)  # greedy tokens, per slot and step
        self.rows = Rows(self.max_streams)
        self.joining: list[Seq2SeqStream] = []  # admitted, source not read yet
        self.new: list[Seq2SeqStream] = []  # joined since the last step (it decodes their first token)
        self.step = 0  # number of the next decoder step
        self.last_step = 0.0
        self.deadline = np.inf  # the first flush_ms due
        self.uncounted = 0  # tokens not yet added to the Prometheus counter

    # ---- event-loop side
    def submit(self, params: list[Seq2SeqParams]) -> list[Seq2SeqStream]:
        """Start requests (all or none: RESOURCE_EXHAUSTED when they do not fit the queue)."""
        streams = [Seq2SeqStream(p) for p in params]
        self._enqueue(streams)
        return streams

    # ---- decode thread: the DecodeLoop hooks
    def _busy(self) -> bool:
        return bool(self.rows) or bool(self.joining)

    def _admit(self, streams: list[Seq2SeqStream]) -> None:
        self.joining.extend(streams)

    def _work(self) -> None:
        if self.joining:
            self._encode()
        if self.rows:
            self._step()

    def _drop(self, gone: set[int]) -> None:
        for s in self.joining:
            if id(s) in gone:
                self._release(s)
        self.joining = [s for s in self.joining if id(s) not in gone]
        self.new = [s for s in self.new if id(s) not in gone]
        left = [s for s in self.rows.streams if id(s) in gone]
        if left:
            for s in left:
                self._release(s)
            self.rows.remove(left)
            self.deadline = self.rows.deadline()

    def _holding(self) -> list[Seq2SeqStream]:
        return self.rows.streams + self.joining

    def _reset(self) -> None:
        self.rows, self.joining, self.new, self.deadline = Rows(self.max_streams), [], [], np.inf

    # ---- decode thread: the work
    def _encode(self) -> None:
        """One encoder call reads the sources of up to encode_batch joiners; they join the batch at the next step.

        Few at a time: the decoder step that follows waits for the call, and every request in the batch with
        it. The encoder's time grows faster than its batch here: 4.7 ms for 4 sources of 25 tokens, 48 ms for
        16, against 17.6 ms for a decoder step of 64 rows (the bundled translator, one thread, a loaded machine).
        """
        group, self.joining = self.joining[: self.encode_batch], self.joining[self.encode_batch :]
        t0 = time.perf_counter()
        memories = self.encoder.encode([s.params.source for s in group])
        now = time.perf_counter()
        self.m.encode_call.observe(now - t0)
        self.m.encode_batch.observe(len(group))
        for s, memory in zip(group, memories, strict=True):
            s.started(memory.length, self.text.eos)
        self.rows.add(group, memories, self.text.bos, self.step, now)
        self.new += group
        self.deadline = self.rows.deadline()

    def _step(self) -> None:
        r, k = self.rows, self.step
        t0 = time.perf_counter()
        logits, state, attention = self.decoder.step(r.prev, r.state, r.memory, r.keys, r.mask)  # (R, V), ., (R, S)
        now = time.perf_counter()
        m, n = self.m, len(r.streams)
        m.decode_call.observe(now - t0)
        m.decode_batch.observe(len(r))
        if n > len(self.new):
            m.inter_token.observe(now - self.last_step, n - len(self.new))
        for s in self.new:
            s.first = now
            m.ttft.observe(now - s.arrival)
        self.new, self.last_step, self.step = [], now, k + 1
        self.uncounted += n

        t = k - r.joined  # (R,) the step of each row's own search
        ids = logits.argmax(axis=1)  # greedy rows' tokens; beam rows replace theirs below
        g = r.greedy
        tg, ig = t[g], ids[g]
        self.hist[r.slot[g], tg] = ig
        for row, kept, width in r.attending:
            kept[t[row]] = attention[row, :width]
        eos = ig == self.text.eos
        done = eos | (tg + 1 >= r.limit[g])
        r.pending[g] += self.text.piece_chars[ig]
        source = None  # row each row's state comes from, once a beam has reordered its hypotheses
        beams_done = []
        for members, group_rows in r.beam_groups:
            cand, best = candidates([beam for _, beam, _ in members], logits[group_rows])
            for (s, beam, start), c, b in zip(members, cand, best, strict=True):
                rows = slice(start, start + s.rows)
                origin, token, over = beam.advance(int(t[start]), c, b, attention[rows, : s.width])
                ids[rows] = token
                if source is None:
                    source = np.arange(len(r))
                source[rows] = start + origin
                if over:
                    beams_done.append(s)
        r.prev = ids
        r.state = state if source is None else [x[:, source] for x in state]
        if done.any() or beams_done or now >= self.deadline or (r.pending[g] >= r.flush_chars[g]).any():
            self._events(t, g, eos, done, beams_done, now)

    def _events(self, t: np.ndarray, g: np.ndarray, eos: np.ndarray, done: np.ndarray,
                beams_done: list[Seq2SeqStream], now: float) -> None:
        """After a step: send text that is due, finish requests that are done."""
        r = self.rows
        events: list[Event] = []
        finished = []
        flush = done | (r.pending[g] >= r.flush_chars[g]) | (now >= r.t_sent[g] + r.flush_s[g])
        for j in np.flatnonzero(flush).tolist():
            row = int(g[j])
            s = r.owner[row]
            ids = self.hist[s.slot, : t[row] + 1 - eos[j]].tolist()
            if done[j]:
                attention = None if s.attention is None else s.attention[: t[row] + 1]
                events.append((s, self._final(s, ids, "stop" if eos[j] else "length", attention, now)))
                finished.append(s)
            elif chunk := self._partial(s, ids):
                events.append((s, chunk))
        r.pending[g[flush]] = 0
        r.t_sent[g[flush]] = now
        for s, beam, start in r.beams:
            if s in beams_done:
                best = beam.best()
                attention = None if beam.attention is None else beam.attention_of(best)
                events.append((s, self._final(s, beam.tokens_of(best), "stop" if best.eos else "length", attention, now)))
                finished.append(s)
            elif now >= r.t_sent[start] + r.flush_s[start]:
                r.t_sent[start : start + s.rows] = now
                if chunk := self._partial(s, beam.agreed(int(t[start]))):
                    events.append((s, chunk))
        if finished:
            for s in finished:
                self._release(s)
            r.remove(finished)
        self.deadline = r.deadline()
        self.m.tokens.inc(self.uncounted)
        self.uncounted = 0
        if events:
            self._post(events)

    def _partial(self, s: Seq2SeqStream, ids: list[int]) -> Chunk[Seq2SeqFinished] | None:
        """The text of `ids` past what was sent; decoding is prefix-stable, so it only grows."""
        text = self.text.decode(ids)
        if len(text) <= len(s.sent) or not text.startswith(s.sent):
            return None
        new, s.sent = text[len(s.sent) :], text
        return Chunk(new)

    def _final(self, s: Seq2SeqStream, ids: list[int], reason: str, attention: np.ndarray | None,
               now: float) -> Chunk[Seq2SeqFinished]:
        text = self.text.decode(ids)
        p = s.params
        finished = Seq2SeqFinished(reason, p.source_tokens, len(ids) + (reason == "stop"), s.first - s.arrival,
                                   now - s.arrival, s.admitted - s.arrival, ids, attention)
        return Chunk(text[len(s.sent) :], finished=finished)  # decoding is prefix-stable: `sent` starts `text`
