"""AdaLoRA editing: SVD-form adapters whose rank budget is reallocated during training.

Zhang et al. 2023, "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning",
arXiv 2303.10512. Each adapted weight gets an update in SVD form (Eq. 3)

    W = W_0 + P Λ Q,    P: (d, r), Λ = diag(λ_1..λ_r), Q: (r, k),  r = init_r at the start

trained with the task loss plus γ times the orthogonality penalty R(P, Q) (Eq. 4; the paper
squares ‖PᵀP − I‖_F and ‖QQᵀ − I‖_F, peft, followed here, takes the plain norms and averages
them over the matrices). After each optimiser step the importance of every triplet
(P_i, λ_i, Q_i) is scored from the smoothed sensitivity |w ∂L/∂w| times its uncertainty (EMAs
with β₁, β₂), and the least important λ_i are zeroed so the total rank follows the paper's cubic
budget schedule from init_r per matrix down to target_r per matrix: full budget for the first
t_i steps, reduced every ΔT steps until step T − t_f, then fixed for the last t_f. The scoring,
masking and schedule are peft's (``AdaLoraConfig``, ``update_and_allocate``).

As an editor (KnowEdit's AdaLoRA row, arXiv 2401.01286) the adapters sit on the same modules as
ksmith's LoRA (``lora.py``), are trained on the Q+ view with the shared fitting loop, and are
merged into the base weights afterwards: the update is an ordinary delta of rank ≤ the budget
each matrix kept.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.base import UpdateProblem, UpdateResult, register_method
from ksmith.methods.fit import fit_pairs
from ksmith.methods.lora import LoRA, LoRAParams
from ksmith.methods.train_utils import answer_logprobs, trainable
from ksmith.models.arch import arch_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ADAPTER = "ksmith"


class AdaLoRAParams(LoRAParams):
    """AdaLoRA hyper-parameters: LoRA's modules and fitting loop, plus the budget schedule.
    `rank` is unused (AdaLoRA starts at `init_r`); `alpha` scales the update as alpha / r."""

    init_r: int = Field(12, ge=1, description="initial rank of every adapted matrix")
    target_r: int = Field(8, ge=1, description="final average rank per adapted matrix")
    tinit_frac: float = Field(
        0.1, ge=0, lt=1, description="t_i / T: share of the steps at the full budget"
    )
    tfinal_frac: float = Field(
        0.3, ge=0, lt=1, description="t_f / T: share of the steps at the final budget"
    )
    delta_t: int = Field(1, ge=1, description="ΔT: optimiser steps between two reallocations")
    beta1: float = Field(0.85, gt=0, lt=1, description="β₁: EMA of the sensitivity")
    beta2: float = Field(0.85, gt=0, lt=1, description="β₂: EMA of the uncertainty")
    orth_reg_weight: float = Field(0.5, ge=0, description="γ: weight of R(P, Q) (Eq. 4)")


def orthogonal_penalty(model: torch.nn.Module, adapter: str = ADAPTER) -> torch.Tensor:
    """R(P, Q) averaged over the adapted matrices, as peft's ``AdaLoraModel.forward`` adds it to
    a loss it computes itself (ksmith's fitting loop computes its own, so adds it here)."""
    terms = []
    for n, w in model.named_parameters():
        if w.requires_grad and adapter in n and ("lora_A" in n or "lora_B" in n):
            cov = w @ w.T if "lora_A" in n else w.T @ w  # QQᵀ (r, r) or PᵀP (r, r)
            eye = torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)
            terms.append(torch.linalg.matrix_norm(cov - eye))
    return torch.stack(terms).mean()


def _kept_rank(model: torch.nn.Module, adapter: str = ADAPTER) -> int:
    """Total number of nonzero λ_i (the rank budget in use) over the adapted matrices."""
    return sum(int((w != 0).sum()) for n, w in model.named_parameters() if f"lora_E.{adapter}" in n)


