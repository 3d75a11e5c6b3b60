"""Translate and TranslateBatch requests as engine parameters: every bad field becomes InvalidArgument naming it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.engine.seq2seq_stream import Seq2SeqParams
from service.errors import InvalidArgument
from service.settings import Settings

MAX_LENGTH_PENALTY = 10.0  # far beyond any useful value (GNMT used 0.2 to 1): a larger one is a mistake


@dataclass(frozen=True)
class LengthRule:
    """A translation of a source of n tokens has at most floor(a * n + b) tokens, EOS included (meta.json max_len)."""

    a: float
    b: int

    def __call__(self, n: int) -> int:
        return math.floor(self.a * n + self.b)


@dataclass(frozen=True)
class Search:
    """How a request's texts are decoded, checked once for all of them."""

    beam_size: int
    length_penalty: float
    max_tokens: int | None  # None: the length rule alone
    attention: bool


def search(req, default_penalty: float, s: Settings) -> Search:  # req: TranslateRequest or TranslateBatchRequest
    beam = req.beam_size or 1
    most = min(s.max_beam_size, s.max_streams)
    if beam > most:
        raise InvalidArgument("beam_size", f"must be in 1..{most} (0 = 1, greedy), got {beam}")
    penalty = req.length_penalty if req.HasField("length_penalty") else default_penalty
    if not 0 <= penalty <= MAX_LENGTH_PENALTY:  # also false for NaN
        raise InvalidArgument("length_penalty", f"must be in 0..{MAX_LENGTH_PENALTY:g}, got {penalty}")
    max_tokens = req.max_tokens if req.HasField("max_tokens") else None
    if max_tokens is not None and not 0 < max_tokens <= s.max_tokens_limit:
        raise InvalidArgument("max_tokens", f"must be in 1..{s.max_tokens_limit}, got {max_tokens}")
    return Search(beam, float(penalty), max_tokens, req.return_attention)


def count_texts(n: int, field: str, s: Settings) -> None:
    """A request translates 1 .. max_translate_texts texts."""
    if n == 0:
        raise InvalidArgument(field, "must hold at least one text")
    if n > s.max_translate_texts:
        raise InvalidArgument(field, f"{n} texts, at most {s.max_translate_texts} per request")


def source_ids(text: str, field: str, encode: Callable[[str], np.ndarray], s: Settings) -> np.ndarray:
    """The text's source token ids; its size is checked in bytes before it is tokenized, then in tokens."""
    if not text:
        raise InvalidArgument(field, "must not be empty")
    size = len(text.encode())
    if size > s.max_source_bytes:
        raise InvalidArgument(field, f"{size} bytes, the limit is {s.max_source_bytes}")
    ids = encode(text)
    if len(ids) == 0:
        raise InvalidArgument(field, "has no tokens")
    if len(ids) > s.max_source_tokens:
        raise InvalidArgument(field, f"{len(ids)} tokens, the limit is {s.max_source_tokens}")
    return ids


def seq2seq_params(ids: np.ndarray, o: Search, rule: LengthRule, flush_chars: int, flush_s: float) -> Seq2SeqParams:
    """One text's request to the engine: its length limit is the rule's for its source, capped by max_tokens."""
    limit = rule(len(ids)) if o.max_tokens is None else min(rule(len(ids)), o.max_tokens)
    return Seq2SeqParams(ids, len(ids), o.beam_size, o.length_penalty, limit, o.attention, flush_chars, flush_s)
