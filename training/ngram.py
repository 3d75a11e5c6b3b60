"""Interpolated modified Kneser-Ney character n-grams (Chen & Goodman 1998), numpy only.

The baseline every char LM is measured against: Karpathy, Johnson & Fei-Fei (2015) compare their
LSTMs with n-gram models, and a recurrent network that does not beat counting has learned nothing
counting could not. The estimate, for a context h of n-1 characters and its shorter suffix h':

    p_n(w | h) = max(a(hw) - D(a(hw)), 0) / A(h) + gamma(h) p_{n-1}(w | h'),
    gamma(h)   = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / A(h),     A(h) = sum_w a(hw),

with a = the count at the highest order and the continuation count N1+(.hw) (how many distinct
characters precede hw) below it; N_r(h.) = how many w have a(hw) = r. Each order has its own three
discounts, estimated from its counts of counts n_1..n_4 (Chen & Goodman eq. 26). The recursion ends
in the uniform distribution over the vocabulary. A context never seen at some order passes the
lower order's distribution through unchanged. Every p_n(. | h) sums to 1 over the vocabulary.

Storage is a trie of sorted arrays: the k-gram ids of order k are the ranks of the keys
(id of its (k-1)-character prefix) * V + last character, so a lookup is one searchsorted per order
and works for any vocabulary size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_ORDER = 9


def discounts(n: np.ndarray) -> tuple[float, float, float]:
    """D1, D2, D3+ from the counts of counts n = (n_1, n_2, n_3, n_4) (Chen & Goodman 1998, eq. 26).

    Y = n_1 / (n_1 + 2 n_2), D_r = r - (r + 1) Y n_{r+1} / n_r. On a corpus too small for the estimate
    (a zero count of counts, or an estimate outside (0, r]) that discount falls back to Y, plain
    Kneser-Ney's single discount, or 1/2 when Y itself is undefined: every discount stays positive,
    so every context keeps mass for characters it was never followed by.
    """
    n1, n2 = float(n[0]), float(n[1])
    Y = n1 / (n1 + 2 * n2) if n1 > 0 else 0.5
    out = []
    for r in (1, 2, 3):
        nr, nr1 = float(n[r - 1]), float(n[r])
        est = r - (r + 1) * Y * nr1 / nr if nr > 0 else Y
        out.append(est if 0 < est <= r else Y)
    return out[0], out[1], out[2]


@dataclass
class _Order:
    """The k-grams of one order k seen in training."""

    keys: np.ndarray  # (M_k,) sorted: prefix * V + last character
    prefix: np.ndarray  # (M_k,) id of the first k-1 characters among the (k-1)-grams (0, the empty gram, for k = 1)
    counts: np.ndarray  # (M_k,) how often each k-gram occurs
    continuation: np.ndarray  # (M_k,) how many distinct (k+1)-grams end with it, N1+(.g); zeros at the top order


class NGramCounts:
    """Every k-gram count and continuation count of a training text, k = 1..max_order.

    Built once (a few np.unique passes) and shared by the models of every order up to max_order.
    """

    def __init__(self, ids: np.ndarray, vocab_size: int, max_order: int = MAX_ORDER) -> None:
        if not 1 <= max_order <= MAX_ORDER:
            raise ValueError(f"order must be from 1 to {MAX_ORDER}, got {max_order}")
        x = np.asarray(ids, dtype=np.int64)
        if x.size and (x.min() < 0 or x.max() >= vocab_size):
            raise ValueError(f"ids must lie in [0, {vocab_size})")
        if len(x) < max_order:
            raise ValueError(f"a text of {len(x)} characters is shorter than one {max_order}-gram")
        self.V, self.max_order = vocab_size, max_order
        self.orders: list[_Order] = []
        ids_prev = np.zeros(len(x) + 1, dtype=np.int64)  # the empty gram starts at every position
        for k in range(1, max_order + 1):
            n_pos = len(x) - k + 1  # k-grams x[s : s + k], s < n_pos
            key = ids_prev[:n_pos] * vocab_size + x[k - 1 :]
            keys, first, ids_k = np.unique(key, return_index=True, return_inverse=True)
            counts = np.bincount(ids_k, minlength=len(keys))
            if k > 1:  # each k-gram continues its suffix x[s+1 : s+k], a (k-1)-gram: count distinct left extensions
                suffix = ids_prev[first + 1]
                self.orders[-1].continuation = np.bincount(suffix, minlength=len(self.orders[-1].keys))
            self.orders.append(_Order(keys, keys // vocab_size, counts, np.zeros(len(keys), np.int64)))
            ids_prev = ids_k

    def gram_ids(self, x: np.ndarray, order: int) -> list[np.ndarray]:
        """ids[k][r, s] = id of the k-gram x[r, s : s + k] (-1 if never seen), for k = 0..min(order, T); x is (R, T)."""
        R, T = x.shape
        out = [np.zeros((R, T + 1), np.int64)]
        for k in range(1, min(order, T) + 1):
            prev = out[-1][:, : T - k + 1]
            key = prev * self.V + x[:, k - 1 :]
            keys = self.orders[k - 1].keys
            pos = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
            out.append(np.where((prev >= 0) & (keys[pos] == key), pos, -1))
        return out


class KneserNey:
    """An interpolated modified Kneser-Ney model of one order n over NGramCounts."""

    def __init__(self, counts: NGramCounts, order: int) -> None:
        if not 1 <= order <= counts.max_order:
            raise ValueError(f"order must be from 1 to {counts.max_order}, got {order}")
        self.counts, self.order, self.V = counts, order, counts.V
        self.levels = []  # per k = 1..order: (a, D, A, mass) with mass(h) = D1 N1(h.) + D2 N2(h.) + D3 N3+(h.)
        for k in range(1, order + 1):
            o = counts.orders[k - 1]
            a = o.counts if k == order else o.continuation
            D = discounts(np.array([(a == r).sum() for r in (1, 2, 3, 4)]))
            n_ctx = 1 if k == 1 else len(counts.orders[k - 2].keys)
            prefix = o.prefix
            A = np.bincount(prefix, weights=a, minlength=n_ctx)
            mass = sum(d * np.bincount(prefix[sel], minlength=n_ctx)
                       for d, sel in zip(D, (a == 1, a == 2, a >= 3), strict=True))
            self.levels.append((a, np.array([0.0, *D]), A, mass))

    def probs(self, x: np.ndarray) -> np.ndarray:
        """p(x[r, t] | x[r, :t]) for every t, shape (R, T), each context cut to its last order - 1 characters."""
        x = np.atleast_2d(np.asarray(x, dtype=np.int64))
        R, T = x.shape
        ids = self.counts.gram_ids(x, self.order)
        p = np.full((R, T), 1.0 / self.V)
        t = np.arange(T)  # targets
        for k, (a, D, A, mass) in enumerate(self.levels[:T], start=1):  # a k-gram needs k characters
            s = t - k + 1  # where the k-gram ending at t starts
            ok = s >= 0
            s = np.maximum(s, 0)
            h, g = ids[k - 1][:, s], ids[k][:, s]  # (R, T) context and k-gram ids
            A_h = np.where(ok & (h >= 0), A[np.maximum(h, 0)], 0.0)
            a_g = np.where(g >= 0, a[np.maximum(g, 0)], 0)
            disc = D[np.minimum(a_g, 3)]
            mass_h = np.where(h >= 0, mass[np.maximum(h, 0)], 0.0)
            seen = A_h > 0
            p = np.where(seen, (a_g - disc + mass_h * p) / np.where(seen, A_h, 1.0), p)
        return p

    def distribution(self, context: np.ndarray) -> np.ndarray:
        """p(w | context) for every w in the vocabulary, shape (V,)."""
        context = np.asarray(context, dtype=np.int64)[max(0, len(context) - self.order + 1) :]
        rows = np.concatenate([np.tile(context, (self.V, 1)), np.arange(self.V)[:, None]], axis=1)  # (V, len + 1)
        return self.probs(rows)[:, -1]

    def cross_entropy(self, ids: np.ndarray) -> float:
        """Mean -ln p over ids[1:], each character predicted from those before it: nats/char."""
        return float(-np.log(self.probs(np.asarray(ids)[None, :])[0, 1:]).mean())


def evaluate_orders(train: np.ndarray, val: np.ndarray, vocab_size: int, orders: list[int]) -> dict[int, float]:
    """Validation nats/char of the Kneser-Ney model of each order, all from one set of counts."""
    counts = NGramCounts(train, vocab_size, max(orders))
    return {n: KneserNey(counts, n).cross_entropy(val) for n in orders}


def bits(nats: float) -> float:
    return nats / math.log(2)
