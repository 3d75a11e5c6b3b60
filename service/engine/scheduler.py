"""Continuous batching of Generate streams: one decode thread per model, one ONNX Runtime call per step for all streams.

Each loop iteration (loop.py: drop cancelled streams, admit waiting ones into free slots) reads the
next part of the prompts being read (at most prefill_chunk characters, so decoding never stalls
for long; runner.prefill: one call, or one per character where that is faster), then runs one decode
step (T = 1) for every stream whose prompt is read: a prompt read this iteration gets its first
character from this iteration's step, and that character is sent at once. Streams join at
the next step and leave the step they finish. An ordinary step is an ORT call, the sampler and
three array writes. Stop sequences are stops.py's business, each stream's random draws draws.py's.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.artifact.sampling import sample
from service.artifact.tokenizer import Tokenizer
from service.engine import stops
from service.engine.decode_batch import DecodeBatch
from service.engine.draws import Draws
from service.engine.loop import DecodeLoop
from service.engine.stream import MAX_FLUSH_CHARS, Chunk, Finished, GenerateParams, Stream
from service.metrics import GenerateMetrics
from service.models.runners import LMRunner
from service.settings import Settings

HIST = MAX_FLUSH_CHARS  # generated ids kept per slot: a row never holds more unsent characters than flush_chars


class Scheduler(DecodeLoop[Stream]):
    """The char LM's engine: streams submitted on the event loop, decoded together on the model's own thread.

    Admission, cancellation and delivery are the DecodeLoop's (service/engine/loop.py); a test can call
    run_once and deliver itself, step by step.
    """

    def __init__(self, name: str, version: int, runner: LMRunner, tokenizer: Tokenizer, settings: Settings,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.m = GenerateMetrics.bind(name, version)
        super().__init__(name, version, settings, loop, self.m)
        self.runner = runner
        self.prefill_batch, self.prefill_chunk = settings.prefill_batch, settings.prefill_chunk
        V, S = runner.vocab_size, settings.max_streams
        self.banned = tokenizer.unk_id  # never sampled: it stands for no character (see sampling.sample)
        # One character per id; special tokens render as U+FFFD so that every step is one character.
        specials = {tokenizer.unk_id, tokenizer.pad_id}
        self.texts = ["\ufffd" if i in specials else tokenizer.token(i) for i in range(V)]
        # Per-slot buffers, indexed by a stream's slot for its whole life and by step number mod their width.
        self.hist = np.zeros((S, HIST), np.int64)  # generated ids
        self.hist_lp = np.zeros((S, HIST), np.float32)  # and their log-probabilities
        self.draws = Draws(S)
        self.stops = stops.StopTable(self.texts, S)
        self.batch = DecodeBatch(runner.zero_state(0))
        self.prefilling: list[Stream] = []
        self.step = 0  # number of the next decode step
        self.event_step, self.deadline = self.batch.next_event()
        self.n_new = 0  # rows appended since the last step (they get their first character from it)
        self.last_step = 0.0
        self.uncounted = 0  # generated characters not yet added to the Prometheus counter

    # ---- event-loop side
    def submit(self, params: GenerateParams, arrival: float | None = None) -> Stream:
        """Start a stream (UNAVAILABLE when stopping, RESOURCE_EXHAUSTED when the queue is full).

        arrival: when the request's handler began (perf_counter), so that time to first character counts
        the checks of its fields too; default now.
        """
        stream = Stream(params, arrival)
        self._enqueue([stream])
        return stream

    # ---- decode thread: the DecodeLoop hooks
    def _busy(self) -> bool:
        return bool(self.batch) or bool(self.prefilling)

    def _work(self) -> None:
        if self.prefilling:
            self._prefill()
        if self.batch:
            self._step()

    def _drop(self, gone: set[int]) -> None:
        for s in self.prefilling:
            if id(s) in gone:
                self._release(s)
        self.prefilling = [s for s in self.prefilling if id(s) not in gone]
        rows = [i for i, s in enumerate(self.batch.streams) if id(s) not in gone]
        if len(rows) < len(self.batch):
            for i in set(range(len(self.batch))) - set(rows):
                self._release(self.batch.streams[i])
            self._keep(np.array(rows, np.int64))

    def _admit(self, streams: list[Stream]) -> None:
        joined = []
        for s in streams:
            self.stops.admit(s.slot, s.params.stop)
            s.state = self.runner.zero_state(1)
            (self.prefilling if len(s.todo) else joined).append(s)
        if joined:
            self._join(joined)

    def _release(self, s: Stream) -> None:
        self.stops.release(s.slot)
        super()._release(s)

    def _prefill(self) -> None:
        """One call reads the next T characters of up to prefill_batch prompts (T: the shortest remainder, capped)."""
        group = self.prefilling[: self.prefill_batch]
        T = min(self.prefill_chunk, *(len(s.todo) - s.pos for s in group))
        tokens = np.stack([s.todo[s.pos : s.pos + T] for s in group])  # (B, T)
        state = [np.concatenate(xs, axis=1) for xs in zip(*(s.state for s in group), strict=True)]
        t0 = time.perf_counter()
        state = self.runner.prefill(tokens, state)
        self.m.prefill_call.observe(time.perf_counter() - t0)
        self.m.prefill_batch.observe(len(group))
        joined = []
        for i, s in enumerate(group):
            s.pos += T
            s.state = [x[:, i : i + 1] for x in state]
            if s.pos == len(s.todo):
                joined.append(s)
        if joined:
            self.prefilling = [s for s in self.prefilling if s.pos < len(s.todo)]
            self._join(joined)

    def _join(self, streams: list[Stream]) -> None:
        """Append streams whose prompt is read; their first draw is used at step self.step."""
        k = self.step
        for s in streams:
            self.draws.start(s, k)
        self.batch.add(streams, [np.concatenate(xs, axis=1) for xs in zip(*(s.state for s in streams), strict=True)],
                       k, time.perf_counter())
        for s in streams:
            s.state = []
        self.n_new += len(streams)
        self.event_step, self.deadline = self.batch.next_event()

    def _keep(self, rows: np.ndarray) -> None:
        n_new_kept = int(np.count_nonzero(rows >= len(self.batch) - self.n_new))
        self.batch.keep(rows)
        self.n_new = n_new_kept
        self.event_step, self.deadline = self.batch.next_event()

    def _step(self) -> None:
        b, B, n_new, k = self.batch, len(self.batch), self.n_new, self.step
        t0 = time.perf_counter()
        logits, b.state = self.runner.run(b.ids[:, None], b.state)  # (B, 1, V)
        now = time.perf_counter()
        m = self.m
        m.decode_call.observe(now - t0)
        m.decode_batch.observe(B)
        if B > n_new:
            m.inter_char.observe(now - self.last_step, B - n_new)
        if n_new:
            for s in b.streams[B - n_new :]:
                s.first = now
                m.ttfc.observe(now - s.arrival)
        self.last_step, self.n_new, self.step = now, 0, k + 1
        self.uncounted += B

        ids, lp = sample(logits[:, -1, :], b.temperature, b.top_k, b.top_p, self.draws.at(b.slots, k), self.banned)
        b.ids = ids
        self.hist[b.slots, k % HIST] = ids
        if b.any_logprobs:
            self.hist_lp[b.slots, k % HIST] = lp
        self.draws.used(k)
        stopped = [i for i in self.stops.flagged(b.slots, ids) if self._stopped(i, k)] if b.any_stop else None
        if k >= self.event_step or now >= self.deadline or stopped:
            self._events(k, now, stopped)

    def _events(self, k: int, now: float, stopped: list[int] | None) -> None:
        """After step k: send text that is due, finish streams that are done."""
        b = self.batch
        generated = k + 1 - b.joined
        done = generated >= b.max_tokens
        if stopped:
            done[stopped] = True
        timed = done | (k + 1 - b.unsent >= b.flush_chars) | (now - b.t_sent >= b.flush_s)
        # A row's first characters go out as soon as they exist (time to first text = time to first
        # character); later chunks follow flush_chars/flush_ms, on the row's staggered clock.
        first = b.unsent == b.joined
        flush = timed | first
        events = []
        for i in np.flatnonzero(flush).tolist():
            chunk = self._flush(i, k, now, bool(done[i]), int(generated[i]))
            if chunk is not None:
                events.append((b.streams[i], chunk))
        b.unsent[flush] = k + 1
        b.t_sent[timed] = now
        if done.any():
            for i in np.flatnonzero(done).tolist():
                self._release(b.streams[i])
            self._keep(np.flatnonzero(~done))
        else:
            self.event_step, self.deadline = b.next_event()
        self.m.chars.inc(self.uncounted)
        self.uncounted = 0
        if events:
            self._post(events, bool(first.any()))

    def _unsent(self, i: int, k: int) -> str:
        b = self.batch
        s, texts = b.streams[i], self.texts
        cols = np.arange(b.unsent[i], k + 1) % HIST
        return s.held + "".join([texts[j] for j in self.hist[b.slots[i], cols].tolist()])

    def _stopped(self, i: int, k: int) -> bool:
        """Does the unsent text end with a stop sequence? Held-back text guarantees a whole match is unsent."""
        s = self.batch.streams[i]
        s.stop_len = stops.ending(self._unsent(i, k), s.params.stop)
        return s.stop_len > 0

    def _flush(self, i: int, k: int, now: float, final: bool, generated: int) -> Chunk[Finished] | None:
        b = self.batch
        s, p = b.streams[i], b.streams[i].params
        text = self._unsent(i, k)
        lps = None
        if p.logprobs:
            lps = s.held_lp + self.hist_lp[b.slots[i], np.arange(b.unsent[i], k + 1) % HIST].tolist()
        keep = stops.sendable(text, p.stop, s.stop_len, final)
        s.held, text = text[keep:], text[:keep]
        if lps is not None:
            s.held_lp, lps = lps[keep:], lps[:keep]
        finished = None
        if final:
            finished = Finished("stop" if s.stop_len else "length", len(p.prompt_ids), generated,
                                s.first - s.arrival, now - s.arrival, s.admitted - s.arrival)
        return Chunk(text, lps, finished) if text or finished else None

    def _holding(self) -> list[Stream]:
        return self.batch.streams + self.prefilling

    def _reset(self) -> None:
        self.batch, self.prefilling, self.n_new = DecodeBatch(self.runner.zero_state(0)), [], 0
        self.event_step, self.deadline = self.batch.next_event()
        self.draws.clear()
