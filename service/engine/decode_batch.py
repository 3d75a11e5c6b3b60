"""The decode batch as a structure of arrays: row i of every column and of the state belongs to streams[i]."""

from __future__ import annotations

import numpy as np

from service.engine.stream import Stream

# Per-row columns. Streams join and leave only between steps, and per-row progress is kept as
# the step at which something happened, so an ordinary step touches no column at all: it
# compares one step counter with the next step at which any row needs attention.
COLUMNS = {
    "slots": np.int64,  # row -> slot, which indexes the scheduler's per-slot buffers
    "ids": np.int64,  # the character each row feeds to the next step
    "temperature": np.float64,
    "top_k": np.int64,
    "top_p": np.float64,
    "max_tokens": np.int64,
    "flush_chars": np.int64,
    "flush_s": np.float64,
    "joined": np.int64,  # step that generated the row's first character
    "unsent": np.int64,  # step that generated the row's first character not sent yet
    "t_sent": np.float64,  # when the row last sent text (or joined)
}


class DecodeBatch:
    def __init__(self, state: list[np.ndarray]) -> None:
        self.streams: list[Stream] = []
        self.state = state  # [(L, B, H), ...]
        for name, dtype in COLUMNS.items():
            setattr(self, name, np.zeros(0, dtype))
        self.any_stop = False
        self.any_logprobs = False

    def __len__(self) -> int:
        return len(self.streams)

    def add(self, streams: list[Stream], state: list[np.ndarray], step: int, now: float) -> None:
        """Append rows for streams whose prompt is read, to be advanced from `step` on; state holds their (L, n, H)."""
        n = len(streams)
        new = {
            "slots": [s.slot for s in streams],
            "ids": [int(s.params.prompt_ids[-1]) for s in streams],
            "temperature": [s.params.temperature for s in streams],
            "top_k": [s.params.top_k for s in streams],
            "top_p": [s.params.top_p for s in streams],
            "max_tokens": [s.params.max_tokens for s in streams],
            "flush_chars": [s.params.flush_chars for s in streams],
            "flush_s": [s.params.flush_s for s in streams],
            "joined": [step] * n,
            "unsent": [step] * n,
            # Streams that join together would send together every flush_ms: offset each by its slot
            # so that the event loop gets a steady trickle of messages rather than bursts.
            "t_sent": [now - s.params.flush_s * (s.slot % 16) / 16 for s in streams],
        }
        for name, dtype in COLUMNS.items():
            setattr(self, name, np.concatenate([getattr(self, name), np.asarray(new[name], dtype)]))
        self.state = [np.concatenate([old, add], axis=1) for old, add in zip(self.state, state, strict=True)]
        self.streams.extend(streams)
        self._flags()

    def keep(self, rows: np.ndarray) -> None:
        """Keep only these rows (int indices, in order)."""
        for name in COLUMNS:
            setattr(self, name, getattr(self, name)[rows])
        self.state = [np.ascontiguousarray(x[:, rows]) for x in self.state]
        self.streams = [self.streams[i] for i in rows.tolist()]
        self._flags()

    def next_event(self) -> tuple[int, float]:
        """The first step at which a row sends its first text, reaches max_tokens or flush_chars; the first flush_ms deadline."""
        if not self.streams:
            return 2**62, np.inf
        last = np.minimum(self.joined + self.max_tokens, self.unsent + self.flush_chars) - 1
        last = np.where(self.unsent == self.joined, self.joined, last)
        return int(last.min()), float((self.t_sent + self.flush_s).min())

    def _flags(self) -> None:
        self.any_stop = any(s.params.stop for s in self.streams)
        self.any_logprobs = any(s.params.logprobs for s in self.streams)
