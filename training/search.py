"""Greedy and beam-search decoding over any encoder/decoder-step pair, in numpy alone (no torch).

The same search drives the torch model (training/translation_task.py, the reference) and the exported
ONNX graphs (training/ort_translator.py), so "ONNX Runtime translates as torch does" compares the two
networks token for token, and the service has a torch-free reference to compare its own decoder with.

Stopping rule: a hypothesis ends at EOS or after max_target_len(source tokens) tokens, EOS counted.
Beam search keeps `beam_size` live hypotheses per sentence as rows of one batch; a hypothesis that
emits EOS among the best candidates is set aside, and a sentence is done once it has beam_size finished
hypotheses or reaches its length limit. The winner maximises log P(Y|X) / lp(Y) with GNMT's length
penalty lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016, eq. 14; |Y| counts EOS); alpha = 0 is the plain
log-probability. With beam_size 1 the search picks exactly the greedy tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class DecoderStepper(Protocol):
    """One decoder step as a function of numpy arrays (what decoder.onnx computes): all the search needs once the
    encoder outputs are there."""

    def step(self, prev: np.ndarray, h: np.ndarray, memory: np.ndarray, keys: np.ndarray,
             mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """prev int64 (B,), h (L, B, H), mask bool (B, S) -> logits (B, V), new h, attention (B, S)."""
        ...


class Stepper(DecoderStepper, Protocol):
    """A translation model as two functions of numpy arrays (what encoder.onnx and decoder.onnx compute)."""

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """src int64 (B, S), lengths int64 (B,) -> memory (B, S, M), keys (B, S, H), h0 (L, B, H)."""
        ...


@dataclass(frozen=True)
class Specials:
    pad: int
    bos: int
    eos: int


@dataclass(frozen=True)
class LengthRule:
    """A translation of a source of n tokens has at most floor(a * n + b) tokens, EOS included."""

    a: float
    b: int

    def __call__(self, src_len: np.ndarray) -> np.ndarray:
        return np.floor(self.a * np.asarray(src_len) + self.b).astype(np.int64)


def pad_sources(seqs: Sequence[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, S_max) int64 ids padded at the end, and (B,) lengths; every source must have a token."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    if (lengths < 1).any():
        raise ValueError("every source sentence needs at least one token")
    src = np.full((len(seqs), int(lengths.max())), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        src[i, : len(s)] = s
    return src, lengths


def _encode(stepper: Stepper, seqs: Sequence[np.ndarray], pad: int) -> tuple[np.ndarray, ...]:
    """lengths (B,), memory, keys, h0 and the source mask (B, S) of a padded batch of sources."""
    src, lengths = pad_sources(seqs, pad)
    memory, keys, h = stepper.encode(src, lengths)
    mask = np.arange(src.shape[1])[None, :] < lengths[:, None]  # (B, S)
    return lengths, memory, keys, h, mask


def greedy(stepper: Stepper, seqs: Sequence[np.ndarray], sp: Specials, rule: LengthRule) -> list[list[int]]:
    """The most likely next token at every step, for a batch of sources; token lists exclude EOS."""
    lengths, memory, keys, h, mask = _encode(stepper, seqs, sp.pad)
    return greedy_from(stepper, memory, keys, h, mask, rule(lengths), sp)


def greedy_from(stepper: DecoderStepper, memory: np.ndarray, keys: np.ndarray, h: np.ndarray, mask: np.ndarray,
                limit: np.ndarray, sp: Specials) -> list[list[int]]:
    """Greedy decoding from encoder outputs already computed (a captioner's come from images); at most
    limit[b] tokens for row b, EOS included. The state h has the batch on axis 1."""
    B = memory.shape[0]
    out = np.zeros((B, int(limit.max())), dtype=np.int64)
    n = np.zeros(B, dtype=np.int64)  # tokens kept so far
    live = np.ones(B, dtype=bool)
    prev = np.full(B, sp.bos, dtype=np.int64)
    for t in range(int(limit.max())):
        logits, h, _ = stepper.step(prev, h, memory, keys, mask)
        tok = logits.argmax(axis=1)
        ended = live & (tok == sp.eos)
        keep = live & ~ended
        out[keep, t] = tok[keep]
        n[keep] += 1
        live = keep & (t + 1 < limit)
        if not live.any():
            break
        prev = np.where(live, tok, sp.eos)
    return [out[i, : n[i]].tolist() for i in range(B)]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _top(cand: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of each row, best first, ties to the lower index (as argmax)."""
    k = min(k, cand.shape[1])
    part = np.argpartition(-cand, k - 1, axis=1)[:, :k]  # (B, k) unordered
    vals = np.take_along_axis(cand, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def beam_search(stepper: Stepper, seqs: Sequence[np.ndarray], sp: Specials, rule: LengthRule, beam_size: int,
                alpha: float) -> list[list[int]]:
    """The best hypothesis of each source by length-normalised log-probability; token lists exclude EOS."""
    if beam_size < 1:
        raise ValueError("beam_size must be at least 1")
    lengths, memory, keys, h, mask = _encode(stepper, seqs, sp.pad)
    return beam_from(stepper, memory, keys, h, mask, rule(lengths), sp, beam_size, alpha)


def beam_from(stepper: DecoderStepper, memory: np.ndarray, keys: np.ndarray, h: np.ndarray, mask: np.ndarray,
              limit: np.ndarray, sp: Specials, beam_size: int, alpha: float) -> list[list[int]]:
    """Beam search from encoder outputs already computed, as greedy_from; token lists exclude EOS."""
    if beam_size < 1:
        raise ValueError("beam_size must be at least 1")
    K, B = beam_size, memory.shape[0]
    rows = np.repeat(np.arange(B), K)  # row b*K + k is beam k of sentence b; its memory is sentence b's
    memory, keys, mask, h = memory[rows], keys[rows], mask[rows], h[:, rows]
    scores = np.full((B, K), -np.inf, dtype=np.float64)
    scores[:, 0] = 0.0  # the first step expands one beam, not K copies of it
    hyps = np.zeros((B, K, 0), dtype=np.int64)
    prev = np.full(B * K, sp.bos, dtype=np.int64)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = np.zeros(B, dtype=bool)

    def lp(n: int) -> float:
        return ((5 + n) / 6) ** alpha

    for t in range(int(limit.max())):
        logits, h, _ = stepper.step(prev, h, memory, keys, mask)
        V = logits.shape[1]
        cand = (scores[:, :, None] + _log_softmax(logits.astype(np.float64)).reshape(B, K, V)).reshape(B, K * V)
        best = _top(cand, 2 * K)
        new_scores = np.full((B, K), -np.inf)
        origin = np.tile(np.arange(K), (B, 1))
        token = np.full((B, K), sp.eos, dtype=np.int64)
        for b in np.flatnonzero(~done):
            k = 0
            for j in best[b]:
                s = cand[b, j]
                if not np.isfinite(s):
                    break
                beam, tok = divmod(int(j), V)
                if tok == sp.eos:
                    finished[b].append((s / lp(t + 1), hyps[b, beam].tolist()))
                else:
                    new_scores[b, k], origin[b, k], token[b, k] = s, beam, tok
                    k += 1
                if k == K or len(finished[b]) >= K:
                    break
            if len(finished[b]) < K and t + 1 >= limit[b]:  # out of length: the live beams end here
                finished[b] += [(new_scores[b, i] / lp(t + 1), [*hyps[b, origin[b, i]].tolist(), int(token[b, i])])
                                for i in range(k)]
            done[b] = len(finished[b]) >= K or t + 1 >= limit[b]
        if done.all():
            break
        new_scores[done] = -np.inf
        hyps = np.concatenate([np.take_along_axis(hyps, origin[:, :, None], axis=1), token[:, :, None]], axis=2)
        scores = new_scores
        h = h[:, (np.arange(B)[:, None] * K + origin).reshape(-1)]
        prev = token.reshape(-1)
    return [max(f, key=lambda x: x[0])[1] if f else [] for f in finished]


def translate_all(stepper: Stepper, seqs: Sequence[np.ndarray], sp: Specials, rule: LengthRule, beam_size: int = 1,
                  alpha: float = 0.0, batch_size: int = 128) -> list[list[int]]:
    """Decode many sources in batches of similar length (less padding); results in the input order."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out: list[list[int]] = [[] for _ in seqs]
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        batch = [seqs[j] for j in idx]
        if beam_size == 1:
            got = greedy(stepper, batch, sp, rule)
        else:
            got = beam_search(stepper, batch, sp, rule, beam_size, alpha)
        for j, toks in zip(idx, got, strict=True):
            out[j] = toks
    return out
