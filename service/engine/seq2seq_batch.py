"""The encoder–decoder batch as a structure of arrays: each stream holds consecutive rows (its beams), every row
carries its stream's memory padded to the batch's longest source and masked."""

from __future__ import annotations

import numpy as np

from service.engine.encdec import Memory
from service.engine.seq2seq_stream import Seq2SeqStream

# Per-row columns. Every row of a stream holds its stream's values; a step's progress is the step number
# minus `joined`, so an ordinary step writes no column but `pending`.
COLUMNS = {
    "slot": np.int64,  # the stream's slot, which indexes the engine's per-slot buffers
    "joined": np.int64,  # step that decodes the stream's first token
    "limit": np.int64,  # the stream's max_tokens
    "flush_chars": np.int64,
    "flush_s": np.float64,
    "pending": np.int64,  # greedy: characters decoded and not sent yet
    "t_sent": np.float64,  # when the stream last sent text (or joined)
}


class Rows:
    def __init__(self) -> None:
        self.streams: list[Seq2SeqStream] = []  # in row order
        self.owner: list[Seq2SeqStream] = []  # row -> its stream
        self.prev = np.zeros(0, np.int64)  # the token each row feeds to the next step
        self.state: list[np.ndarray] = []  # [(L, R, H), ...]
        self.memory = self.keys = np.zeros((0, 0, 0), np.float32)  # (R, S, M), (R, S, K)
        self.mask = np.zeros((0, 0), bool)  # (R, S): true at real source positions
        for name, dtype in COLUMNS.items():
            setattr(self, name, np.zeros(0, dtype))
        self._derive()

    def __len__(self) -> int:
        return len(self.owner)

    def add(self, streams: list[Seq2SeqStream], memories: list[Memory], bos: int, step: int, now: float) -> None:
        """Append each stream's rows (beam_size copies of its memory and initial state), to decode from `step` on."""
        S = max(self.mask.shape[1], *(m.length for m in memories))
        reps = [s.rows for s in streams]
        pairs = list(zip(memories, reps, strict=True))
        fresh_memory = np.concatenate([np.repeat(_pad(m.memory[None], S), n, axis=0) for m, n in pairs])  # (r, S, M)
        fresh_keys = np.concatenate([np.repeat(_pad(m.keys[None], S), n, axis=0) for m, n in pairs])
        fresh_mask = np.concatenate([np.repeat(np.arange(S)[None] < m.length, n, axis=0) for m, n in pairs])
        fresh_state = [np.concatenate([np.repeat(m.state[j][:, None], n, axis=1) for m, n in pairs], axis=1)
                       for j in range(len(memories[0].state))]  # [(L, r, H)]
        if self.owner:
            self.memory = np.concatenate([_pad(self.memory, S), fresh_memory])
            self.keys = np.concatenate([_pad(self.keys, S), fresh_keys])
            self.mask = np.concatenate([_pad(self.mask, S), fresh_mask])
            self.state = [np.concatenate([old, new], axis=1) for old, new in zip(self.state, fresh_state, strict=True)]
        else:
            self.memory, self.keys, self.mask, self.state = fresh_memory, fresh_keys, fresh_mask, fresh_state
        self.prev = np.concatenate([self.prev, np.full(sum(reps), bos, np.int64)])
        new = {
            "slot": [s.slot for s in streams],
            "joined": [step] * len(streams),
            "limit": [s.params.max_tokens for s in streams],
            "flush_chars": [s.params.flush_chars for s in streams],
            "flush_s": [s.params.flush_s for s in streams],
            "pending": [0] * len(streams),
            # Streams that join together would send together every flush_ms: offset each by its slot
            # so that the event loop gets a steady trickle of messages rather than bursts.
            "t_sent": [now - s.params.flush_s * (s.slot % 16) / 16 for s in streams],
        }
        for name, dtype in COLUMNS.items():
            setattr(self, name, np.concatenate([getattr(self, name), np.repeat(np.asarray(new[name], dtype), reps)]))
        self.streams.extend(streams)
        self._derive()

    def keep(self, streams: list[Seq2SeqStream]) -> None:
        """Keep only the rows of these streams (in their order); the memory shrinks to their longest source."""
        kept = set(map(id, streams))
        rows = np.array([i for i, s in enumerate(self.owner) if id(s) in kept], np.int64)
        S = int(self.mask[rows].sum(axis=1).max()) if len(rows) else 0
        self.memory = np.ascontiguousarray(self.memory[rows, :S])
        self.keys = np.ascontiguousarray(self.keys[rows, :S])
        self.mask = np.ascontiguousarray(self.mask[rows, :S])
        self.state = [np.ascontiguousarray(x[:, rows]) for x in self.state]
        self.prev = self.prev[rows]
        for name in COLUMNS:
            setattr(self, name, getattr(self, name)[rows])
        self.streams = [s for s in self.streams if id(s) in kept]
        self._derive()

    def deadline(self) -> float:
        """The first moment a stream's flush_ms is due."""
        return float((self.t_sent + self.flush_s).min()) if len(self) else np.inf

    def _derive(self) -> None:
        """Row indexes by role, rebuilt only when streams join or leave."""
        self.owner = [s for s in self.streams for _ in range(s.rows)]
        starts = np.cumsum([0, *(s.rows for s in self.streams)])[:-1].tolist()
        self.greedy = np.array([r for r, s in zip(starts, self.streams, strict=True) if s.beam is None], np.int64)
        self.beams = [(s, r) for r, s in zip(starts, self.streams, strict=True) if s.beam is not None]
        by_size: dict[int, list[tuple[Seq2SeqStream, int]]] = {}
        for s, r in self.beams:
            by_size.setdefault(s.rows, []).append((s, r))
        # Searches of one beam size, with their rows: their candidates are scored in one batch.
        self.beam_groups = [(members, np.array([r + i for _, r in members for i in range(K)], np.int64))
                            for K, members in by_size.items()]
        self.attending = [(r, s) for r, s in zip(starts, self.streams, strict=True) if s.attention is not None]


def _pad(x: np.ndarray, S: int) -> np.ndarray:
    """Pad axis 1 (source positions) with zeros up to S."""
    if x.shape[1] == S:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, S - x.shape[1])
    return np.pad(x, widths)
