"""Data: character corpora with batched truncated-BPTT windows, and padded batches of labelled sentences.

Files are read by service/artifact/corpus.py; every reading error names the file (and line).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artifact.corpus import DataError, read_text
from service.artifact.tokenizer import Tokenizer


def file_info(path: str | Path) -> dict:
    """Name and sha256 of a data file, recorded in checkpoints and meta.json."""
    path = Path(path)
    return {"name": path.name, "path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@dataclass
class CharCorpus:
    """A character corpus split at one point: train = first (1 - val_fraction), val = the rest."""

    tokenizer: Tokenizer
    train: np.ndarray  # int64 ids
    val: np.ndarray

    @classmethod
    def from_file(cls, path: str | Path, val_fraction: float = 0.1, tokenizer: Tokenizer | None = None) -> CharCorpus:
        text = read_text(path)
        if not text.strip():
            raise DataError(f"{path}: the corpus is empty")
        cut = int(len(text) * (1 - val_fraction))
        train_text, val_text = text[:cut], text[cut:]
        if len(val_text) < 2 or len(train_text) < 2:
            raise DataError(f"{path}: the corpus ({len(text)} characters) is too short to split for validation")
        tok = tokenizer or Tokenizer.build(train_text, level="char")
        return cls(tok, tok.encode(train_text), tok.encode(val_text))


class BPTTBatches:
    """min-char-rnn's windows, batched: B contiguous streams through the data, T characters per window.

    Stream b reads data[b*n : (b+1)*n + 1]. Window i of every stream follows window i-1 in the
    text, so the hidden state at the end of one window is the right start for the next
    (carried, and detached so gradients stop at the window edge: truncated BPTT).
    """

    def __init__(self, data: np.ndarray, batch_size: int, seq_len: int, source: str = "corpus") -> None:
        n = (len(data) - 1) // batch_size  # characters per stream
        if n < seq_len:
            raise DataError(f"{source}: {len(data)} characters is shorter than one window "
                            f"(batch_size {batch_size} x seq_len {seq_len} + 1); lower them or add text")
        self.data, self.B, self.T, self.n = data, batch_size, seq_len, n

    def __len__(self) -> int:
        return self.n // self.T

    def window(self, i: int, offset: int = 0, streams: slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (b, T) of window i of the chosen streams (all B by default), shifted by `offset`
        characters (< T)."""
        starts = np.arange(self.B)[streams] * self.n + offset + i * self.T  # (b,)
        idx = starts[:, None] + np.arange(self.T + 1)[None, :]  # (b, T+1)
        chunk = self.data[idx]
        return chunk[:, :-1], chunk[:, 1:]

    def windows(self, offset: int = 0, start: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """All full windows of one pass; a random `offset` per epoch varies where windows cut the text."""
        count = (self.n - offset) // self.T
        for i in range(start, count):
            x, y = self.window(i, offset)
            yield i, x, y


def pad_batch(seqs: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, T_max) ids padded at the end with pad_id, and (B,) lengths (at least 1)."""
    lengths = np.array([max(len(s), 1) for s in seqs], dtype=np.int64)
    out = np.full((len(seqs), int(lengths.max())), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths
