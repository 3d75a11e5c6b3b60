"""One Generate request as the scheduler sees it, and the chunks it hands back to the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

from service.params import GenerateParams


@dataclass(frozen=True)
class Finished:
    reason: str  # "length" or "stop"
    prompt_chars: int
    generated_chars: int
    time_to_first_char_s: float
    total_time_s: float
    queue_time_s: float


@dataclass(frozen=True)
class Chunk:
    text: str
    logprobs: list[float] | None = None
    finished: Finished | None = None


def merge(chunks: list[Chunk]) -> Chunk:
    """Chunks that queued up while the client was slow go out as one message."""
    if len(chunks) == 1:
        return chunks[0]
    lps = None if chunks[0].logprobs is None else [x for c in chunks for x in c.logprobs]
    return Chunk("".join(c.text for c in chunks), lps, chunks[-1].finished)


class Stream:
    """Created on the event loop; owned by the decode thread from admission until it finishes or is cancelled."""

    def __init__(self, params: GenerateParams) -> None:
        self.params = params
        self.arrival = time.perf_counter()
        self.queue: asyncio.Queue[Chunk | Exception] = asyncio.Queue()
        self.closed = False  # event-loop side: finished, failed or cancelled
        # decode-thread side
        self.rng = np.random.default_rng(params.seed)  # this stream's own draws: same text alone or batched
        self.slot = -1  # -1 unless the stream holds a slot
        self.todo = params.prompt_ids[:-1]  # prefill reads all but the last prompt character...
        self.pos = 0  # ...of which this many are read
        self.state: list[np.ndarray] = []  # (L, 1, H) each while prefilling
        self.admitted = 0.0
        self.first = 0.0
        self.held = ""  # generated text not sent yet because it may be the start of a stop sequence
        self.held_lp: list[float] = []
        self.stop_len = 0  # length of the stop sequence that ended the stream

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Text as it is produced, the last chunk carrying `finished`; raises what failed the stream."""
        while True:
            items = [await self.queue.get()]
            while not self.queue.empty() and not isinstance(items[-1], Exception) and items[-1].finished is None:
                items.append(self.queue.get_nowait())
            if isinstance(items[-1], Exception):
                raise items[-1]
            chunk = merge(items)
            yield chunk
            if chunk.finished is not None:
                return
