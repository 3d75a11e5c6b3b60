"""Next-character sampling for a whole batch at once, with per-row settings and per-row randomness.

Each row's choice depends only on its own logits, settings and uniform draw, so a seeded
stream picks the same characters alone or batched with others. Shared with training's
sample CLI so that torch and the server sample identically.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def sample(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray,
           uniform: np.ndarray, banned: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pick one id per row of logits (B, V).

    temperature (B,) float, 0 means greedy; top_k (B,) int, 0 means no limit; top_p (B,) float
    in (0, 1], nucleus sampling (Holtzman et al. 2019); uniform (B,) draws in [0, 1) from each
    row's own RNG. `banned` is an id never to pick: the unknown-character id, which decodes to no
    character. Returns the ids (B,) and their log-probabilities under the model (temperature 1).
    """
    B, V = logits.shape
    logits = logits.astype(np.float64)
    if banned is not None:
        logits[:, banned] = -np.inf
    greedy = temperature <= 0
    scaled = logits / np.where(greedy, 1.0, temperature)[:, None]
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))  # (B, V), unnormalised
    rows = np.arange(B)
    # Each row takes the truncated path only if it asks for truncation, so its pick never
    # depends on what the other rows of the batch ask for.
    truncated = ((top_k > 0) & (top_k < V)) | (top_p < 1.0)
    cdf = np.cumsum(probs, axis=1)
    ids = np.minimum((cdf <= (uniform * cdf[:, -1])[:, None]).sum(axis=1), V - 1)
    if truncated.any():
        t = np.flatnonzero(truncated)
        order = np.argsort(-probs[t], axis=1, kind="stable")  # (b, V) most likely first
        sorted_p = np.take_along_axis(probs[t], order, axis=1)
        sorted_p /= sorted_p.sum(axis=1, keepdims=True)
        mass_before = np.cumsum(sorted_p, axis=1) - sorted_p
        keep = np.arange(V)[None, :] < np.where(top_k[t] > 0, top_k[t], V)[:, None]
        keep &= mass_before < top_p[t][:, None]  # the smallest prefix holding top_p of the mass
        sorted_p = np.where(keep, sorted_p, 0.0)
        tcdf = np.cumsum(sorted_p, axis=1)
        pick = np.minimum((tcdf <= (uniform[t] * tcdf[:, -1])[:, None]).sum(axis=1), V - 1)
        ids[t] = order[np.arange(len(t)), pick]
    ids = np.where(greedy, logits.argmax(axis=1), ids)
    return ids.astype(np.int64), log_softmax(logits)[rows, ids]
