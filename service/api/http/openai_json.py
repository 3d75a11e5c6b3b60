"""OpenAI's legacy completions API as native GenerateRequests, and Generate's chunks as its completion objects.

A character is a token: usage counts characters, `logprobs: 0` returns each generated character's
log-probability. What cannot be honoured (several choices, echo, suffix, penalties, logit bias, top
alternatives) is refused by name rather than ignored.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from service.errors import InvalidArgument

# Completion fields passed to the native request under the same name (top_k: an extension, as vLLM has it).
NATIVE = ("max_tokens", "temperature", "top_p", "seed", "top_k")
# Fields accepted only at the value that asks for nothing rnnserve lacks.
NEUTRAL = {"n": (1,), "best_of": (1,), "echo": (False,), "suffix": ("",), "presence_penalty": (0,),
           "frequency_penalty": (0,), "logit_bias": ({},)}
KNOWN = {"model", "prompt", "stop", "logprobs", "stream", "stream_options", "user", *NATIVE, *NEUTRAL}


@dataclass(frozen=True)
class Completion:
    """A completions request: the native request's JSON fields and how to answer."""

    native: dict
    model: str
    stream: bool
    include_usage: bool
    logprobs: bool
    id: str
    created: int


def completion_request(doc: dict) -> Completion:
    """Map the completions fields onto GenerateRequest's; the native validation checks the values."""
    if unknown := sorted(set(doc) - KNOWN):
        raise InvalidArgument(unknown[0] or '""', "not supported by rnnserve's completions endpoint (see docs/http.md)")
    for key, allowed in NEUTRAL.items():
        if doc.get(key) is not None and doc[key] not in allowed:
            raise InvalidArgument(key, f"only {allowed[0]!r} is supported, got {doc[key]!r}")
    model, prompt = doc.get("model"), doc.get("prompt")
    if not isinstance(model, str) or not model:
        raise InvalidArgument("model", "must name a served model (GET /v1/models)")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidArgument("prompt", "must be one string (a list of one string is accepted; token ids are not)")
    native = {"model": model, "prompt": prompt, **{k: doc[k] for k in NATIVE if doc.get(k) is not None}}
    stop = doc.get("stop")
    if stop is not None:
        native["stop"] = [stop] if isinstance(stop, str) else stop
    logprobs = doc.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or logprobs != 0):
        raise InvalidArgument("logprobs", "only 0 is supported (each chosen character's log-probability); "
                                          f"rnnserve does not compute top alternatives, got {logprobs!r}")
    native["logprobs"] = logprobs is not None
    stream = doc.get("stream") or False
    if not isinstance(stream, bool):
        raise InvalidArgument("stream", f"must be a boolean, got {stream!r}")
    options = doc.get("stream_options") or {}
    if not isinstance(options, dict) or not set(options) <= {"include_usage"}:
        raise InvalidArgument("stream_options", 'only {"include_usage": true|false} is supported')
    return Completion(native, model, stream, bool(options.get("include_usage")), logprobs is not None,
                      f"cmpl-{secrets.token_hex(12)}", int(time.time()))


def _logprobs(text: str, logprobs: list[float], offset: int) -> dict:
    return {"tokens": list(text), "token_logprobs": logprobs, "top_logprobs": None,
            "text_offset": list(range(offset, offset + len(text)))}


def usage(prompt_chars: int, generated_chars: int) -> dict:
    return {"prompt_tokens": prompt_chars, "completion_tokens": generated_chars,
            "total_tokens": prompt_chars + generated_chars}


def completion(c: Completion, text: str, logprobs: list[float] | None, finish_reason: str | None, offset: int = 0,
               counts: tuple[int, int] | None = None, choices: bool = True) -> dict:
    """A completion object (streamed: one per chunk, finish_reason on the last; counts: the usage)."""
    doc: dict = {"id": c.id, "object": "text_completion", "created": c.created, "model": c.model, "choices": []}
    if choices:
        doc["choices"] = [{"text": text, "index": 0, "finish_reason": finish_reason,
                           "logprobs": _logprobs(text, logprobs or [], offset) if c.logprobs else None}]
    if counts is not None:
        doc["usage"] = usage(*counts)
    return doc
