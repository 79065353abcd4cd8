"""Model-derived measures: fluency (n-gram entropy) and drift (KL, linear CKA).

These need the model, so the runner computes their per-item values; the maths lives here as
pure functions on texts and arrays.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

# Words and single punctuation marks, close to nltk.word_tokenize on plain English.
_TOKEN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def words(text: str) -> list[str]:
    """The word and punctuation tokens n-gram entropy counts."""
    return _TOKEN.findall(text)


NGRAM_ORDERS: tuple[int, ...] = (2, 3)
NGRAM_WEIGHTS: tuple[float, ...] = (2 / 3, 4 / 3)


def ngram_entropy(
    text: str,
    ns: Sequence[int] = NGRAM_ORDERS,
    weights: Sequence[float] = NGRAM_WEIGHTS,
) -> float:
    """Weighted n-gram entropy of one generated text, in bits (higher = less repetitive).

    The fluency measure of ROME (Meng et al. 2022, arXiv 2202.05262, appendix on generation
    metrics) used unchanged by KnowEdit (arXiv 2401.01286, sec. 4.1, "Generative Capacity"):

        fluency(x) = mean_k  w_k * H_k(x),   H_k = -sum_g f(g) log2 f(g)

    over the k-grams g of the word sequence of x with relative frequencies f, for k = 2, 3 and
    weights w = (2/3, 4/3), i.e. H_2 / 3 + 2 H_3 / 3 (the reference implementation's defaults).
    A text with fewer than k words contributes H_k = 0.
    """
    tokens = words(text)
    terms = []
    for n, w in zip(ns, weights, strict=True):
        counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(counts.values())
        h = -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0
        terms.append(w * h)
    return float(np.mean(terms))


def kl_divergence(logp: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, in nats, from log-probabilities ``[n, vocab]`` -> ``[n]``.

    Drift of the next-token distribution on Q- prompts: p is the model before the update, q
    after it. Zero iff the distributions agree.
    """
    logp = np.asarray(logp, dtype=np.float64)
    logq = np.asarray(logq, dtype=np.float64)
    p = np.exp(logp)
    # 0 * log 0 = 0: mask tokens p gives no mass (log p = -inf).
    diff = np.where(p > 0, logp - logq, 0.0)
    return np.maximum((p * diff).sum(axis=-1), 0.0)


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centered kernel alignment between two representations of the same n inputs.

    Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited"
    (arXiv 1905.00414), eq. 6 (the linear-kernel form of HSIC normalised):

        CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)

    with X ``[n, d1]`` and Y ``[n, d2]`` column-centered. 1 for identical representations;
    invariant to orthogonal transforms and isotropic scaling of either. NaN when either side is
    constant (zero variance) or n < 2.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs paired rows, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        return math.nan
    x = x - x.mean(axis=0, keepdims=True)  # [n, d1]
    y = y - y.mean(axis=0, keepdims=True)  # [n, d2]
    cross = np.linalg.norm(y.T @ x) ** 2  # ||Y^T X||_F^2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    if denom <= 0:
        return math.nan
    return float(cross / denom)
