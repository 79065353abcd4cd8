"""Teacher-forced scores of continuations, assembled from per-token values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ContinuationScore:
    """Teacher-forced score of one continuation after its context.

    `loglikelihood` = sum_t log p(y_t | x, y_<t); `token_accuracy` = share of t with
    y_t = argmax p(. | x, y_<t); `greedy_ids` are those argmax tokens (the model's own
    teacher-forced answer), so `is_greedy` means greedy decoding would produce the continuation.
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
    dev = token_ll.device
    own = torch.repeat_interleave(torch.tensor(lengths, device=dev))  # [T] -> continuation
    hit = (greedy == target.to(dev)).float()  # [T]
    ll = torch.zeros(len(lengths), device=dev).index_add_(0, own, token_ll).tolist()  # [N]
    hits = torch.zeros(len(lengths), device=dev).index_add_(0, own, hit).tolist()  # [N]
    greedy_l = greedy.tolist()
    out, start = [], 0
    for n, k in enumerate(lengths):
        out.append(
            ContinuationScore(
                loglikelihood=ll[n],
                token_accuracy=hits[n] / k,
                n_tokens=k,
                greedy_ids=tuple(greedy_l[start : start + k]),
            )
        )
        start += k
    return out
