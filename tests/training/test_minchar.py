"""The NumPy min-char-rnn reference: its gradients, its agreement with torch's CharLM(cell="rnn"), Adagrad, sampling."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.support.data import SHAKESPEARE
from training.minchar import Params, adagrad_, clip_, forward, loss_fun, sample, train
from training.model import CharLM, CharLMConfig

V, H, T = 8, 10, 16
NAMES = ["Wxh", "Whh", "Why", "bh", "by"]


def random_case(seed: int = 0) -> tuple[Params, list[int], list[int], np.ndarray]:
    """Weights large enough (std 0.5) that tanh is well off its linear part, a nonzero hprev, and
    inputs that use every character so that no gradient entry is trivially zero."""
    rng = np.random.default_rng(seed)
    p = Params(*(rng.standard_normal(a.shape) * 0.5 for a in Params.init(V, H, rng).arrays()))
    inputs = [*rng.permutation(V).tolist(), *rng.integers(0, V, T - V).tolist()]
    targets = rng.integers(0, V, T).tolist()
    return p, inputs, targets, np.tanh(rng.standard_normal((H, 1)))


def test_gradients_match_central_differences():
    p, inputs, targets, hprev = random_case()
    _, g, _ = loss_fun(p, inputs, targets, hprev)
    step, worst = 1e-5, 0.0
    for name in NAMES:
        a, da = getattr(p, name), getattr(g, name)
        num = np.zeros_like(a)
        for i in np.ndindex(a.shape):  # every entry of every parameter
            old = a[i]
            a[i] = old + step
            up = loss_fun(p, inputs, targets, hprev)[0]
            a[i] = old - step
            down = loss_fun(p, inputs, targets, hprev)[0]
            a[i] = old
            num[i] = (up - down) / (2 * step)
        # the gist's gradCheck measure: |analytic - numerical| / |analytic + numerical|
        rel = np.abs(da - num) / np.maximum(np.abs(da + num), 1e-12)
        worst = max(worst, float(rel.max()))
        assert rel.max() < 1e-6, f"{name}: max relative error {rel.max():.2e}"
        assert np.abs(da).min() > 0, f"{name} has zero entries, so the check would not cover them"
    assert worst > 0  # the comparison really ran on two different computations


def test_loss_fun_returns_raw_gradients_and_clip_is_separate():
    p, inputs, _, hprev = random_case()
    targets = [0] * T  # the same target every step: dby[0] = sum_t (p_t[0] - 1), far below -5
    _, g, _ = loss_fun(p, inputs, targets, hprev)
    assert g.by[0, 0] < -5
    raw = [a.copy() for a in g.arrays()]
    clip_(g)
    for before, after in zip(raw, g.arrays(), strict=True):
        assert np.abs(after).max() <= 5
        np.testing.assert_array_equal(after, np.clip(before, -5, 5))


def test_float32_follows_float64():
    p, inputs, targets, hprev = random_case()
    p32 = Params(*(a.astype(np.float32) for a in p.arrays()))
    loss, g, _ = loss_fun(p, inputs, targets, hprev)
    loss32, g32, h32 = loss_fun(p32, inputs, targets, hprev.astype(np.float32))
    assert h32.dtype == np.float32 and all(a.dtype == np.float32 for a in g32.arrays())
    assert loss32 == pytest.approx(loss, rel=1e-5)
    for a, a32 in zip(g.arrays(), g32.arrays(), strict=True):
        np.testing.assert_allclose(a32, a, rtol=1e-3, atol=1e-5)


def to_torch(p: Params) -> CharLM:
    """CharLM(cell="rnn") holding min-char-rnn's weights, in float64.

    n_embd = V with an identity embedding makes embed(ix) the one-hot x_t; torch has two hidden
    biases where min-char-rnn has one (h_t = tanh(W_ih x + b_ih + W_hh h + b_hh)), so b_ih = bh, b_hh = 0.
    """
    model = CharLM(CharLMConfig(cell="rnn", vocab_size=V, n_layer=1, n_embd=V, hidden_size=H)).double()
    with torch.no_grad():
        model.embed.weight.copy_(torch.eye(V, dtype=torch.float64))
        model.rnn.weight_ih_l0.copy_(torch.from_numpy(p.Wxh))
        model.rnn.weight_hh_l0.copy_(torch.from_numpy(p.Whh))
        model.rnn.bias_ih_l0.copy_(torch.from_numpy(p.bh[:, 0]))
        model.rnn.bias_hh_l0.zero_()
        model.head.weight.copy_(torch.from_numpy(p.Why))
        model.head.bias.copy_(torch.from_numpy(p.by[:, 0]))
    return model


def test_torch_rnn_cell_matches_forward_and_gradients():
    p, inputs, targets, hprev = random_case(1)
    hs, ys, ps = forward(p, inputs, hprev)
    loss, g, h_last = loss_fun(p, inputs, targets, hprev)

    model = to_torch(p)
    h0 = torch.from_numpy(hprev[:, 0].copy()).view(1, 1, H)  # (L, B, H)
    logits, hn = model(torch.tensor([inputs]), h0)  # (1, T, V), (1, 1, H)
    step_loss = F.cross_entropy(logits[0], torch.tensor(targets), reduction="none")  # (T,)
    total = step_loss.sum()  # min-char-rnn sums the loss over the window
    total.backward()

    np.testing.assert_allclose(logits[0].detach().numpy(), ys[:, :, 0], rtol=0, atol=1e-12)
    np_step_loss = -np.log(ps[np.arange(T), targets, 0])  # (T,)
    np.testing.assert_allclose(step_loss.detach().numpy(), np_step_loss, rtol=1e-12)
    assert total.item() == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(hn.detach().numpy().reshape(H, 1), h_last, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(h_last, hs[-1])

    rnn, head = model.rnn, model.head
    torch_grads = {"Wxh": rnn.weight_ih_l0.grad, "Whh": rnn.weight_hh_l0.grad, "Why": head.weight.grad,
                   "bh": rnn.bias_ih_l0.grad[:, None], "by": head.bias.grad[:, None]}
    for name, tg in torch_grads.items():
        np.testing.assert_allclose(tg.numpy(), getattr(g, name), rtol=1e-10, atol=1e-12, err_msg=name)
    # b_ih and b_hh enter h_t as one sum, so each receives min-char-rnn's dbh
    np.testing.assert_allclose(rnn.bias_hh_l0.grad[:, None].numpy(), g.bh, rtol=1e-10, atol=1e-12)


def adagrad_both(grads: list[Params], p0: Params, lr: float, eps: float) -> tuple[Params, list[torch.Tensor], list[Params]]:
    """Apply the same gradient sequence with adagrad_ and torch.optim.Adagrad; also return adagrad_'s memory after each step."""
    p = Params(*(a.copy() for a in p0.arrays()))
    mem, mems = p.zeros_like(), []
    tp = [torch.from_numpy(a.copy()).requires_grad_() for a in p0.arrays()]
    opt = torch.optim.Adagrad(tp, lr=lr, eps=eps, initial_accumulator_value=0.0)
    for g in grads:
        adagrad_(p, g, mem, lr, eps=eps)
        mems.append(Params(*(m.copy() for m in mem.arrays())))
        for t, da in zip(tp, g.arrays(), strict=True):
            t.grad = torch.from_numpy(da.copy())
        opt.step()
    return p, [t.detach() for t in tp], mems


