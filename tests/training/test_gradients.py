"""Gradient-flow measurements (training/gradients.py, gradient_runs.py): exact on linear RNNs, independent
of how they are computed, equal to the NumPy min-char-rnn reference, and the clip and context bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.support.data import ROOT, SHAKESPEARE
from training import gradients as g
from training.gradient_runs import CLIPS, clip_, spikes, value_limit
from training.minchar import Params
from training.minchar import clip_ as minchar_clip_
from training.model import CharLM, CharLMConfig

V, H = 12, 16


def char_lm(cell: str, n_layer: int = 1, seed: int = 0, std: float | None = None) -> CharLM:
    torch.manual_seed(seed)
    model = CharLM(CharLMConfig(cell=cell, vocab_size=V, n_layer=n_layer, n_embd=8, hidden_size=H))
    if std is not None:  # weights large enough that tanh saturates on some units and not others
        with torch.no_grad():
            for p in model.rnn.parameters():
                p.normal_(0, std)
    return model


def text(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, V, (B, T)))


def linear_rnn(W: np.ndarray) -> CharLM:
    """A vanilla RNN that stays at h = 0: no input weights, no biases. tanh'(0) = 1, so backprop through a
    step is exactly W^T and the gradient k steps back is (W^T)^k ∂L_t/∂h_t."""
    model = char_lm("rnn")
    with torch.no_grad():
        model.rnn.weight_ih_l0.zero_()
        model.rnn.bias_ih_l0.zero_()
        model.rnn.bias_hh_l0.zero_()
        model.rnn.weight_hh_l0.copy_(torch.from_numpy(W))
    return model


@pytest.mark.parametrize("s", [0.2, 0.5, 1.0, 1.5])
def test_orthogonal_linear_rnn_scales_the_gradient_by_exactly_s_per_step(s):
    """Over 250 steps: 0.2^250 ~ 1e-175 is far below where squaring an entry underflows (1e-154)."""
    model = linear_rnn(np.eye(H))
    g.set_recurrent_scale_(model, s, orthogonal=True, seed=3)
    W = model.rnn.weight_hh_l0.detach().double().numpy()
    np.testing.assert_allclose(np.linalg.svd(W, compute_uv=False), s, rtol=1e-6)  # every singular value is s
    ids = text(3, 4 + 250 + 2)
    norms = g.state_gradient_norms(model, ids, burn_in=4)  # (3, 251)
    K = norms.shape[1] - 1
    # float32 weights are s Q to ~1e-7, which compounds to ~k 1e-7 after k steps
    np.testing.assert_allclose(norms / norms[:, :1], np.broadcast_to(s ** np.arange(K + 1), norms.shape), rtol=1e-4)
    assert g.per_step_factor(norms.mean(axis=0)) == pytest.approx(s, rel=1e-6)
    ref = g.minchar_state_gradient_norms(g.to_minchar(model), ids.numpy(), burn_in=4)
    np.testing.assert_allclose(ref, norms, rtol=1e-10)


def test_symmetric_linear_rnn_follows_its_eigenvalues():
    """W = Q diag(λ) Q^T: ‖(W^T)^k g‖^2 = Σ_i λ_i^(2k) (Q^T g)_i^2, a decay that is not one geometric rate;
    far back only the largest |λ| is left."""
    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.standard_normal((H, H)))[0]
    lam = np.linspace(-0.9, 0.6, H)
    A = Q @ np.diag(lam) @ Q.T
    model = linear_rnn((A + A.T) / 2)  # exactly symmetric, in float32 too
    ids = text(2, 3 + 80 + 2)
    norms = g.state_gradient_norms(model, ids, burn_in=3)
    W64 = model.rnn.weight_hh_l0.detach().double().numpy()  # the float32 weights the model really holds
    lam64, Q64 = np.linalg.eigh(W64)
    head = model.head.weight.detach().double().numpy()
    for row, target in zip(norms, ids[:, -1].tolist(), strict=True):
        p = torch.softmax(model.head.bias.detach().double(), 0).numpy()  # h = 0: the logits are the head's bias
        dh = head.T @ (p - np.eye(V)[target])  # ∂L_t/∂h_t
        coef = Q64.T @ dh
        want = np.sqrt(((lam64[None, :] ** (2 * np.arange(len(row))[:, None])) * coef**2).sum(axis=1))
        np.testing.assert_allclose(row, want, rtol=1e-9)
    assert g.per_step_factor(norms.mean(axis=0), first=60) == pytest.approx(0.9, rel=1e-2)


def test_rescaling_sets_the_largest_singular_value_and_keeps_the_direction():
    model = char_lm("rnn", n_layer=2)
    before = [model.rnn.weight_hh_l0.detach().clone(), model.rnn.weight_hh_l1.detach().clone()]
    g.set_recurrent_scale_(model, 1.5, orthogonal=False)
    for layer, W0 in enumerate(before):
        W = getattr(model.rnn, f"weight_hh_l{layer}").detach()
        assert torch.linalg.matrix_norm(W, ord=2).item() == pytest.approx(1.5, rel=1e-5)
        torch.testing.assert_close(W / W.norm(), W0 / W0.norm())
    with pytest.raises(ValueError, match="rnn"):
        g.set_recurrent_scale_(char_lm("lstm"), 1.0, orthogonal=True)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_retained_gradients_equal_a_rerun_from_the_state_itself(cell):
    """The one-backward measurement against an independent one: make s_{t-k} a leaf, read the remaining k
    characters from it, and differentiate L_t. Two layers, so every layer's state (and the LSTM's c) counts."""
    model = char_lm(cell, n_layer=2, std=0.6)
    burn_in, K = 3, 12
    ids = text(2, burn_in + K + 2)
    norms = g.state_gradient_norms(model, ids, burn_in)
    m = model.double().eval()
    for k in (0, 1, 5, K):
        stop = burn_in + K + 1 - k  # s_{t-k} is the state after the first `stop` characters
        with torch.no_grad():
            _, *s = m(ids[:, :stop], *[x.double() for x in m.init_state(2)])
        leaves = [x.clone().requires_grad_() for x in s]
        state = leaves
        if k:
            _, *state = m(ids[:, stop : burn_in + K + 1], *leaves)
        F.cross_entropy(m.head(state[0][-1]), ids[:, -1], reduction="sum").backward()
        want = torch.sqrt(sum((x.grad**2).sum(dim=(0, 2)) for x in leaves if x.grad is not None)).numpy()
        np.testing.assert_allclose(norms[:, k], want, rtol=1e-9, err_msg=f"k={k}")


def test_a_step_never_grows_the_gradient_more_than_sigma_max_times_the_largest_tanh_derivative():
    """‖∂L/∂h_{j-1}‖ = ‖W^T diag(1 - h_j^2) ∂L/∂h_j‖ <= σ_max max_i(1 - h_{j,i}^2) ‖∂L/∂h_j‖, with h_j the
    state the step passes through; saturated weights make that derivative vary a lot from step to step."""
    model = char_lm("rnn", std=1.5)
    burn_in, K = 4, 30
    ids = text(3, burn_in + K + 2)
    norms = g.state_gradient_norms(model, ids, burn_in)  # column k: gradient at h after character t - k
    h = g.hidden_states(model, ids[:, :-1])[:, 0]  # (T, B, H): h after each character
    t = ids.shape[1] - 2
    sigma = np.linalg.svd(model.rnn.weight_hh_l0.detach().double().numpy(), compute_uv=False)[0]
    deriv = (1 - h**2).max(axis=2)  # (T, B)
    bound = np.stack([sigma * deriv[t - k] for k in range(K)], axis=1)  # (B, K)
    ratio = norms[:, 1:] / norms[:, :-1]
    assert (ratio <= bound * (1 + 1e-9)).all()
    assert (ratio < 0.9 * bound).any()  # the bound is not simply what is measured


def test_numpy_min_char_rnn_reproduces_the_torch_curve():
    """Same weights, same windows: min-char-rnn's own forward pass and hand-written backward give the
    curve that torch's autograd gives, to float64 rounding."""
    model = char_lm("rnn", std=0.4)
    ids = text(4, 10 + 60 + 2, seed=5)
    ours = g.state_gradient_norms(model, ids, burn_in=10)
    ref = g.minchar_state_gradient_norms(g.to_minchar(model), ids.numpy(), burn_in=10)
    assert ref.shape == ours.shape == (4, 61)
    assert ours[:, -1].max() < 1e-3 * ours[:, 0].min()  # the curve really falls: the check covers a range
    np.testing.assert_allclose(ref, ours, rtol=1e-10)
    with pytest.raises(ValueError, match="one-layer"):
        g.to_minchar(char_lm("rnn", n_layer=2))
    with pytest.raises(ValueError, match="one-layer"):
        g.to_minchar(char_lm("gru"))


