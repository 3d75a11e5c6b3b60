"""Requests as validated domain objects: every bad field becomes InvalidArgument naming it."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from service.artifact.tokenizer import Tokenizer
from service.engine.stream import MAX_FLUSH_CHARS, GenerateParams
from service.errors import InvalidArgument
from service.settings import Settings

MAX_FLUSH_MS = 10_000
MAX_TRACE_TOP_K = 20


def generate_params(req, tok: Tokenizer, s: Settings) -> GenerateParams:  # req: rnnserve.v1.GenerateRequest
    if not req.prompt:
        raise InvalidArgument("prompt", "must not be empty (it primes the model's state)")
    if len(req.prompt) > s.max_prompt_chars:
        raise InvalidArgument("prompt", f"{len(req.prompt)} characters, the limit is {s.max_prompt_chars}")
    max_tokens = req.max_tokens if req.HasField("max_tokens") else s.default_max_tokens
    if not 0 < max_tokens <= s.max_tokens_limit:
        raise InvalidArgument("max_tokens", f"must be in 1..{s.max_tokens_limit}, got {max_tokens}")
    temperature = req.temperature if req.HasField("temperature") else 1.0
    if not math.isfinite(temperature) or temperature < 0:
        raise InvalidArgument("temperature", f"must be a finite number >= 0 (0 = greedy), got {temperature}")
    top_p = req.top_p if req.HasField("top_p") else 1.0
    if not 0 < top_p <= 1:  # also false for NaN
        raise InvalidArgument("top_p", f"must be in (0, 1], got {top_p}")
    if req.top_k < 0:
        raise InvalidArgument("top_k", f"must be >= 0 (0 = no limit), got {req.top_k}")
    if len(req.stop) > s.max_stop:
        raise InvalidArgument("stop", f"{len(req.stop)} sequences, at most {s.max_stop} allowed")
    for i, seq in enumerate(req.stop):
        if not seq or len(seq) > s.max_stop_chars:
            raise InvalidArgument(f"stop[{i}]", f"must have 1..{s.max_stop_chars} characters, got {len(seq)}")
    flush_chars, flush_s = flush(req, s)
    return GenerateParams(
        prompt_ids=tok.encode(req.prompt),
        max_tokens=max_tokens,
        temperature=float(temperature),
        top_k=req.top_k,
        top_p=float(top_p),
        seed=req.seed if req.HasField("seed") else secrets.randbits(63),
        stop=tuple(req.stop),
        logprobs=req.logprobs,
        flush_chars=flush_chars,
        flush_s=flush_s,
    )


def flush(req, s: Settings) -> tuple[int, float]:  # req: a streaming request with flush_chars and flush_ms
    """When a stream sends what is ready: (characters, seconds), the server's defaults for 0."""
    if req.flush_chars > MAX_FLUSH_CHARS:
        raise InvalidArgument("flush_chars", f"must be in 0..{MAX_FLUSH_CHARS} (0 = server default), got {req.flush_chars}")
    if req.flush_ms > MAX_FLUSH_MS:
        raise InvalidArgument("flush_ms", f"must be in 0..{MAX_FLUSH_MS} (0 = server default), got {req.flush_ms}")
    return min(req.flush_chars or s.flush_chars, MAX_FLUSH_CHARS), (req.flush_ms or s.flush_ms) / 1000


def classify_rows(req, tok: Tokenizer, s: Settings) -> list[np.ndarray]:  # req: rnnserve.v1.ClassifyRequest
    if not req.texts:
        raise InvalidArgument("texts", "must hold at least one text")
    if len(req.texts) > s.max_classify_texts:
        raise InvalidArgument("texts", f"{len(req.texts)} texts, at most {s.max_classify_texts} per request")
    rows = []
    for i, text in enumerate(req.texts):
        if len(text) > s.max_prompt_chars:
            raise InvalidArgument(f"texts[{i}]", f"{len(text)} characters, the limit is {s.max_prompt_chars}")
        ids = tok.encode(text)
        if len(ids) == 0:
            raise InvalidArgument(f"texts[{i}]", "has no tokens")
        rows.append(ids)
    if (n := sum(map(len, rows))) > s.max_classify_tokens:
        raise InvalidArgument("texts", f"{n} tokens in {len(rows)} texts, the limit is {s.max_classify_tokens} per "
                                       "request (max_classify_tokens); send fewer or shorter texts")
    return rows


@dataclass(frozen=True)
class TraceParams:
    text: str
    layers: list[int]  # column j is (layers[j], units[j]), layers outer
    units: list[int]
    top_k: int


def trace_params(req, n_layer: int, hidden_size: int, s: Settings) -> TraceParams:  # req: rnnserve.v1.TraceRequest
    if not req.text:
        raise InvalidArgument("text", "must not be empty")
    if len(req.text) > s.max_trace_chars:
        raise InvalidArgument("text", f"{len(req.text)} characters, the limit is {s.max_trace_chars}")
    for name, values, size in (("layers", req.layers, n_layer), ("units", req.units, hidden_size)):
        if bad := [v for v in values if v >= size]:
            raise InvalidArgument(name, f"{bad[0]} is out of range: the model has {size} (0-based)")
        if len(set(values)) != len(values):
            raise InvalidArgument(name, "must not repeat a value")
    layers, units = list(req.layers) or list(range(n_layer)), list(req.units) or list(range(hidden_size))
    if len(layers) * len(units) > s.max_trace_units:
        raise InvalidArgument("units", f"{len(layers)} layers x {len(units)} units is {len(layers) * len(units)} columns, "
                                       f"the limit is {s.max_trace_units}; choose fewer layers or units")
    columns = len(layers) * len(units)
    if len(req.text) * columns > s.max_trace_work:
        raise InvalidArgument("text", f"{len(req.text)} characters x {columns} columns is {len(req.text) * columns}, "
                                      f"the limit is {s.max_trace_work} (max_trace_work); trace a shorter text or "
                                      "fewer units")
    if req.top_k > MAX_TRACE_TOP_K:
        raise InvalidArgument("top_k", f"must be in 0..{MAX_TRACE_TOP_K}, got {req.top_k}")
    return TraceParams(req.text, [layer for layer in layers for _ in units], units * len(layers), req.top_k)
