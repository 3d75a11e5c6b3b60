"""Each stream's own uniform draws for the sampler, drawn from its seeded generator in blocks.

A stream's k-th character uses the k-th number of its own generator whichever batch it runs in, so a
seeded stream writes the same text alone or batched. Drawing a block at a time costs one numpy call
per stream every BLOCK steps instead of one per step, and gives the same sequence.
"""

from __future__ import annotations

import numpy as np

from service.engine.stream import Stream

BLOCK = 256  # uniforms drawn per refill


class Draws:
    """Per-slot blocks of uniforms: the draw for decode step k is column k % BLOCK of the stream's slot."""

    def __init__(self, n_slots: int) -> None:
        self.table = np.zeros((n_slots, BLOCK), np.float64)
        self.refills: dict[int, list[Stream]] = {}  # step -> streams whose block runs out after it

    def start(self, stream: Stream, step: int) -> None:
        """A stream that joins the batch: its draws for steps step .. step + BLOCK - 1."""
        self.table[stream.slot] = np.roll(stream.rng.random(BLOCK), step % BLOCK)
        self.refills.setdefault(step + BLOCK - 1, []).append(stream)

    def at(self, slots: np.ndarray, step: int) -> np.ndarray:
        """The draws of these slots for `step`, (B,)."""
        return self.table[slots, step % BLOCK]

    def used(self, step: int) -> None:
        """After `step`: the next block of every stream still running whose block it ended."""
        for stream in self.refills.pop(step, ()):
            if stream.slot >= 0:
                self.start(stream, step + 1)

    def clear(self) -> None:
        self.refills.clear()
