"""min-char-rnn in NumPy: the lecture's vanilla character RNN, kept as a reference for the torch model.

A faithful, readable port of Karpathy's min-char-rnn (https://gist.github.com/karpathy/d4dee566867f8291f086):
one-hot inputs, one tanh layer, a softmax over the next character, backprop through time over a
window of seq_length characters, and Adagrad.

For a window of T characters with one-hot inputs x_t (V, 1) and the carried state h_{-1} = hprev:

    h_t = tanh(Wxh x_t + Whh h_{t-1} + bh)        # (H, 1)
    y_t = Why h_t + by                            # (V, 1) unnormalised log-probabilities
    p_t = softmax(y_t)                            # (V, 1)
    L   = sum_t -log p_t[target_t]                # summed over the window, not averaged

Backward through time, from t = T-1 down to 0, starting with dh_next = 0:

    dy_t    = p_t - onehot(target_t)              # softmax + cross-entropy
    dh_t    = Why^T dy_t + dh_next                # from this step's output and from the future
    draw_t  = (1 - h_t^2) * dh_t                  # tanh' = 1 - tanh^2
    dWxh += draw_t x_t^T,  dWhh += draw_t h_{t-1}^T,  dbh += draw_t,  dh_next = Whh^T draw_t
    dWhy += dy_t h_t^T,    dby += dy_t

Differences from the gist, none of which change the math: the weights live in a dataclass instead
of globals; the dtype is chosen (float64 for gradient checks); softmax subtracts the max before exp
(same value, no overflow); the gist's clip of every gradient to [-5, 5] is its own step (clip_), so
a gradient check sees the raw gradients; the vocabulary is sorted (the gist's set order varies
between runs); sampling takes an explicit numpy Generator.

torch's nn.RNN(nonlinearity="tanh") computes the same h_t with W_ih = Wxh, W_hh = Whh and
b_ih + b_hh = bh, so CharLM(cell="rnn") with an identity embedding (n_embd = V) is this model;
tests/test_minchar.py checks forward pass and gradients against it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class Params:
    """The five parameters of min-char-rnn; the same shape also holds their gradients and Adagrad memory."""

    Wxh: np.ndarray  # (H, V) input to hidden
    Whh: np.ndarray  # (H, H) hidden to hidden
    Why: np.ndarray  # (V, H) hidden to output
    bh: np.ndarray  # (H, 1) hidden bias
    by: np.ndarray  # (V, 1) output bias

    @classmethod
    def init(cls, vocab_size: int, hidden_size: int, rng: np.random.Generator, dtype: type = np.float64) -> Params:
        """The gist's init: small Gaussian weights (std 0.01) and zero biases."""
        V, H = vocab_size, hidden_size

        def w(*shape: int) -> np.ndarray:
            return (rng.standard_normal(shape) * 0.01).astype(dtype)

        return cls(w(H, V), w(H, H), w(V, H), np.zeros((H, 1), dtype), np.zeros((V, 1), dtype))

    def arrays(self) -> list[np.ndarray]:
        return [getattr(self, f.name) for f in fields(self)]

    def zeros_like(self) -> Params:
        return Params(*(np.zeros_like(a) for a in self.arrays()))


def softmax(y: np.ndarray) -> np.ndarray:
    e = np.exp(y - y.max())  # shifting by the max leaves softmax unchanged and keeps exp finite
    return e / e.sum()


