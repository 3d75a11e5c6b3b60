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
           uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pick one id per row of logits (B, V).

    temperature (B,) float, 0 means greedy; top_k (B,) int, 0 means no limit; top_p (B,) float
    in (0, 1], nucleus sampling (Holtzman et al. 2019); uniform (B,) draws in [0, 1) from each
    row's own RNG. Returns the ids (B,) and their log-probabilities under the model (temperature 1).
    """
    B, V = logits.shape
    logits = logits.astype(np.float64, copy=False)
    greedy = temperature <= 0
    scaled = logits / np.where(greedy, 1.0, temperature)[:, None]
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))  # (B, V), unnormalised
    rows = np.arange(B)
    if np.any((top_k > 0) & (top_k < V)) or np.any(top_p < 1.0):
        order = np.argsort(-probs, axis=1, kind="stable")  # (B, V) most likely first
        sorted_p = np.take_along_axis(probs, order, axis=1)
        sorted_p /= sorted_p.sum(axis=1, keepdims=True)
        mass_before = np.cumsum(sorted_p, axis=1) - sorted_p
        keep = np.arange(V)[None, :] < np.where(top_k > 0, top_k, V)[:, None]
        keep &= mass_before < top_p[:, None]  # the smallest prefix holding top_p of the mass
        sorted_p = np.where(keep, sorted_p, 0.0)
        cdf = np.cumsum(sorted_p, axis=1)
        pick = np.minimum((cdf <= (uniform * cdf[:, -1])[:, None]).sum(axis=1), V - 1)
        ids = order[rows, pick]
    else:
        cdf = np.cumsum(probs, axis=1)
        ids = np.minimum((cdf <= (uniform * cdf[:, -1])[:, None]).sum(axis=1), V - 1)
    ids = np.where(greedy, logits.argmax(axis=1), ids)
    return ids.astype(np.int64), log_softmax(logits)[rows, ids]
