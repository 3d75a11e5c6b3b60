"""How far back a char LM's loss reaches: gradient norms through time, measured on the model's own weights.

The loss L_t on the character after step t reaches the state s_{t-k} through k Jacobians. For the
vanilla RNN, h_t = tanh(W_ih x_t + W_hh h_{t-1} + b), backprop through one step is

    ∂L/∂h_{t-1} = W_hh^T diag(1 - h_t^2) ∂L/∂h_t,

so ‖∂L_t/∂h_{t-k}‖ <= ‖∂L_t/∂h_t‖ prod_j max_i(1 - h_{j,i}^2) σ_max(W_hh). Bengio, Simard & Frasconi (1994)
and Pascanu, Mikolov & Bengio (2013): with tanh' <= 1, σ_max(W_hh) < 1 is sufficient for the gradient to
vanish geometrically and σ_max > 1 is necessary (not sufficient) for it to explode. The LSTM's cell state
c_t = f_t * c_{t-1} + i_t * g_t puts diag(f_t) on that path with no squashing matrix in between
(Hochreiter & Schmidhuber 1997), so a unit whose forget gate stays near 1 passes its gradient back almost
unchanged; the GRU's h_t = z_t * h_{t-1} + (1 - z_t) * n_t does the same through its update gate.

The functions here measure this on any CharLM (rnn, lstm, gru, any depth) in float64, and on the NumPy
min-char-rnn reference (training/minchar.py) for the vanilla cell, so the two can be checked against each other.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from training import minchar
from training.model import CharLM

FLOOR = 1e-250  # float64 gradient norms below this are treated as underflow, not fitted


def state_gradient_norms(model: CharLM, ids: torch.Tensor, burn_in: int) -> np.ndarray:
    """‖∂L_t/∂s_{t-k}‖ for k = 0..K, one row per text window: (B, K + 1), float64.

    ids (B, burn_in + K + 2): the first burn_in characters only warm the state up (no graph kept), the
    next K + 1 are read keeping the graph, and the last one is the target of L_t, the cross-entropy at the
    final step t. s_j is everything the cell carries after reading character j (h of every layer; h and c
    for an LSTM), so for an LSTM the norm is sqrt(‖∂L/∂h‖^2 + ‖∂L/∂c‖^2). L_t is read from the carried
    state itself (the head on the top layer's h), so k = 0 is the gradient of the head alone.
    """
    K = ids.shape[1] - burn_in - 2
    if K < 0 or burn_in < 0:
        raise ValueError(f"ids of length {ids.shape[1]} cannot hold burn_in {burn_in}, a step and a target")
    model = copy.deepcopy(model).double().eval()  # float64 so the curve reaches far before underflow; no dropout
    B = ids.shape[0]
    state = [s.double() for s in model.init_state(B)]
    if burn_in:
        with torch.no_grad():
            _, *state = model(ids[:, :burn_in], *state)
    state = [s.detach() for s in state]
    kept = []
    for t in range(burn_in, burn_in + K + 1):
        _, *state = model(ids[:, t : t + 1], *state)
        for s in state:
            s.retain_grad()
        kept.append(state)
    logits = model.head(state[0][-1])  # (B, V): the top layer's h, which is the model's output
    # Each row's loss depends on its own window only, so one backward of the sum gives every row's gradients.
    F.cross_entropy(logits, ids[:, -1], reduction="sum").backward()
    norms = []
    for st in reversed(kept):  # k = 0, 1, ..., K
        # A state the loss never reads (the LSTM's last c) has no gradient: it counts as zero.
        grads = [s.grad.numpy().transpose(1, 0, 2).reshape(B, -1) for s in st if s.grad is not None]  # (B, L*H) each
        norms.append(row_norms(np.concatenate(grads, axis=1)))
    return np.stack(norms, axis=1)


def row_norms(a: np.ndarray) -> np.ndarray:
    """The Euclidean norm of each row of a (B, N), scaled by the row's largest entry first.

    Squaring entries below 1e-154 underflows float64 to zero, so a plain sqrt(sum(x^2)) (numpy's and
    torch's norms both) would cut a curve off long before its values stop being representable.
    """
    top = np.abs(a).max(axis=1)
    scale = np.where(top > 0, top, 1.0)
    return top * np.sqrt(((a / scale[:, None]) ** 2).sum(axis=1))


def hidden_states(model: CharLM, ids: torch.Tensor) -> np.ndarray:
    """h of every layer after every character, from the zero state: (T, L, B, H) float64."""
    model = copy.deepcopy(model).double().eval()
    state = [s.double() for s in model.init_state(ids.shape[0])]
    out = []
    with torch.no_grad():
        for t in range(ids.shape[1]):
            _, *state = model(ids[:, t : t + 1], *state)
            out.append(state[0].numpy())
    return np.stack(out)


def per_step_factor(curve: np.ndarray, first: int = 5) -> float:
    """exp(slope) of the least-squares line through log curve[k] for k >= first, above the underflow floor.

    For a geometric curve c s^k this is s exactly; for a curve that is not geometric it is the mean
    per-step factor over the fitted range. NaN when fewer than two points are left to fit.
    """
    k = np.arange(len(curve))
    keep = (k >= first) & (curve > FLOOR)
    if keep.sum() < 2:
        return math.nan
    slope = np.polyfit(k[keep], np.log(curve[keep]), 1)[0]
    return float(np.exp(slope))


def reach(curve: np.ndarray, drop: float = 1e-3) -> int | None:
    """The first distance k at which the curve is below drop * curve[0]; None if it never gets there."""
    below = np.flatnonzero(curve < drop * curve[0])
    return int(below[0]) if below.size else None


def rnn_jacobian_stats(model: CharLM, ids: torch.Tensor, burn_in: int) -> list[dict[str, float]]:
    """Per layer of a vanilla RNN: what the one-step Jacobian diag(1 - h^2) W_hh^T is made of.

    sigma_max and spectral_radius of W_hh; mean_tanh_prime and rms_tanh_prime, the mean and root mean
    square of d = 1 - h^2 over units, steps and windows after burn_in; mean_bound = mean_tanh_prime *
    sigma_max, the usual back-of-envelope rate; estimate = spectral_radius * rms_tanh_prime, the rate of a
    gradient spread evenly over the units (exact for W_hh = s Q: ‖Q^T d * g‖ = ‖d * g‖, the RMS of d for
    an even g; and the rate of long products of W_hh is its spectral radius, not its largest singular
    value); max_bound, the geometric mean over steps and windows of max_i(d_i) * sigma_max, which bounds
    the measured per-step factor from above.
    """
    if model.cfg.cell != "rnn":
        raise ValueError(f"the tanh Jacobian bound is for cell 'rnn', not {model.cfg.cell!r}")
    d = 1.0 - hidden_states(model, ids)[burn_in:] ** 2  # (T, L, B, H): tanh' at every step
    stats = []
    for layer in range(model.cfg.n_layer):
        W = getattr(model.rnn, f"weight_hh_l{layer}").detach().double().numpy()
        sigma = float(np.linalg.svd(W, compute_uv=False)[0])
        rho = float(np.abs(np.linalg.eigvals(W)).max())
        dl = d[:, layer]
        mean, rms = float(dl.mean()), float(np.sqrt((dl**2).mean()))
        stats.append({"sigma_max": sigma, "spectral_radius": rho, "mean_tanh_prime": mean, "rms_tanh_prime": rms,
                      "mean_bound": mean * sigma, "estimate": rho * rms,
                      "max_bound": float(np.exp(np.log(dl.max(axis=-1)).mean())) * sigma})
    return stats


def set_recurrent_scale_(model: CharLM, sigma: float, orthogonal: bool, seed: int = 0) -> None:
    """Give every layer's W_hh the largest singular value sigma, in place.

    orthogonal=False rescales the initialised matrix (its other singular values spread below sigma and
    its eigenvalues lie inside a disc of radius about sigma / 2 for torch's uniform init);
    orthogonal=True sets W_hh = sigma Q with Q a random orthogonal matrix, so every singular value and
    every eigenvalue modulus is sigma and the linearised network multiplies gradients by exactly sigma per step.
    """
    if model.cfg.cell != "rnn":
        raise ValueError(f"recurrent scaling is for cell 'rnn', not {model.cfg.cell!r}")
    rng = np.random.default_rng(seed)
    for layer in range(model.cfg.n_layer):
        W = getattr(model.rnn, f"weight_hh_l{layer}")
        with torch.no_grad():
            if orthogonal:
                Q, R = np.linalg.qr(rng.standard_normal(tuple(W.shape)))
                Q *= np.sign(np.diag(R))  # sign fix: Haar-distributed Q
                W.copy_(torch.from_numpy(sigma * Q))
            else:
                W.mul_(sigma / torch.linalg.matrix_norm(W, ord=2))


def to_minchar(model: CharLM) -> minchar.Params:
    """The same one-layer vanilla RNN as min-char-rnn's five arrays (float64), exactly.

    The embedding and W_ih are two linear maps of a one-hot input, so Wxh = W_ih E^T; torch's two
    hidden biases enter as one sum, bh = b_ih + b_hh.
    """
    if model.cfg.cell != "rnn" or model.cfg.n_layer != 1:
        raise ValueError("min-char-rnn is a one-layer vanilla RNN: model.cell must be 'rnn' and model.n_layer 1")

    def a(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().numpy()

    rnn = model.rnn
    return minchar.Params(Wxh=a(rnn.weight_ih_l0) @ a(model.embed.weight).T, Whh=a(rnn.weight_hh_l0),
                          Why=a(model.head.weight), bh=(a(rnn.bias_ih_l0) + a(rnn.bias_hh_l0))[:, None],
                          by=a(model.head.bias)[:, None])


def minchar_state_gradient_norms(p: minchar.Params, ids: np.ndarray, burn_in: int) -> np.ndarray:
    """state_gradient_norms for min-char-rnn, by its own forward pass and hand-written backward: (B, K + 1)."""
    rows = []
    for row in ids:
        inputs, target = row[:-1].tolist(), int(row[-1])
        hs, _, ps = minchar.forward(p, inputs, np.zeros((p.Whh.shape[0], 1)))  # hs[j + 1]: h after input j
        dy = ps[-1].copy()
        dy[target] -= 1  # softmax + cross-entropy at the last step only
        dh = p.Why.T @ dy  # ∂L_t/∂h_t
        grads = [dh]
        for j in range(len(inputs) - 1, burn_in, -1):  # h after input j-1 from h after input j
            dh = p.Whh.T @ ((1 - hs[j + 1] ** 2) * dh)
            grads.append(dh)
        rows.append(row_norms(np.concatenate(grads, axis=1).T))  # (K + 1,)
    return np.stack(rows)


Predictor = Callable[[np.ndarray], np.ndarray]  # ids (N, k) read from the zero state -> last step's logits (N, V)


def truncated_context_losses(predict: Predictor, ids: np.ndarray, positions: np.ndarray, contexts: list[int],
                             chunk: int = 256) -> np.ndarray:
    """Cross-entropy (nats) of ids[p] given only the k characters before it, from the zero state: (len(contexts), N)."""
    out = np.empty((len(contexts), len(positions)))
    for c, k in enumerate(contexts):
        if k < 1 or (positions < k).any():
            raise ValueError(f"context {k} needs positions >= {k} and at least one character")
        for i in range(0, len(positions), chunk):
            p = positions[i : i + chunk]
            logits = predict(ids[p[:, None] + np.arange(-k, 0)[None, :]]).astype(np.float64)  # (n, V)
            top = logits.max(axis=1)
            logz = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
            out[c, i : i + chunk] = logz - logits[np.arange(len(p)), ids[p]]
    return out


def context_cost(losses: np.ndarray, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean loss increase of each truncated context over the full one, and its standard error (paired over positions)."""
    diff = losses - full[None, :]
    return diff.mean(axis=1), diff.std(axis=1, ddof=1) / np.sqrt(diff.shape[1])


def longest_used(contexts: list[int], mean: np.ndarray, se: np.ndarray, z: float = 3.0) -> int | None:
    """The longest context whose truncation still costs more than z standard errors: the model uses more than that.

    None when no tested truncation costs measurably more than the full context.
    """
    used = [k for k, m, s in zip(contexts, mean, se, strict=True) if m > z * s]
    return max(used) if used else None
