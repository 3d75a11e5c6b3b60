"""The encoder–decoder batch as a structure of arrays: each stream holds consecutive rows (its beams), every row
carries its stream's memory padded to the batch's longest source and masked.

The memories (and their keys) are the batch's largest arrays: (rows, S, M) each, megabytes for a full batch.
They live in buffers of the engine's row capacity that are written in place: a joiner's rows are written
after the last row, and a leaver's rows are taken over by the last stream when it holds as many rows (a
swap), so a step where requests join and leave copies their rows only, not the batch. The small per-row
arrays (state, previous token, columns) are simply rebuilt.
"""

from __future__ import annotations

import numpy as np

from service.engine.beam import Beam
from service.engine.encdec import Memory
from service.engine.seq2seq_stream import Seq2SeqStream

# Per-row columns. Every row of a stream holds its stream's values; a step's progress is the step number
# minus `joined`, so an ordinary step writes no column but `pending`.
COLUMNS = {
    "slot": np.int64,  # the stream's slot, which indexes the engine's per-slot buffers
    "joined": np.int64,  # step that decodes the stream's first token
    "limit": np.int64,  # the stream's max_tokens
    "length": np.int64,  # the stream's source positions
    "flush_chars": np.int64,
    "flush_s": np.float64,
    "pending": np.int64,  # greedy: characters decoded and not sent yet
    "t_sent": np.float64,  # when the stream last sent text (or joined)
}


Member = tuple[Seq2SeqStream, Beam, int]  # a beam search: its stream, its search, its first row


