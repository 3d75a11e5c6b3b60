"""Tokenizers shared by training and serving: one definition, stored as tokenizer.json."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UNK = "<unk>"
PAD = "<pad>"

# PTB-like word split, matching how SST-2 was tokenised: "wasn't it?" -> was n't it ?
_WORD_RE = re.compile(r"\w+(?=n't\b)|n't\b|'\w+|\w[\w-]*|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lower-case and split punctuation off words (the word tokenizer's pre-tokenisation)."""
    return _WORD_RE.findall(text.lower())


@dataclass(frozen=True)
class Tokenizer:
    """Maps text to ids and back.

    `level` is "char" (each code point is a token) or "word" (split_words).
    Unknown characters/words map to `unk_id`; `pad_id` (classifiers only) fills batches.
    """

    level: str
    tokens: tuple[str, ...]
    unk_id: int
    pad_id: int | None = None

    def __post_init__(self) -> None:
        if self.level not in ("char", "word"):
            raise ValueError(f"tokenizer level must be 'char' or 'word', got {self.level!r}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("tokenizer vocabulary has duplicate tokens")
        for name, idx in (("unk_id", self.unk_id), ("pad_id", self.pad_id)):
            if idx is not None and not 0 <= idx < len(self.tokens):
                raise ValueError(f"tokenizer {name}={idx} is outside the vocabulary of {len(self.tokens)}")
        if self.level == "char":
            bad = [t for i, t in enumerate(self.tokens) if len(t) != 1 and i not in (self.unk_id, self.pad_id)]
            if bad:
                raise ValueError(f"char tokenizer has multi-character tokens: {bad[:3]!r}")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def pieces(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else split_words(text)

    def encode(self, text: str) -> np.ndarray:
        """Text -> int64 ids; unknown pieces become unk_id."""
        index, unk = self._index, self.unk_id  # type: ignore[attr-defined]
        return np.fromiter((index.get(p, unk) for p in self.pieces(text)), dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        sep = "" if self.level == "char" else " "
        return sep.join(self.tokens[i] for i in ids)

    def token(self, idx: int) -> str:
        return self.tokens[idx]

    @classmethod
    def build(cls, pieces: Iterable[str], level: str, min_freq: int = 1, with_pad: bool = False) -> Tokenizer:
        """Vocabulary from training pieces: specials first, then by descending frequency (ties by text)."""
        counts: dict[str, int] = {}
        for p in pieces:
            counts[p] = counts.get(p, 0) + 1
        specials = [PAD, UNK] if with_pad else [UNK]
        kept = sorted((p for p, n in counts.items() if n >= min_freq and p not in specials), key=lambda p: (-counts[p], p))
        tokens = tuple(specials + kept)
        return cls(level, tokens, unk_id=tokens.index(UNK), pad_id=tokens.index(PAD) if with_pad else None)

    def to_dict(self) -> dict:
        return {"level": self.level, "unk_id": self.unk_id, "pad_id": self.pad_id, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, d: dict) -> Tokenizer:
        unknown = set(d) - {"level", "unk_id", "pad_id", "tokens"}
        if unknown:
            raise ValueError(f"tokenizer has unknown keys: {sorted(unknown)}")
        if not isinstance(d.get("tokens"), list) or not all(isinstance(t, str) for t in d["tokens"]):
            raise ValueError("tokenizer 'tokens' must be a list of strings")
        return cls(d.get("level", ""), tuple(d["tokens"]), unk_id=int(d["unk_id"]),
                   pad_id=None if d.get("pad_id") is None else int(d["pad_id"]))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
