"""The shared batched sampler: greedy, top-k, top-p, banned ids, and row independence."""

import numpy as np

from service.artifact.sampling import sample


def _draw(logits, temperature=1.0, top_k=0, top_p=1.0, n=4000, seed=0, banned=None):
    rng = np.random.default_rng(seed)
    B = n
    ids, _ = sample(np.repeat(logits[None, :], B, 0), np.full(B, temperature), np.full(B, top_k), np.full(B, top_p),
                    rng.random(B), banned=banned)
    return np.bincount(ids, minlength=len(logits)) / B


def test_greedy_is_argmax_and_logprob_is_the_models():
    logits = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, -1.0]])
    ids, lp = sample(logits, np.zeros(2), np.zeros(2, int), np.ones(2), np.array([0.99, 0.99]))
    assert ids.tolist() == [1, 0]
    want = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert np.allclose(lp, want[[0, 1], [1, 0]])


def test_frequencies_follow_softmax_at_temperature_one():
    logits = np.log(np.array([0.5, 0.3, 0.2]))
    assert np.allclose(_draw(logits), [0.5, 0.3, 0.2], atol=0.03)


def test_top_k_and_top_p_cut_the_tail():
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1]))
    assert _draw(logits, top_k=2)[2:].sum() == 0
    assert np.allclose(_draw(logits, top_k=2)[:2], [4 / 7, 3 / 7], atol=0.03)
    # nucleus 0.6: 0.4 alone is not enough, 0.4 + 0.3 is: keep the first two
    assert _draw(logits, top_p=0.6)[2:].sum() == 0
    assert _draw(logits, top_p=0.39)[1:].sum() == 0


def test_banned_id_is_never_picked_even_when_most_likely():
    logits = np.array([5.0, 0.0, 0.0])
    assert _draw(logits, banned=0)[0] == 0
    ids, _ = sample(logits[None, :], np.zeros(1), np.zeros(1, int), np.ones(1), np.zeros(1), banned=0)
    assert ids[0] != 0


def test_a_row_samples_the_same_alone_or_among_other_rows():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(64, 30))
    temperature, top_k, top_p, u = rng.uniform(0.5, 1.5, 64), rng.integers(0, 10, 64), rng.uniform(0.5, 1, 64), rng.random(64)
    batch, _ = sample(logits, temperature, top_k, top_p, u)
    for i in (0, 17, 63):
        alone, _ = sample(logits[i : i + 1], temperature[i : i + 1], top_k[i : i + 1], top_p[i : i + 1], u[i : i + 1])
        assert alone[0] == batch[i]
