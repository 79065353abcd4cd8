"""Seeded percentile-bootstrap intervals (Efron and Tibshirani 1993, ch. 13).

Items (probes, requests, pairs, prompts) are resampled with replacement; the 95% interval is the
2.5th and 97.5th percentile of the statistic over the resamples. Each metric draws from its own
generator, seeded by (seed, crc32(metric name)), so adding a metric never moves another's
interval and the same predictions always give the same numbers.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ALPHA = 0.05
_CHUNK = 200  # resamples drawn at once (bounds memory at _CHUNK x n indices)


def metric_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def bootstrap_ci(
    n: int,
    statistic: Callable[[np.ndarray], float],
    *,
    seed: int,
    name: str,
    n_boot: int = 1000,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(indices)`` over `n_boot` resamples of ``range(n)``."""
    rng = metric_rng(seed, name)
    stats = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, n_boot - start), n))
        stats[start : start + len(idx)] = [statistic(row) for row in idx]
    lo, hi = np.nanpercentile(stats, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(lo), float(hi)


def mean_ci(
    values: Sequence[float] | np.ndarray, *, seed: int, name: str, n_boot: int = 1000
) -> tuple[float, float]:
    """Percentile interval of the mean (vectorized special case of `bootstrap_ci`)."""
    x = np.asarray(values, dtype=np.float64)
    rng = metric_rng(seed, name)
    means = np.empty(n_boot)
    for start in range(0, n_boot, _CHUNK):
        idx = rng.integers(0, len(x), size=(min(_CHUNK, n_boot - start), len(x)))
        means[start : start + len(idx)] = x[idx].mean(axis=1)
    lo, hi = np.percentile(means, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(lo), float(hi)


def summarize(
    name: str,
    values: Sequence[float] | np.ndarray,
    mode: str,
    *,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """``{"value", "ci", "n", "mode"}`` for the mean of per-item `values` (None when empty)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return {"value": None, "ci": [None, None], "n": 0, "mode": mode}
    lo, hi = mean_ci(x, seed=seed, name=name, n_boot=n_boot)
    return {"value": float(x.mean()), "ci": [lo, hi], "n": int(len(x)), "mode": mode}
