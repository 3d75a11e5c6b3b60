"""Data: character corpora with batched truncated-BPTT windows, and labelled sentences.

Every reading error names the file (and line) so a user can fix their own corpus.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.tokenizer import Tokenizer


class DataError(ValueError):
    """Bad input data: the message names the file and, where it can, the line."""


def read_text(path: str | Path) -> str:
    """Whole file as UTF-8; a bad byte is reported with its line and column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"{path}:{line}:{col}: not UTF-8 (byte 0x{raw[e.start]:02x})") from None


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

    def window(self, i: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (B, T) of window i, streams shifted by `offset` characters (< T)."""
        starts = np.arange(self.B) * self.n + offset + i * self.T  # (B,)
        idx = starts[:, None] + np.arange(self.T + 1)[None, :]  # (B, T+1)
        chunk = self.data[idx]
        return chunk[:, :-1], chunk[:, 1:]

    def windows(self, offset: int = 0, start: int = 0) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """All full windows of one pass; a random `offset` per epoch varies where windows cut the text."""
        count = (self.n - offset) // self.T
        for i in range(start, count):
            x, y = self.window(i, offset)
            yield i, x, y


@dataclass
class Sentences:
    texts: list[str]
    labels: np.ndarray  # int64 class ids


def _parse_label(raw: str, labels: dict[str, str], where: str) -> int:
    order = list(labels)
    if raw not in labels:
        raise DataError(f"{where}: label {raw!r} is not in the label set {order}")
    return order.index(raw)


def sentence_format(path: Path, first_line: str, labels: dict[str, str]) -> str:
    """The format a file is in, from its first line: a header naming `sentence` and `label` is GLUE TSV, a line
    that starts with a known label and a space is `<label> <sentence>`; otherwise tabs mean TSV, and last the suffix."""
    if {"sentence", "label"} <= set(first_line.split("\t")):
        return "tsv"
    if first_line.partition(" ")[0] in labels:
        return "label_line"
    return "tsv" if "\t" in first_line or path.suffix == ".tsv" else "label_line"


def read_sentences(path: str | Path, labels: dict[str, str], fmt: str = "auto") -> Sentences:
    """GLUE TSV (header with `sentence` and `label` columns) or `<label> <sentence>` lines; "auto" detects which."""
    path = Path(path)
    if fmt not in ("tsv", "label_line", "auto"):
        raise DataError(f"{path}: unknown sentence format {fmt!r} (use 'tsv', 'label_line' or 'auto')")
    lines = read_text(path).splitlines()
    if fmt == "auto":
        fmt = sentence_format(path, next((line for line in lines if line.strip()), ""), labels)
    texts, ids = [], []
    if fmt == "tsv":
        if not lines:
            raise DataError(f"{path}: empty file (expected a header 'sentence<TAB>label')")
        header = lines[0].split("\t")
        if "sentence" not in header or "label" not in header:
            raise DataError(f"{path}:1: header must name 'sentence' and 'label' columns, got {header}")
        si, li = header.index("sentence"), header.index("label")
        for n, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) <= max(si, li) or not cols[li].strip():
                raise DataError(f"{path}:{n}: row has no label")
            texts.append(cols[si].strip())
            ids.append(_parse_label(cols[li].strip(), labels, f"{path}:{n}"))
    else:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            raw, _, text = line.strip().partition(" ")
            if not text.strip():
                raise DataError(f"{path}:{n}: line has no sentence after the label {raw!r}")
            texts.append(text.strip())
            ids.append(_parse_label(raw, labels, f"{path}:{n}"))
    if not texts:
        raise DataError(f"{path}: no labelled sentences")
    return Sentences(texts, np.asarray(ids, dtype=np.int64))


def pad_batch(seqs: list[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, T_max) ids padded at the end with pad_id, and (B,) lengths (at least 1)."""
    lengths = np.array([max(len(s), 1) for s in seqs], dtype=np.int64)
    out = np.full((len(seqs), int(lengths.max())), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out, lengths
