"""Kneser-Ney baseline: distributions sum to 1, a toy corpus worked by hand, the unigram case, the known figures."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tests.support.data import SHAKESPEARE
from training.baseline import kn_baseline
from training.data import CharCorpus
from training.ngram import KneserNey, NGramCounts, discounts


def _model(text: str, vocab: str, order: int) -> KneserNey:
    ids = np.array([vocab.index(ch) for ch in text])
    return KneserNey(NGramCounts(ids, len(vocab), order), order)


def test_discounts_follow_chen_and_goodman():
    # n1 = n2 = n3 = n4 = 1: Y = 1/3, D1 = 1 - 2Y, D2 = 2 - 3Y, D3+ = 3 - 4Y.
    np.testing.assert_allclose(discounts(np.array([1, 1, 1, 1])), [1 / 3, 1, 5 / 3])
    # n3 = 0: D3+ has no estimate and falls back to Y; D2 = 2 - 3Y * 0 = 2.
    np.testing.assert_allclose(discounts(np.array([2, 1, 0, 0])), [1 / 2, 2, 1 / 2])
    # a discount estimated at or below zero also falls back to Y, so no context loses its share for unseen characters
    assert discounts(np.array([1, 5, 0, 0]))[0] == pytest.approx(1 / 11)


@pytest.mark.parametrize("order", [1, 2, 3, 5, 9])
def test_every_distribution_sums_to_one(order):
    corpus = CharCorpus.from_file(SHAKESPEARE, 0.1)
    train = corpus.train[:20000]
    lm = KneserNey(NGramCounts(train, corpus.tokenizer.vocab_size, order), order)
    rng = np.random.default_rng(order)
    for _ in range(20):
        start, length = rng.integers(len(corpus.val) - 20), rng.integers(0, 12)
        seen = corpus.val[start : start + length]  # contexts of real text, many unseen in 20k characters
        noise = rng.integers(0, corpus.tokenizer.vocab_size, length)  # and contexts never seen at all
        for context in (seen, noise):
            p = lm.distribution(context)
            assert p.shape == (corpus.tokenizer.vocab_size,) and (p > 0).all()
            assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_order_one_is_a_unigram_with_three_discounts():
    # counts a1 b2 c3 d4, e unseen: n1..n4 = 1, so D1 = 1/3, D2 = 1, D3+ = 5/3 (counts 3 and 4), N = 10, V = 5.
    # p(w) = (c(w) - D(c(w))) / N + (D1 + D2 + 2 D3+) / N / V, with D1 + D2 + 2 D3+ = 14/3.
    lm = _model("bbcccdddda", "abcde", 1)
    want = [Fraction(24, 150), Fraction(29, 150), Fraction(34, 150), Fraction(49, 150), Fraction(14, 150)]
    np.testing.assert_allclose(lm.distribution(np.array([], np.int64)), [float(w) for w in want], rtol=1e-12)
    np.testing.assert_allclose(lm.distribution(np.array([3, 3])), [float(w) for w in want], rtol=1e-12)  # no context used


def test_bigram_on_a_toy_corpus_worked_by_hand():
    # "aabab" over {a, b, c}. Bigrams aa 1, ab 2, ba 1: n = (2, 1, 0, 0), Y = 1/2, D1 = 1/2, D2 = 2, D3+ = Y.
    # Unigram level uses continuation counts: a follows {a, b} -> 2; b follows only a -> 1 (twice, counted once);
    # the first a follows nothing. n = (1, 1, 0, 0): Y = 1/3, D1 = 1/3, D2 = 2; A = 3, mass = D1 + D2 = 7/3.
    #   p1(a) = (2 - 2 + 7/3 * 1/3) / 3 = 7/27, p1(b) = (1 - 1/3 + 7/9) / 3 = 13/27, p1(c) = 7/27.
    # Context a: A = 3, mass = D1 (aa) + D2 (ab) = 5/2.
    #   p(a|a) = (1 - 1/2 + 5/2 p1(a)) / 3 = 31/81, p(b|a) = (2 - 2 + 5/2 p1(b)) / 3 = 65/162, p(c|a) = 35/162.
    # Context b: A = 1, mass = 1/2: p(a|b) = 1/2 + 1/2 p1(a) = 17/27, p(b|b) = 13/54, p(c|b) = 7/54.
    # Context c was never seen: p(.|c) = p1.
    lm = _model("aabab", "abc", 2)
    a, b, c = 0, 1, 2
    cases = {a: [Fraction(31, 81), Fraction(65, 162), Fraction(35, 162)],
             b: [Fraction(17, 27), Fraction(13, 54), Fraction(7, 54)],
             c: [Fraction(7, 27), Fraction(13, 27), Fraction(7, 27)]}
    for context, want in cases.items():
        np.testing.assert_allclose(lm.distribution(np.array([context])), [float(w) for w in want], rtol=1e-12)
    # scoring a text predicts each character from the ones before it
    np.testing.assert_allclose(lm.probs(np.array([[a, b, c, a]]))[0, 1:], [65 / 162, 7 / 54, 7 / 27], rtol=1e-12)


def test_tiny_shakespeare_figures():
    """The figures measured on the LM recipes' split (90/10) when the baseline was first run."""
    base = kn_baseline(CharCorpus.from_file(SHAKESPEARE, 0.1))
    by_order = base["val_loss_by_order"]
    assert base["order"] == 7 and base["val_loss"] == pytest.approx(1.5165, abs=5e-5)
    assert by_order["5"] == pytest.approx(1.5612, abs=1e-4) and by_order["9"] == pytest.approx(1.5221, abs=1e-4)


def test_orders_beyond_nine_or_longer_than_the_text_are_refused():
    with pytest.raises(ValueError, match="order"):
        NGramCounts(np.arange(20) % 3, 3, 10)
    with pytest.raises(ValueError, match="shorter"):
        NGramCounts(np.array([0, 1]), 3, 5)
