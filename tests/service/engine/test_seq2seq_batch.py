"""The encoder–decoder batch: whatever joins and leaves, each row holds its stream's memory, mask and state."""

from __future__ import annotations

import numpy as np

from service.engine.encdec import Memory
from service.engine.seq2seq_batch import Rows
from service.engine.seq2seq_stream import Seq2SeqParams, Seq2SeqStream

M, K_WIDTH, H = 3, 2, 4


def _stream(rng: np.random.Generator, slot: int) -> tuple[Seq2SeqStream, Memory]:
    n, beam = int(rng.integers(1, 9)), int(rng.choice([1, 1, 2, 3]))
    s = Seq2SeqStream(Seq2SeqParams(None, n, beam, 0.0, 10, False, 8, 1.0))
    s.slot = slot
    s.started(n, eos=2)
    memory = Memory(rng.normal(size=(n, M)).astype(np.float32), rng.normal(size=(n, K_WIDTH)).astype(np.float32),
                    [rng.normal(size=(1, H)).astype(np.float32)])
    return s, memory


def _check(rows: Rows, memories: dict[int, Memory]) -> None:
    assert len(rows) == sum(s.rows for s in rows.streams) and rows.memory.flags.c_contiguous
    for s, start in zip(rows.streams, rows.starts, strict=True):
        m, block = memories[id(s)], slice(start, start + s.rows)
        assert all(o is s for o in rows.owner[block])
        np.testing.assert_array_equal(rows.memory[block, : m.length], np.broadcast_to(m.memory, (s.rows, *m.memory.shape)))
        np.testing.assert_array_equal(rows.keys[block, : m.length], np.broadcast_to(m.keys, (s.rows, *m.keys.shape)))
        assert rows.mask[block, : m.length].all() and not rows.mask[block, m.length :].any()
        np.testing.assert_array_equal(rows.state[0][:, block], np.repeat(m.state[0][:, None], s.rows, axis=1))
        assert (rows.slot[block] == s.slot).all() and (rows.length[block] == m.length).all()


def test_rows_keep_their_streams_memories_through_random_joins_and_leaves():
    rng = np.random.default_rng(0)
    rows, memories, free = Rows(capacity=24), {}, list(range(24))
    for step in range(300):
        if rows.streams and (rng.random() < 0.45 or len(rows) > 16):
            leaving = list(rng.choice(np.array(rows.streams, object), int(rng.integers(1, min(3, len(rows.streams)) + 1)),
                                      replace=False))
            rows.remove(leaving)
            free += [s.slot for s in leaving]
        else:
            joined = [_stream(rng, free.pop()) for _ in range(int(rng.integers(1, 3)))]
            memories.update((id(s), m) for s, m in joined)
            rows.add([s for s, _ in joined], [m for _, m in joined], bos=1, step=step, now=0.0)
        _check(rows, memories)
        longest = max((memories[id(s)].length for s in rows.streams), default=0)
        assert longest <= rows.mask.shape[1] <= max(2 * longest, 8)  # the padding shrinks when long sources leave