def test_jacobian_stats_of_a_linear_rnn():
    model = linear_rnn(np.diag(np.linspace(-0.3, 0.8, H)))
    (stats,) = g.rnn_jacobian_stats(model, text(2, 20), burn_in=5)
    assert stats["sigma_max"] == pytest.approx(0.8, rel=1e-6)
    assert stats["spectral_radius"] == pytest.approx(0.8, rel=1e-6)
    assert stats["mean_tanh_prime"] == stats["rms_tanh_prime"] == 1.0  # h stays 0
    assert stats["estimate"] == pytest.approx(0.8, rel=1e-6)
    assert stats["max_bound"] == pytest.approx(0.8, rel=1e-6)


def test_row_norms_do_not_underflow():
    a = np.array([[3e-200, 4e-200], [0.0, 0.0], [3.0, -4.0]])
    np.testing.assert_allclose(g.row_norms(a), [5e-200, 0.0, 5.0], rtol=1e-15)


def test_per_step_factor_and_reach():
    k = np.arange(100)
    assert g.per_step_factor(3.0 * 0.7**k) == pytest.approx(0.7, rel=1e-12)
    curve = np.where(k < 60, 0.5**k, 0.0)  # underflowed entries are not fitted
    assert g.per_step_factor(curve) == pytest.approx(0.5, rel=1e-12)
    assert math.isnan(g.per_step_factor(np.array([1.0, 0.5])))
    assert g.reach(0.5**k) == 10  # 0.5^10 < 1e-3 <= 0.5^9
    assert g.reach(np.ones(5)) is None


