"""One encoder–decoder request (a translation) as the engine sees it, and the record of how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine.beam import Beam
from service.engine.stream import StreamBase


@dataclass(frozen=True)
class Seq2SeqParams:
    source: Any  # what the kind's encoder reads (a translator's: source token ids)
    source_tokens: int  # its length, for usage
    beam_size: int  # 1: greedy
    length_penalty: float  # GNMT's alpha; beam search only
    max_tokens: int  # most target tokens, EOS included
    attention: bool  # return the attention of every output token
    flush_chars: int
    flush_s: float


@dataclass(frozen=True)
class Seq2SeqFinished:
    reason: str  # "stop" (the model emitted EOS) or "length" (max_tokens)
    source_tokens: int
    generated_tokens: int  # the output's tokens, EOS included when the model emitted it
    time_to_first_token_s: float
    total_time_s: float
    queue_time_s: float
    tokens: list[int]  # target ids of the output, without EOS
    attention: np.ndarray | None  # (generated_tokens, source positions): row i is what output token i attended to


class Seq2SeqStream(StreamBase[Seq2SeqFinished]):
    """Holds beam_size rows of the decode batch once admitted (greedy: one)."""

    def __init__(self, params: Seq2SeqParams) -> None:
        super().__init__(rows=params.beam_size)
        self.params = params
        # decode-thread side, set when its source is read
        self.width = 0  # source positions (memory rows)
        self.beam: Beam | None = None  # beam_size > 1
        self.attention: np.ndarray | None = None  # greedy with attention: (max_tokens, width), row t from step t
        self.first = 0.0  # when its first step ran
        self.sent = ""  # text sent so far

    async def whole(self) -> tuple[str, Seq2SeqFinished]:
        """Its whole text and how it ended, once it has (for a request that wants the text only at the end)."""
        parts = []
        async for chunk in self.chunks():
            parts.append(chunk.text)
            if chunk.finished is not None:
                return "".join(parts), chunk.finished
        raise AssertionError("a stream ends with a finished chunk")

    def started(self, width: int, eos: int) -> None:
        """Its source is read: `width` memory rows. Allocates what the search keeps per step."""
        p = self.params
        self.width = width
        if p.beam_size > 1:
            self.beam = Beam(p.beam_size, p.length_penalty, p.max_tokens, eos, width if p.attention else None)
        elif p.attention:
            self.attention = np.zeros((p.max_tokens, width), np.float32)
