"""Encoder-decoder tokenizer files (the `tokenizers` library's JSON), read as untrusted bytes and checked against meta.json:
a translator's two (source and target), a captioner's one (its words)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tokenizers

from service import artifact
from service.artifact import Meta


def _parse(path: Path, filename: str) -> tokenizers.Tokenizer:
    data = artifact.read_member(path, filename)
    try:
        return tokenizers.Tokenizer.from_str(data.decode("utf-8"))
    except Exception as err:  # the library raises its own exception types for malformed files
        raise ValueError(f"{filename} is not a tokenizers file: {err}") from None


class TargetVocab:
    """Target ids -> text: what the decoding engine needs of the output side (engine/encdec.py TargetText).
    `vocab_size` and `level` describe it (ModelInfo)."""

    def __init__(self, target: tokenizers.Tokenizer, special_ids: dict[str, int], level: str, vocab_size: int) -> None:
        """`vocab_size`: meta.json's sizes.vocab_size, which the tokenizer must match."""
        self.target, self.level = target, level
        self.vocab_size = target.get_vocab_size()
        if self.vocab_size != vocab_size:
            raise ValueError(f"the target tokenizer has {self.vocab_size} tokens, meta.json sizes.vocab_size is {vocab_size}")
        self.pad, self.bos, self.eos = special_ids["pad"], special_ids["bos"], special_ids["eos"]
        self.piece_chars = self._piece_chars()

    @classmethod
    def read_captioner(cls, path: Path, meta: Meta) -> TargetVocab:
        """A captioner's one tokenizer (its words)."""
        c = meta.captioner
        return cls(_parse(path, artifact.TARGET_TOKENIZER_FILE), c["special_ids"], "word", meta.sizes["vocab_size"])

    def _piece_chars(self) -> np.ndarray:
        """(V,) characters each target token adds after a word: what flush_chars counts. Special tokens add none."""
        V = self.vocab_size
        anchor = next((i for i in range(V) if i not in (self.pad, self.bos, self.eos) and self.target.decode([i])), None)
        if anchor is None:
            raise ValueError("the target tokenizer has no token that decodes to text")
        base = len(self.target.decode([anchor]))
        # One decode at a time: decode_batch would start the library's thread pool, which then warns at every
        # fork of the process (the tests' subprocesses) that it disables itself.
        return np.maximum(np.array([len(self.target.decode([anchor, i])) for i in range(V)], np.int64) - base, 0)

    def decode(self, ids: Sequence[int]) -> str:
        """Detokenized target text; special tokens are dropped, as training's scores saw it."""
        return self.target.decode(list(ids), skip_special_tokens=True)

    def target_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.target.id_to_token(int(i)) or "" for i in ids]


class SubwordPair(TargetVocab):
    """A translator's tokenizers: source text -> source ids, and the target side's ids -> text."""

    def __init__(self, source: tokenizers.Tokenizer, target: tokenizers.Tokenizer, meta: Meta) -> None:
        t = meta.translator
        if source.get_vocab_size() != meta.sizes["src_vocab_size"]:
            raise ValueError(f"the source tokenizer has {source.get_vocab_size()} tokens, meta.json says "
                             f"{meta.sizes['src_vocab_size']}")
        super().__init__(target, t["special_ids"], str(t["tokenizers"].get("level", "subword")), meta.sizes["vocab_size"])
        self.source = source

    @classmethod
    def read(cls, path: Path, meta: Meta) -> SubwordPair:
        return cls(_parse(path, artifact.SOURCE_TOKENIZER_FILE), _parse(path, artifact.TARGET_TOKENIZER_FILE), meta)

    def encode_source(self, text: str) -> np.ndarray:
        """int64 ids of the source text (unknown pieces become the unknown token; no BOS or EOS)."""
        return np.asarray(self.source.encode(text).ids, np.int64)

    def source_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.source.id_to_token(int(i)) or "" for i in ids]