def forward(p: Params, inputs: list[int], hprev: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the window; returns hs (T+1, H, 1) with hs[0] = hprev, logits ys (T, V, 1) and probabilities ps (T, V, 1)."""
    T, H, V = len(inputs), p.Whh.shape[0], p.Why.shape[0]
    hs = np.zeros((T + 1, H, 1), p.Whh.dtype)
    ys = np.zeros((T, V, 1), p.Whh.dtype)
    hs[0] = hprev
    for t, ix in enumerate(inputs):
        # Wxh @ onehot(ix) is column ix of Wxh: the gist's np.dot(Wxh, xs[t]) without building xs[t]
        hs[t + 1] = np.tanh(p.Wxh[:, ix : ix + 1] + p.Whh @ hs[t] + p.bh)  # (H, 1)
        ys[t] = p.Why @ hs[t + 1] + p.by  # (V, 1)
    ps = np.stack([softmax(y) for y in ys])  # (T, V, 1)
    return hs, ys, ps


def loss_fun(p: Params, inputs: list[int], targets: list[int], hprev: np.ndarray) -> tuple[float, Params, np.ndarray]:
    """The gist's lossFun without the clip: (summed cross-entropy, raw gradients, last hidden state (H, 1))."""
    hs, _, ps = forward(p, inputs, hprev)
    loss = -sum(float(np.log(ps[t, ix, 0])) for t, ix in enumerate(targets))
    g = p.zeros_like()
    dhnext = np.zeros_like(p.bh)  # (H, 1)
    for t in reversed(range(len(inputs))):
        dy = ps[t].copy()  # (V, 1)
        dy[targets[t]] -= 1  # d(-log softmax(y)[target]) / dy = p - onehot(target)
        g.Why += dy @ hs[t + 1].T
        g.by += dy
        dh = p.Why.T @ dy + dhnext  # (H, 1): through the output now and through h_{t+1} later
        dhraw = (1 - hs[t + 1] ** 2) * dh  # back through tanh
        g.bh += dhraw
        g.Wxh[:, inputs[t] : inputs[t] + 1] += dhraw  # dhraw @ onehot^T only touches column inputs[t]
        g.Whh += dhraw @ hs[t].T
        dhnext = p.Whh.T @ dhraw
    return loss, g, hs[-1]


def clip_(g: Params, limit: float = 5.0) -> Params:
    """Clip every gradient entry to [-limit, limit] in place, as the gist does against exploding gradients."""
    for a in g.arrays():
        np.clip(a, -limit, limit, out=a)
    return g


def adagrad_(p: Params, g: Params, mem: Params, lr: float, eps: float = 1e-8) -> None:
    """The gist's Adagrad step in place: mem += g^2; p -= lr g / sqrt(mem + eps).

    Note eps sits inside the sqrt here; torch.optim.Adagrad divides by sqrt(mem) + eps instead.
    """
    for a, da, m in zip(p.arrays(), g.arrays(), mem.arrays(), strict=True):
        m += da * da
        a -= lr * da / np.sqrt(m + eps)


def sample(p: Params, h: np.ndarray, seed_ix: int, n: int, rng: np.random.Generator) -> list[int]:
    """Sample n indices starting after seed_ix from state h (H, 1), feeding each sample back in."""
    ix, out = seed_ix, []
    for _ in range(n):
        h = np.tanh(p.Wxh[:, ix : ix + 1] + p.Whh @ h + p.bh)  # (H, 1)
        probs = softmax(p.Why @ h + p.by).ravel()  # (V,)
        ix = int(rng.choice(len(probs), p=probs.astype(np.float64)))
        out.append(ix)
    return out


def train(data: str, steps: int, hidden_size: int = 100, seq_length: int = 25, lr: float = 1e-1, seed: int = 0,
          dtype: type = np.float64) -> tuple[Params, list[str], list[float], list[float]]:
    """The gist's main loop for `steps` updates; returns (params, chars, losses, smooth_losses), one per update."""
    chars = sorted(set(data))
    char_to_ix = {ch: i for i, ch in enumerate(chars)}
    p = Params.init(len(chars), hidden_size, np.random.default_rng(seed), dtype)
    mem = p.zeros_like()
    smooth_loss = -np.log(1.0 / len(chars)) * seq_length  # the loss of a uniform guess, summed over a window
    losses, smooth, pos = [], [], 0
    hprev = np.zeros((hidden_size, 1), dtype)
    for _ in range(steps):
        if pos + seq_length + 1 >= len(data):  # end of data: start again from the top with a fresh state
            hprev, pos = np.zeros((hidden_size, 1), dtype), 0
        inputs = [char_to_ix[ch] for ch in data[pos : pos + seq_length]]
        targets = [char_to_ix[ch] for ch in data[pos + 1 : pos + seq_length + 1]]
        loss, g, hprev = loss_fun(p, inputs, targets, hprev)
        smooth_loss = smooth_loss * 0.999 + loss * 0.001
        losses.append(loss)
        smooth.append(float(smooth_loss))
        adagrad_(p, clip_(g), mem, lr)
        pos += seq_length
    return p, chars, losses, smooth