def test_adagrad_is_torch_adagrad_without_eps():
    """With eps = 0 the two are one algorithm: the same accumulator, the same lr g / sqrt(mem)."""
    rng = np.random.default_rng(2)
    p0 = Params.init(V, H, rng)
    grads = [Params(*(rng.standard_normal(a.shape) for a in p0.arrays())) for _ in range(5)]  # no zeros: no 0/0
    p, tp, _ = adagrad_both(grads, p0, lr=0.1, eps=0.0)
    for a, t, a0 in zip(p.arrays(), tp, p0.arrays(), strict=True):
        assert np.abs(a - a0).min() > 1e-4  # every entry moved
        np.testing.assert_allclose(t.numpy(), a, rtol=1e-14, atol=1e-15)


def test_adagrad_eps_placement_is_the_only_difference_from_torch():
    """min-char-rnn divides by sqrt(mem + eps), torch by sqrt(mem) + eps (torch/optim/adagrad.py:
    std = state_sum.sqrt().add_(eps)).

    That is not negligible for small gradients: with mem = g^2 = 1e-8 the first divides by sqrt(2) 1e-4
    and the second by 1.0001e-4, about 30% apart; for |g| << 1e-4 torch steps by about lr sign(g) and
    min-char-rnn by lr g / 1e-4. min-char-rnn's gradients at its 0.01 init are that small (dWhh here),
    so the parameters end up as much as 0.13 apart after 5 steps. Instead of a loose tolerance the
    test predicts the gap exactly, sum_k lr g_k (1 / (sqrt(m_k) + eps) - 1 / sqrt(m_k + eps)), from
    adagrad_'s own memory, and checks torch lands there. The gradients are min-char-rnn's real ones, clipped.
    """
    lr, eps = 0.1, 1e-8
    rng = np.random.default_rng(3)
    p0 = Params.init(V, H, rng)
    data = rng.integers(0, V, 5 * T + 1).tolist()
    grads, hprev = [], np.zeros((H, 1))
    for k in range(5):
        _, g, hprev = loss_fun(p0, data[k * T : (k + 1) * T], data[k * T + 1 : (k + 1) * T + 1], hprev)
        grads.append(clip_(g))
    p, tp, mems = adagrad_both(grads, p0, lr, eps)
    for i, (a, t) in enumerate(zip(p.arrays(), tp, strict=True)):
        gap = sum(lr * g.arrays()[i] * (1 / (np.sqrt(m.arrays()[i]) + eps) - 1 / np.sqrt(m.arrays()[i] + eps))
                  for g, m in zip(grads, mems, strict=True))
        np.testing.assert_allclose(a - t.numpy(), gap, rtol=1e-6, atol=1e-15, err_msg=NAMES[i])
    assert max(float(np.abs(a - t.numpy()).max()) for a, t in zip(p.arrays(), tp, strict=True)) > 1e-12