@register_method
class AdaLoRA(LoRA):
    """AdaLoRA (arXiv 2303.10512, Eq. 3-4 and the budget schedule) through peft, merged."""

    name: ClassVar[str] = "adalora"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = (
        "Zhang, Chen, Bukharin, Karampatziakis, He, Cheng, Chen, Zhao. Adaptive Budget "
        "Allocation for Parameter-Efficient Fine-Tuning. ICLR 2023. arXiv:2303.10512"
    )
    Params = AdaLoRAParams

    def schedule(self, n_pairs: int) -> tuple[int, int, int]:
        """(T, t_i, t_f) in optimiser steps for `n_pairs` Q+ pairs: T = steps x batches per
        epoch; t_i and t_f from their shares, leaving at least one budgeting step."""
        p: AdaLoRAParams = self.params  # type: ignore[assignment]
        total = p.steps * math.ceil(n_pairs / p.batch_size)
        tinit = int(p.tinit_frac * total)
        tfinal = int(p.tfinal_frac * total)
        while tinit + tfinal >= total and (tinit or tfinal):
            if tfinal >= tinit:
                tfinal -= 1
            else:
                tinit -= 1
        if total < 2:
            raise KsmithError(
                "adalora: the budget schedule needs at least 2 optimiser steps; raise "
                "params.steps in specs/methods/adalora.yaml"
            )
        return total, tinit, tfinal

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        from peft import AdaLoraConfig, get_peft_model

        p: AdaLoRAParams = self.params  # type: ignore[assignment]
        plus = list(problem.plus)
        if not plus:
            return UpdateResult(log={"loss": [], "note": "no Q+ pairs"})
        if p.target_r > p.init_r:
            raise KsmithError(
                f"adalora: target_r ({p.target_r}) must not exceed init_r ({p.init_r})"
            )
        targets = self.target_modules(model)
        total, tinit, tfinal = self.schedule(len(plus))
        config = AdaLoraConfig(
            init_r=p.init_r,
            target_r=p.target_r,
            tinit=tinit,
            tfinal=tfinal,
            deltaT=p.delta_t,
            beta1=p.beta1,
            beta2=p.beta2,
            orth_reg_weight=p.orth_reg_weight,
            total_step=total,
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules=targets,
            fan_in_fan_out=arch_of(model).conv1d,
            bias="none",
        )
        step = [0]
        kept: list[int] = []  # nonzero singular values λ_i over all matrices, after each step
        with trainable(model, []):
            peft_model = get_peft_model(model, config, adapter_name=ADAPTER)
            merged = False
            try:
                tuner = peft_model.base_model  # AdaLoraModel: the rank allocator

                def allocate() -> None:
                    # after optimizer.step(), before the next zero_grad (peft's contract)
                    step[0] += 1
                    tuner.update_and_allocate(step[0])
                    kept.append(_kept_rank(peft_model))

                def penalty() -> torch.Tensor:
                    return p.orth_reg_weight * orthogonal_penalty(peft_model)  # γ R(P, Q)

                adapters = [w for w in peft_model.parameters() if w.requires_grad]
                epoch_losses = fit_pairs(
                    peft_model,
                    tokenizer,
                    plus,
                    list(problem.minus),
                    adapters,
                    p,
                    lambda m, batch: answer_logprobs(m, batch, reduction="mean"),
                    after_step=allocate,
                    penalty=penalty if p.orth_reg_weight > 0 else None,
                )
                pattern = peft_model.peft_config[ADAPTER].rank_pattern or {}
                ranks = {name: int(sum(mask)) for name, mask in pattern.items()}
                unloaded = peft_model.merge_and_unload()
                merged = True
            finally:
                if not merged:
                    peft_model.unload()
        if unloaded is not model:
            raise KsmithError("adalora: peft returned a different model object after merging")
        return UpdateResult(
            log={
                "loss": epoch_losses,
                "adapted": targets,
                "steps": step[0],
                "schedule": {"total_step": total, "tinit": tinit, "tfinal": tfinal},
                "ranks": ranks,
                "kept_rank": kept,
            }
        )
