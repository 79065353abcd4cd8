"""Fluency (n-gram entropy), KL drift and linear CKA: their defining properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ksmith.evaluate.quality import kl_divergence, linear_cka, ngram_entropy


def test_ngram_entropy_on_known_strings():
    # "a b c d": 3 distinct bigrams (H2 = log2 3), 2 distinct trigrams (H3 = 1 bit);
    # fluency = mean(2/3 H2, 4/3 H3).
    assert ngram_entropy("a b c d") == pytest.approx((2 / 3 * math.log2(3) + 4 / 3 * 1) / 2)
    # pure repetition: one bigram, one trigram -> 0
    assert ngram_entropy("the the the the the") == 0.0
    # too short for any trigram: H3 = 0
    assert ngram_entropy("a b") == pytest.approx((2 / 3 * 0 + 0) / 2)
    # punctuation is a token; repetition lowers the entropy
    varied = ngram_entropy("the cat eats fish . the dog eats meat .")
    repeated = ngram_entropy("the cat eats fish . the cat eats fish .")
    assert varied > repeated > 0


def test_kl_of_a_distribution_with_itself_is_zero_and_positive_otherwise():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 11))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    assert np.allclose(kl_divergence(logp, logp), 0.0)
    other = np.roll(logp, 1, axis=-1)
    kl = kl_divergence(logp, other)
    assert (kl > 0).all()
    # known value: KL([1/2, 1/2] || [1/4, 3/4])
    p = np.log([[0.5, 0.5]])
    q = np.log([[0.25, 0.75]])
    assert kl_divergence(p, q)[0] == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    # zero-probability tokens of p contribute nothing
    p0 = np.log(np.array([[1.0, 0.0]]) + 0.0, where=[[True, False]], out=np.full((1, 2), -np.inf))
    assert kl_divergence(p0, q)[0] == pytest.approx(math.log(4))


def test_linear_cka_identity_and_invariances():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 6))
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # orthogonal
    assert linear_cka(x, x @ q) == pytest.approx(1.0)
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0)
    y = rng.normal(size=(20, 4))
    q4, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    assert linear_cka(x, y @ q4 * 2.0) == pytest.approx(linear_cka(x, y))
    assert linear_cka(y, x) == pytest.approx(linear_cka(x, y))
    assert 0.0 <= linear_cka(x, y) < 0.9
    # not invariant to a general (non-orthogonal) linear map
    a = np.diag([10.0, 1, 1, 1, 1, 0.1])
    assert linear_cka(x, x @ a) < 0.99
    assert math.isnan(linear_cka(x[:1], x[:1]))
