"""The supervised fitting loop shared by the fine-tuning editors (FT-L, FT-M, LoRA).

Epochs over the Q+ view in batches, minimising the target loss plus, optionally, lambda_pres
times the cross-entropy on the Q- view (docs/design.md's unified objective with R = 0); stops early
once an epoch's mean target loss is small. Each method supplies how the target pairs are scored
and what to do after each optimiser step (FT-L's norm constraint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from pydantic import Field

from ksmith.methods.base import MethodParams, TextPair
from ksmith.methods.train_utils import (
    PairBatch,
    answer_logprobs,
    chunks,
    cycle_batches,
    encode_pairs,
    model_device,
    pairs_text,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class FitParams(MethodParams):
    """Optimiser and schedule of the fitting loop."""

    lr: float = Field(1e-2, gt=0, description="Adam learning rate")
    steps: int = Field(50, ge=1, description="passes (epochs) over the Q+ pairs")
    batch_size: int = Field(4, ge=1, description="Q+ pairs per optimiser step")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    early_stop_loss: float = Field(
        1e-2, ge=0, description="stop once an epoch's mean target loss is below this (0: never)"
    )
    retain_weight: float = Field(
        0.0, ge=0, description="lambda_pres: weight of the Q- cross-entropy term (0: off)"
    )


def fit_pairs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    plus: list[TextPair],
    minus: list[TextPair],
    params: Iterable[torch.nn.Parameter],
    p: FitParams,
    target_logprobs: Callable[[torch.nn.Module, PairBatch], torch.Tensor],
    after_step: Callable[[], None] | None = None,
    penalty: Callable[[], torch.Tensor] | None = None,
) -> list[float]:
    """Train `params` of `model` on `plus` (and `minus` when ``p.retain_weight > 0``).

    `target_logprobs(model, batch)` returns one log-probability per example [B]; `penalty()`,
    if given, is a regulariser added to every step's loss (AdaLoRA's orthogonality term) but
    not to the reported target loss. Returns the mean target loss per epoch; a non-finite one
    ends training (the runner reports it).
    """
    device = model_device(model)
    encoded: dict[tuple[TextPair, ...], PairBatch] = {}  # every epoch sees the same batches

    def encode(chunk: list[TextPair]) -> PairBatch:
        key = tuple(chunk)
        if key not in encoded:
            encoded[key] = encode_pairs(tokenizer, *pairs_text(chunk), device=device)
        return encoded[key]

    retain = cycle_batches(minus, p.batch_size) if minus and p.retain_weight > 0 else None
    opt = torch.optim.Adam(list(params), lr=p.lr, weight_decay=p.weight_decay)
    epoch_losses: list[float] = []
    for _ in range(p.steps):
        total, n = 0.0, 0
        for chunk in chunks(plus, p.batch_size):
            batch = encode(chunk)
            target = -target_logprobs(model, batch).mean()
            loss = target if penalty is None else target + penalty()
            if retain is not None:
                kept = encode(next(retain))
                loss = (
                    loss + p.retain_weight * -answer_logprobs(model, kept, reduction="mean").mean()
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            total += float(target.detach()) * len(chunk)
            n += len(chunk)
        epoch_losses.append(total / n)
        if (
            not torch.isfinite(torch.tensor(epoch_losses[-1]))
            or epoch_losses[-1] < p.early_stop_loss
        ):
            break
    return epoch_losses
