"""Tokenizers shared by training and serving: one definition, stored as tokenizer.json."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artifact.files import MAX_BYTES, TOKENIZER_FILE, parse_json, read_inside
from service.artifact.meta import MAX_SIZES

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
        """Checked on every construction: a tokenizer.json is untrusted input, and serving trusts these ids."""
        if self.level not in ("char", "word"):
            raise ValueError(f"tokenizer level must be 'char' or 'word', got {self.level!r:.40}")
        if not all(isinstance(t, str) and t for t in self.tokens):
            raise ValueError("tokenizer tokens must be non-empty strings")
        if len(self.tokens) > MAX_SIZES["vocab_size"]:
            raise ValueError(f"tokenizer has {len(self.tokens)} tokens, more than {MAX_SIZES['vocab_size']}")
        try:
            "".join(self.tokens).encode("utf-8")
        except UnicodeError:
            raise ValueError("tokenizer tokens hold a lone surrogate, which no reply can carry") from None
        if len(set(self.tokens)) != len(self.tokens):
            seen: set[str] = set()
            dup = next(t for t in self.tokens if t in seen or seen.add(t))
            raise ValueError(f"tokenizer vocabulary has duplicate tokens, e.g. {dup!r:.40}")
        for name, idx in (("unk_id", self.unk_id), ("pad_id", self.pad_id)):
            if idx is None and name == "pad_id":
                continue
            if type(idx) is not int:
                raise ValueError(f"tokenizer {name} must be an integer, got {idx!r:.40}")
            if not 0 <= idx < len(self.tokens):
                raise ValueError(f"tokenizer {name}={idx} is outside the vocabulary of {len(self.tokens)}")
        if self.pad_id == self.unk_id:
            raise ValueError("tokenizer pad_id and unk_id must differ")
        if self.level == "char":
            bad = [t for i, t in enumerate(self.tokens) if len(t) != 1 and i not in (self.unk_id, self.pad_id)]
            if bad:
                raise ValueError(f"char tokenizer has multi-character tokens: {bad[:3]!r:.80}")
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
        if not isinstance(d, dict):
            raise ValueError("tokenizer must be a JSON object")
        unknown = set(d) - {"level", "unk_id", "pad_id", "tokens"}
        if unknown:
            raise ValueError(f"tokenizer has unknown keys: {sorted(unknown)[:5]!r:.200}")
        if not isinstance(d.get("tokens"), list):
            raise ValueError("tokenizer 'tokens' must be a list of strings")
        if "unk_id" not in d:
            raise ValueError("tokenizer lacks unk_id")
        return cls(d.get("level", ""), tuple(d["tokens"]), unk_id=d["unk_id"], pad_id=d.get("pad_id"))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def parse(cls, data: bytes) -> Tokenizer:
        """tokenizer.json's bytes -> Tokenizer; ValueError saying what is wrong."""
        return cls.from_dict(parse_json(data, TOKENIZER_FILE))

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """A tokenizer.json file of an artifact: read as read_member reads it (inside <root>, at most MAX_BYTES)."""
        path = Path(path)
        return cls.parse(read_inside(path, path.parent.parent, MAX_BYTES[TOKENIZER_FILE]))