@pytest.mark.usefixtures("shared_data")
def test_training_on_shakespeare_lowers_smooth_loss():
    data = SHAKESPEARE.read_text()[:10_000]
    _, chars, losses, smooth = train(data, steps=1000, hidden_size=50, seq_length=25, lr=0.1, seed=0)
    uniform = np.log(len(chars)) * 25  # smooth_loss starts at the loss of a uniform guess
    assert smooth[0] == pytest.approx(uniform, rel=0.01)
    assert smooth[-1] < smooth[500] < smooth[100] < smooth[0]
    assert smooth[-1] < 0.8 * uniform
    # below the unigram entropy: the model uses context, not just how often each character occurs
    q = np.array(list(Counter(data).values())) / len(data)
    assert np.mean(losses[-100:]) / 25 < -(q * np.log(q)).sum() - 0.5


def test_sample_is_deterministic_per_seed_and_valid():
    p, *_ = random_case()
    h = np.zeros((H, 1))
    a = sample(p, h, 3, 200, np.random.default_rng(0))
    assert a == sample(p, h, 3, 200, np.random.default_rng(0))
    assert a != sample(p, h, 3, 200, np.random.default_rng(1))
    assert len(a) == 200 and all(isinstance(ix, int) and 0 <= ix < V for ix in a)
    assert len(set(a)) > 1


def test_sample_follows_softmax():
    """With Why = 0 every step's distribution is softmax(by), so sample frequencies must approach it."""
    rng = np.random.default_rng(4)
    p = Params.init(V, H, rng)
    q = rng.dirichlet(np.ones(V))
    p.Why[:] = 0
    p.by[:, 0] = np.log(q)
    n = 20_000
    freq = np.bincount(sample(p, np.zeros((H, 1)), 0, n, np.random.default_rng(5)), minlength=V) / n
    np.testing.assert_allclose(freq, q, atol=0.02)  # binomial std <= 0.0036 at this n: more than 5 sigma


def test_sample_feeds_each_sample_back():
    """A model that always predicts the next index (mod V): h is the one-hot of the input (tanh(+-5) ~ +-1)
    and Why shifts it by one, so the samples must walk seed+1, seed+2, ..."""
    p = Params.init(V, V, np.random.default_rng(6))
    p.Wxh[:] = 10 * np.eye(V)
    p.Whh[:] = 0
    p.bh[:] = -5
    p.Why[:] = 20 * np.roll(np.eye(V), 1, axis=0)  # y[k] = 20 h[k - 1]
    p.by[:] = 0
    out = sample(p, np.zeros((V, 1)), 3, 2 * V, np.random.default_rng(0))
    assert out == [(3 + k) % V for k in range(1, 2 * V + 1)]