def test_spikes_counts_steps_above_ten_times_the_median():
    norms = np.ones(101)
    norms[[5, 50, 90]] = [10.5, 9.9, 300.0]
    assert spikes(norms) == 2
    assert spikes(norms, factor=5) == 3


def test_value_clip_is_min_char_rnns_clip_on_its_summed_loss():
    """Our loss is the window mean; min-char-rnn clips the gradient of the window sum (T times ours) to [-5, 5]."""
    T = 25
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s) * 0.3 for s in [(H, V), (H, H), (V, H), (H, 1), (V, 1)]]
    params = [torch.zeros(a.shape, dtype=torch.float64, requires_grad=True) for a in grads]
    for p, a in zip(params, grads, strict=True):
        p.grad = torch.from_numpy(a.copy())
    norm, changed = clip_(params, "value", max_norm=1.0, limit=value_limit(T))
    assert changed and norm == pytest.approx(math.sqrt(sum((a**2).sum() for a in grads)))
    summed = minchar_clip_(Params(*(T * a for a in grads)))
    for p, want in zip(params, summed.arrays(), strict=True):
        np.testing.assert_allclose(T * p.grad.numpy(), want, rtol=1e-12)


def test_norm_clip_and_no_clip():
    p = torch.zeros(4, requires_grad=True)
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_([p], "none", 1.0, 0.1) == (5.0, False)
    assert p.grad.tolist() == [3.0, 4.0, 0.0, 0.0]
    norm, changed = clip_([p], "norm", 1.0, 0.1)
    assert (norm, changed) == (5.0, True)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    assert clip_([p], "norm", 2.0, 0.1)[1] is False  # norm 1 is under 2: left alone
    with pytest.raises(ValueError, match="clip must be one of"):
        clip_([p], "elementwise", 1.0, 0.1)
    assert CLIPS == ("none", "norm", "value")