class Rows:
    # the COLUMNS, each (R,)
    slot: np.ndarray
    joined: np.ndarray
    limit: np.ndarray
    length: np.ndarray
    flush_chars: np.ndarray
    flush_s: np.ndarray
    pending: np.ndarray
    t_sent: np.ndarray

    def __init__(self, capacity: int) -> None:
        """`capacity`: the most rows the batch will hold (the engine's max_streams)."""
        self.capacity = capacity
        self.streams: list[Seq2SeqStream] = []  # in row order
        self.owner: list[Seq2SeqStream] = []  # row -> its stream
        self.prev = np.zeros(0, np.int64)  # the token each row feeds to the next step
        self.state: list[np.ndarray] = []  # [(L, R, H), ...]
        self._memory = self._keys = np.zeros((capacity, 0, 0), np.float32)  # (capacity, S, M), (capacity, S, K)
        self._mask = np.zeros((capacity, 0), bool)  # true at real source positions
        for name, dtype in COLUMNS.items():
            setattr(self, name, np.zeros(0, dtype))
        self._derive()

    def __len__(self) -> int:
        return len(self.owner)

    @property
    def memory(self) -> np.ndarray:
        return self._memory[: len(self)]  # (R, S, M), contiguous: a prefix of the buffer's rows

    @property
    def keys(self) -> np.ndarray:
        return self._keys[: len(self)]

    @property
    def mask(self) -> np.ndarray:
        return self._mask[: len(self)]

    def add(self, streams: list[Seq2SeqStream], memories: list[Memory], bos: int, step: int, now: float) -> None:
        """Append each stream's rows (beam_size copies of its memory and initial state), to decode from `step` on."""
        R, reps = len(self), [s.rows for s in streams]
        if not self.streams:
            self.state = [np.zeros((*x.shape[:1], 0, *x.shape[1:]), np.float32) for x in memories[0].state]
            self._resize(max(m.length for m in memories), memories[0])
        elif (S := max(m.length for m in memories)) > self._mask.shape[1]:
            self._resize(S, memories[0])
        r = R
        for m, n in zip(memories, reps, strict=True):
            self._memory[r : r + n, : m.length], self._memory[r : r + n, m.length :] = m.memory, 0.0
            self._keys[r : r + n, : m.length], self._keys[r : r + n, m.length :] = m.keys, 0.0
            self._mask[r : r + n] = np.arange(self._mask.shape[1]) < m.length
            r += n
        fresh = [np.concatenate([np.repeat(m.state[j][:, None], n, axis=1) for m, n in zip(memories, reps, strict=True)],
                                axis=1) for j in range(len(self.state))]  # [(L, r, H)]
        self.state = [np.concatenate([old, new], axis=1) for old, new in zip(self.state, fresh, strict=True)]
        self.prev = np.concatenate([self.prev, np.full(sum(reps), bos, np.int64)])
        new = {
            "slot": [s.slot for s in streams],
            "joined": [step] * len(streams),
            "limit": [s.params.max_tokens for s in streams],
            "length": [m.length for m in memories],
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

    def remove(self, leaving: list[Seq2SeqStream]) -> None:
        """Drop these streams' rows. The last stream moves into a leaver's rows when it holds as many (the usual
        case: every greedy request is one row); otherwise the streams after the leaver move up."""
        start = dict(zip(map(id, self.streams), self.starts, strict=True))
        order = list(self.streams)
        for s in leaving:
            i = next(j for j, x in enumerate(order) if x is s)
            if order[-1] is not s and order[-1].rows == s.rows:
                order[i] = order.pop()
            else:
                order.pop(i)
        rows = np.array([start[id(s)] + k for s in order for k in range(s.rows)], np.int64)
        moved = np.flatnonzero(rows != np.arange(len(rows)))
        for buf in (self._memory, self._keys, self._mask):
            buf[moved] = buf[rows[moved]]  # the right side is gathered first: overlapping moves are safe
        self.state = [np.ascontiguousarray(x[:, rows]) for x in self.state]
        self.prev = self.prev[rows]
        for name in COLUMNS:
            setattr(self, name, getattr(self, name)[rows])
        self.streams = order
        self._derive()
        S = int(self.length.max()) if len(rows) else 0
        if S <= self._mask.shape[1] // 2:  # the longest sources left: attend over half the positions or fewer
            self._resize(S, None)

    def deadline(self) -> float:
        """The first moment a stream's flush_ms is due."""
        return float((self.t_sent + self.flush_s).min()) if len(self) else np.inf

    def _resize(self, S: int, like: Memory | None) -> None:
        """Buffers of S source positions (a longer joiner, or the long sources left), keeping the rows in use."""
        R, old = len(self), min(S, self._mask.shape[1])
        widths = (like.memory.shape[1], like.keys.shape[1]) if like is not None else (self._memory.shape[2],
                                                                                       self._keys.shape[2])
        memory = np.zeros((self.capacity, S, widths[0]), np.float32)
        keys = np.zeros((self.capacity, S, widths[1]), np.float32)
        mask = np.zeros((self.capacity, S), bool)
        if R:
            memory[:R, :old], keys[:R, :old], mask[:R, :old] = self._memory[:R, :old], self._keys[:R, :old], self._mask[:R, :old]
        self._memory, self._keys, self._mask = memory, keys, mask

    def _derive(self) -> None:
        """Row indexes by role, rebuilt only when streams join or leave."""
        self.owner = [s for s in self.streams for _ in range(s.rows)]
        self.starts = np.cumsum([0, *(s.rows for s in self.streams)])[:-1].tolist()
        pairs = list(zip(self.streams, self.starts, strict=True))
        self.greedy = np.array([r for s, r in pairs if s.beam is None], np.int64)
        self.beams: list[Member] = [(s, s.beam, r) for s, r in pairs if s.beam is not None]
        by_size: dict[int, list[Member]] = {}
        for m in self.beams:
            by_size.setdefault(m[1].K, []).append(m)
        # Searches of one beam size, with their rows: their candidates are scored in one batch.
        self.beam_groups = [(members, np.array([r + i for *_, r in members for i in range(K)], np.int64))
                            for K, members in by_size.items()]
        # Greedy requests that keep their attention: (row, the request's (max_tokens, S) array, its S).
        self.attending = [(r, s.attention, s.width) for s, r in pairs if s.attention is not None]
