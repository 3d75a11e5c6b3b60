"""A translator's two tokenizer files (the `tokenizers` library's JSON), read as untrusted bytes and checked against meta.json."""

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


class SubwordPair:
    """Source text -> source ids; target ids -> text. `vocab_size` and `level` describe the target side (ModelInfo)."""

    def __init__(self, source: tokenizers.Tokenizer, target: tokenizers.Tokenizer, meta: Meta) -> None:
        t = meta.translator
        self.source, self.target = source, target
        self.level = str(t["tokenizers"].get("level", "subword"))
        self.vocab_size = target.get_vocab_size()
        for side, tok, want in (("source", source, meta.sizes["src_vocab_size"]), ("target", target, self.vocab_size)):
            if tok.get_vocab_size() != want:
                raise ValueError(f"the {side} tokenizer has {tok.get_vocab_size()} tokens, meta.json says {want}")
        if self.vocab_size != meta.sizes["vocab_size"]:
            raise ValueError(f"the target tokenizer has {self.vocab_size} tokens, meta.json sizes.vocab_size is "
                             f"{meta.sizes['vocab_size']}")
        ids = t["special_ids"]
        self.pad, self.bos, self.eos = ids["pad"], ids["bos"], ids["eos"]
        self.piece_chars = self._piece_chars()

    @classmethod
    def read(cls, path: Path, meta: Meta) -> SubwordPair:
        return cls(_parse(path, artifact.SOURCE_TOKENIZER_FILE), _parse(path, artifact.TARGET_TOKENIZER_FILE), meta)

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

    def encode_source(self, text: str) -> np.ndarray:
        """int64 ids of the source text (unknown pieces become the unknown token; no BOS or EOS)."""
        return np.asarray(self.source.encode(text).ids, np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        """Detokenized target text; special tokens are dropped, as training's BLEU scored it."""
        return self.target.decode(list(ids), skip_special_tokens=True)

    def source_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.source.id_to_token(int(i)) or "" for i in ids]

    def target_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.target.id_to_token(int(i)) or "" for i in ids]
