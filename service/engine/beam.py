"""Beam search of one request, one decoding step at a time: its beams are K rows of the engine's batch.

The search is training's reference (training/search.py, beam_search) taken one sentence and one step at a
time, so that the served hypotheses are the reference's: the candidates are the 2K best extensions of the
K live hypotheses, ties to the lower (beam, token) index; one that ends in EOS is set aside with score
log P / ((5 + |Y|) / 6) ** alpha (GNMT's length penalty, Wu et al. 2016, |Y| counting EOS); the others
become the K live hypotheses. The search ends with K finished hypotheses or at the length limit, when the
live ones are finished as they stand; the best score wins.

Each step stores only the K new tokens and where each came from (back-pointers), so a step costs the same
at every position; a hypothesis is read back once, when it has won (or when its text may be sent).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax, as the reference computes it (in float64)."""
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def top(cand: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of each row, best first, ties to the lower index (as argmax)."""
    k = min(k, cand.shape[1])
    part = np.argpartition(-cand, k - 1, axis=1)[:, :k]  # (B, k) unordered
    vals = np.take_along_axis(cand, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


@dataclass(frozen=True)
class Ended:
    """A finished hypothesis: after step `t`, live hypothesis `k` of step t - 1 followed by EOS (eos), or
    live hypothesis `k` of step t itself (the length limit)."""

    score: float
    t: int
    k: int
    eos: bool


class Beam:
    def __init__(self, beam_size: int, alpha: float, limit: int, eos: int, width: int | None) -> None:
        """`limit`: most steps (tokens, EOS included); `width`: source positions, to keep each step's attention."""
        K = beam_size
        self.K, self.alpha, self.limit, self.eos = K, alpha, limit, eos
        self.scores = np.full(K, -np.inf)
        self.scores[0] = 0.0  # the first step expands one hypothesis, not K copies of it
        self.tokens = np.zeros((limit, K), np.int64)  # token of live hypothesis k after step t
        self.parents = np.zeros((limit, K), np.int64)  # the live hypothesis of step t - 1 it extends (its row at t)
        self.attention = None if width is None else np.zeros((limit, K, width), np.float32)  # of row k at step t
        self.ended: list[Ended] = []

    def _penalty(self, n: int) -> float:
        return ((5 + n) / 6) ** self.alpha

    def advance(self, t: int, cand: np.ndarray, best: np.ndarray,
                attention: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """Step t, given its candidates (see candidates()) -> the row each new hypothesis continues from (K,),
        its token (K,), and whether the search is over."""
        K = self.K
        V = len(cand) // K
        origin, token = np.arange(K), np.full(K, self.eos, np.int64)
        scores = np.full(K, -np.inf)
        k = 0
        for j in best.tolist():
            s = cand[j]
            if not np.isfinite(s):
                break
            beam, tok = divmod(j, V)
            if tok == self.eos:
                self.ended.append(Ended(s / self._penalty(t + 1), t, beam, True))
            else:
                scores[k], origin[k], token[k] = s, beam, tok
                k += 1
            if k == K or len(self.ended) >= K:
                break
        self.tokens[t], self.parents[t] = token, origin
        if self.attention is not None and attention is not None:
            self.attention[t] = attention
        if len(self.ended) < K and t + 1 >= self.limit:  # out of length: the live hypotheses end here
            self.ended += [Ended(scores[i] / self._penalty(t + 1), t, i, False) for i in range(k)]
        self.scores = scores
        return origin, token, len(self.ended) >= K or t + 1 >= self.limit

    def path(self, t: int, k: int) -> list[int]:
        """Tokens of live hypothesis k after step t (t = -1: none yet)."""
        return self.paths(t, np.array([k]))[0].tolist()

    def paths(self, t: int, ks: np.ndarray) -> np.ndarray:
        """(len(ks), t + 1) tokens of the live hypotheses ks after step t, read back along their parents."""
        out = np.empty((len(ks), t + 1), np.int64)
        for i in range(t, -1, -1):
            out[:, i] = self.tokens[i, ks]
            ks = self.parents[i, ks]
        return out

    def best(self) -> Ended:
        """The winner: the first of the best-scoring finished hypotheses, as the reference's max() picks it."""
        return max(self.ended, key=lambda e: e.score)

    def tokens_of(self, e: Ended) -> list[int]:
        """The hypothesis' tokens, without EOS."""
        return self.path(e.t - 1, e.k) if e.eos else self.path(e.t, e.k)

    def attention_of(self, e: Ended) -> np.ndarray:
        """(tokens, S): the attention of the step that produced each token, EOS included when it ended with one."""
        assert self.attention is not None
        rows, t, k = [], e.t, e.k
        if e.eos:
            rows.append(self.attention[t, k])
            t -= 1
        while t >= 0:
            parent = int(self.parents[t, k])
            rows.append(self.attention[t, parent])
            k, t = parent, t - 1
        return np.stack(rows[::-1])

    def agreed(self, t: int) -> list[int]:
        """The longest token prefix shared by every hypothesis that can still win (finished or live after step t):
        the winner starts with it, so its text may be sent before the search ends."""
        live = self.paths(t, np.flatnonzero(np.isfinite(self.scores)))
        n = min([live.shape[1], *(e.t + (not e.eos) for e in self.ended)])
        rows = [*live[:, :n], *(np.asarray(self.tokens_of(e)[:n]) for e in self.ended)]
        if not rows:
            return []
        same = (np.stack(rows) == rows[0]).all(axis=0)  # (n,)
        return rows[0][: int(np.argmin(same)) if not same.all() else n].tolist()


def candidates(beams: list[Beam], logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The next step's candidates of several searches of one beam size K, whose K rows each are consecutive in
    `logits` (n * K, V): their scores (n, K * V) and the 2K best of each, best first (as the reference batches them)."""
    n, K = len(beams), beams[0].K
    V = logits.shape[1]
    scores = np.stack([b.scores for b in beams])  # (n, K)
    cand = (scores[:, :, None] + log_softmax(logits.astype(np.float64)).reshape(n, K, V)).reshape(n, K * V)
    return cand, top(cand, 2 * K)
