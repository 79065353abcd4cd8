"""Teacher-forced scores of continuations, assembled from per-token values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch


class ContinuationScore(NamedTuple):
    """Teacher-forced score of one continuation after its context.

    `loglikelihood` = sum_t log p(y_t | x, y_<t); `token_accuracy` = share of t with
    y_t = argmax p(. | x, y_<t); `greedy_ids` are those argmax tokens (the model's own
    teacher-forced answer), so `is_greedy` means greedy decoding would produce the continuation.
    (A named tuple: immutable like a frozen dataclass, and made twice as fast, which matters
    at thousands per scoring call.)
    """

    loglikelihood: float
    token_accuracy: float
    n_tokens: int
    greedy_ids: tuple[int, ...]

    @property
    def is_greedy(self) -> bool:
        return self.token_accuracy == 1.0


def continuation_scores(
    token_ll: torch.Tensor, greedy: torch.Tensor, target: torch.Tensor, lengths: Sequence[int]
) -> list[ContinuationScore]:
    """Sum per-token log p [T], argmax [T] and targets [T] over consecutive continuations of
    the given lengths (sum(lengths) = T)."""
    lengths = list(lengths)
    starts = np.cumsum([0, *lengths[:-1]])  # [N]
    hit = (greedy == target.to(greedy.device)).cpu().numpy()  # [T]
    ll = np.add.reduceat(token_ll.cpu().numpy(), starts).tolist() if lengths else []  # [N]
    hits = np.add.reduceat(hit.astype(np.int64), starts).tolist() if lengths else []  # [N]
    greedy_l = greedy.tolist()
    out, start = [], 0
    for n, k in enumerate(lengths):
        out.append(ContinuationScore(ll[n], hits[n] / k, k, tuple(greedy_l[start : start + k])))
        start += k
    return out
