"""A request as a continuously batched engine sees it (StreamBase; a Generate request: Stream with its validated
parameters), and the chunks it hands back to the event loop."""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

F = TypeVar("F")

MAX_FLUSH_CHARS = 4096  # the most characters a stream may ask to have sent together (the scheduler keeps as many)


@dataclass(frozen=True)
class GenerateParams:
    prompt_ids: np.ndarray  # (N,) int64, N >= 1
    max_tokens: int
    temperature: float  # 0: greedy
    top_k: int  # 0: no limit
    top_p: float  # in (0, 1]
    seed: int
    stop: tuple[str, ...]
    logprobs: bool
    flush_chars: int
    flush_s: float


@dataclass(frozen=True)
class Finished:
    reason: str  # "length" or "stop"
    prompt_chars: int
    generated_chars: int
    time_to_first_char_s: float
    total_time_s: float
    queue_time_s: float


@dataclass(frozen=True)
class Chunk(Generic[F]):
    text: str
    logprobs: list[float] | None = None
    finished: F | None = None  # on the last chunk: how the request ended (Generate: Finished)


UNSENT_PARTS = 64  # unsent text pieces kept apart; beyond this they are joined into one string


class StreamBase(Generic[F]):
    """Created on the event loop; owned by the decode thread from admission until it finishes or is cancelled."""

    def __init__(self, rows: int = 1, arrival: float | None = None) -> None:
        self.arrival = time.perf_counter() if arrival is None else arrival  # perf_counter when the handler began
        self.rows = rows  # rows of the decode batch it holds once admitted
        # Event-loop side: what the decode thread produced and the handler has not taken yet. A client
        # that reads slowly (or not at all) gets all of it as one message when it reads again, so the
        # backlog costs about a byte per character (4 more with log-probabilities), never a message each:
        # as queued Chunk objects a stalled 100,000-character stream held 23 MB.
        self.ready = asyncio.Event()
        self.unsent: list[str] = []
        self.unsent_lp: array[float] | None = None
        self.unsent_chars = 0
        self.finished: F | None = None
        self.error: Exception | None = None
        self.closed = False  # event-loop side: finished, failed or cancelled
        # decode-thread side
        self.slot = -1  # -1 unless the stream holds a slot
        self.admitted = 0.0

    def put(self, item: Chunk[F] | Exception) -> None:
        """Event-loop side: add what the decode thread delivered to the unsent backlog."""
        if isinstance(item, Exception):
            self.error = item
        else:
            if item.text:
                self.unsent.append(item.text)
                self.unsent_chars += len(item.text)
                if len(self.unsent) > UNSENT_PARTS:
                    self.unsent = ["".join(self.unsent)]
            if item.logprobs:
                if self.unsent_lp is None:
                    self.unsent_lp = array("f")
                self.unsent_lp.extend(item.logprobs)
            self.finished = item.finished
        self.ready.set()

    def _take(self) -> Chunk[F]:
        chunk = Chunk("".join(self.unsent), None if self.unsent_lp is None else self.unsent_lp.tolist(), self.finished)
        self.unsent, self.unsent_lp, self.unsent_chars = [], None, 0
        return chunk

    async def chunks(self) -> AsyncIterator[Chunk[F]]:
        """Text as it is produced, merged while the reader was away; the last chunk carries `finished`.

        Raises what failed the stream.
        """
        while True:
            await self.ready.wait()
            self.ready.clear()
            if self.error is not None:
                raise self.error
            chunk = self._take()
            yield chunk
            if chunk.finished is not None:
                return


class Stream(StreamBase[Finished]):
    """One Generate request."""

    def __init__(self, params: GenerateParams, arrival: float | None = None) -> None:
        super().__init__(arrival=arrival)
        self.params = params
        self.rng = np.random.default_rng(params.seed)  # this stream's own draws: same text alone or batched
        self.todo = params.prompt_ids[:-1]  # prefill reads all but the last prompt character...
        self.pos = 0  # ...of which this many are read
        self.state: list[np.ndarray] = []  # (L, 1, H) each while prefilling
        self.first = 0.0
        self.held = ""  # generated text not sent yet because it may be the start of a stop sequence
        self.held_lp: list[float] = []
        self.stop_len = 0  # length of the stop sequence that ended the stream