def copy_task(d: int, n: int, seed: int = 0) -> tuple[np.ndarray, g.Predictor]:
    """A text whose every character repeats the one d back, and a predictor that looks exactly d back."""
    ids = np.resize(np.random.default_rng(seed).integers(0, V, d), n)

    def predict(rows: np.ndarray) -> np.ndarray:
        logits = np.zeros((len(rows), V))
        if rows.shape[1] >= d:
            logits[np.arange(len(rows)), rows[:, -d]] = 10.0
        return logits

    return ids, predict


def test_context_losses_find_the_dependency_a_model_uses():
    ids, predict = copy_task(d=6, n=400)
    positions = np.arange(64, 400, 3)
    contexts = [1, 2, 4, 8, 16]
    losses = g.truncated_context_losses(predict, ids, positions, [*contexts, 32], chunk=50)
    blind, sighted = math.log(V), math.log(math.exp(10) + V - 1) - 10
    np.testing.assert_allclose(losses, np.array([[blind] * 3 + [sighted] * 3]).T * np.ones((1, len(positions))), rtol=1e-12)
    mean, se = g.context_cost(losses[:-1], losses[-1])
    np.testing.assert_allclose(mean, [blind - sighted] * 3 + [0.0, 0.0], atol=1e-12)
    assert g.longest_used(contexts, mean, se) == 4  # noiseless (se = 0): it uses more than 4 characters (it uses 6)
    assert g.longest_used(contexts, np.zeros(5), np.full(5, 0.1)) is None
    assert g.longest_used([1, 2], np.array([0.5, 0.2]), np.array([0.1, 0.1])) == 1  # 0.2 is within 3 standard errors
    with pytest.raises(ValueError, match="positions >= 32"):
        g.truncated_context_losses(predict, ids, np.array([10]), [32])


@pytest.mark.usefixtures("shared_data")
@pytest.mark.slow
def test_the_command_writes_every_figure_and_table(tmp_path):
    """The whole pipeline on a plan small enough for seconds: numbers, four figures, tables, the bundled models."""
    from training import gradient_report as r

    plan = r.Plan(steps=3, scaled_steps=2, windows=2, distance=8, burn_in=2, positions=6, contexts=(1, 2),
                  full_context=4, val_chars=300)
    results = r.measure(SHAKESPEARE, ROOT / "models", plan)
    table = r.tables(results)
    paths = r.figures(results, tmp_path)
    assert [p.name for p in paths] == ["distance.png", "scaled.png", "clipping.png", "context.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    for heading in ("1. Gradient norm vs distance", "2. Scaled W_hh", "3. Clipping", "4. Context"):
        assert heading in table
    assert results["distance"]["minchar"]["max_rel_diff"] < 1e-9
    assert len(results["distance"]["rnn-trained"]["curve"]) == plan.distance + 1
    assert {row["model"].split(" ")[0] for row in results["context"]["rows"]} >= {"rnn", "lstm", "gru",
                                                                                  "shakespeare-lstm"}
    clip_runs = [run for runs in results["clipping"].values() for run in runs.values()]
    assert [len(run["grad_norms"]) for run in clip_runs] == [3] * 6
    assert all(run["median_head_norm"] <= run["median_norm"] for run in clip_runs)  # a part of the whole gradient
