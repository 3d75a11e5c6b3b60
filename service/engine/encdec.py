"""What the encoder–decoder engine needs of a model: an encoder, a decoder step and the target vocabulary.

The engine never sees what a source is: a translator's encoder reads token ids, a captioner's would read an
image. Each source becomes a Memory (the rows its decoder attends over, their keys and the initial decoder
state); from then on every kind decodes alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Memory:
    """One source as the decoder sees it: S positions to attend over, and where decoding starts."""

    memory: np.ndarray  # (S, M) float32
    keys: np.ndarray  # (S, K) float32: what the decoder's queries are scored against
    state: list[np.ndarray]  # [(L, H) float32, ...]: the initial decoder state

    @property
    def length(self) -> int:
        return self.memory.shape[0]


class Encoder(Protocol):
    def encode(self, sources: Sequence[Any]) -> list[Memory]:
        """One call for many sources (like a prefill): their memories, in order."""
        ...


class DecoderStep(Protocol):
    def step(self, prev: np.ndarray, state: list[np.ndarray], memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """One decoding step of B rows: prev int64 (B,), state [(L, B, H)], memory (B, S, M), keys (B, S, K),
        mask bool (B, S), true at real positions -> logits (B, V), new state, attention (B, S)."""
        ...


class TargetText(Protocol):
    """The target vocabulary: its special ids and how token ids become text."""

    bos: int
    eos: int
    piece_chars: np.ndarray  # (V,) int64: characters each token adds to the text (0 for special tokens)

    def decode(self, ids: Sequence[int]) -> str:
        """Detokenized text of target ids (special tokens dropped)."""
        ...
