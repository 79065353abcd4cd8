"""Fine-tuning editors FT-L and FT-M: gradient descent on one declared layer's MLP down-projection.

Both are constrained fine-tuning baselines from the editing literature, as benchmarked in
KnowEdit (Zhang et al. 2024, "A Comprehensive Study of Knowledge Editing for Large Language
Models", arXiv 2401.01286, section 4.1):

* **FT-L** (Meng et al. 2022, ROME, arXiv 2202.05262, the "FT+L" baseline after Zhu et al. 2020,
  arXiv 2012.00363): fine-tune a single layer's FFN, "using the last token's prediction to
  maximize the probability of all tokens in the target sequence immediately". Every target token
  o_j is scored under the one next-token distribution at the prompt's last position:

      L_FT-L = - 1/|o| sum_j log p_theta(o_j | x)          (x = prompt, o = " " + new object)

  with an L-infinity constraint on the weight change, ||W - W_0||_inf <= eps, enforced after
  each optimiser step by clamping (Zhu et al. 2020, eq. 2; ROME appendix "FT+L").
* **FT-M** ("FT with masking", KnowEdit): trains the same layer with the ordinary teacher-forced
  cross-entropy on the target answer tokens, the prompt tokens masked out of the loss:

      L_FT-M = - 1/|o| sum_j log p_theta(o_j | x, o_<j)

Both train on the Q+ view (training-template prompts, answer = new object). An optional retain
term (lambda_pres in docs/design.md's unified objective, ``retain_weight``) adds the same
cross-entropy on the Q- view; it is off by default, as in the papers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from ksmith.methods.base import (
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    register_method,
)
from ksmith.methods.fit import FitParams, fit_pairs
from ksmith.methods.train_utils import (
    PairBatch,
    answer_logprobs,
    module_parameters,
    resolve_layers,
    trainable,
)
from ksmith.models.arch import layer_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ModuleName = Literal["mlp_out", "mlp_in", "attn_out"]


class FTParams(FitParams):
    """Hyper-parameters shared by FT-L and FT-M."""

    layers: tuple[int, ...] = Field(
        (), description="layers to train (negative: from the end); empty: the middle layer"
    )
    module: ModuleName = Field(
        "mlp_out", description="which block module to train (ksmith.models.arch field name)"
    )


class FTLParams(FTParams):
    """FT-L: FTParams plus the L-infinity constraint on the weight change."""

    norm_constraint: float | None = Field(
        1e-1, gt=0, description="eps: clamp |W - W_0| <= eps elementwise after each step; null: off"
    )


def last_token_target_logprobs(model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
    """FT-L's objective term: mean_j log p(o_j | x), every target token scored under the
    next-token distribution at the prompt's last position. Returns (B,), differentiable."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    rows = torch.arange(len(batch), device=logits.device)
    last = batch.prompt_lengths - 1  # (B,) index of the last prompt token
    logp = torch.log_softmax(logits[rows, last].float(), dim=-1)  # (B, V)
    mask = batch.answer_mask  # (B, T)
    picked = logp.gather(1, batch.labels.clamp(min=0))  # (B, T): log p(label_t | x)
    return (picked * mask).sum(1) / mask.sum(1).clamp(min=1)


class _FineTune(UpdateMethod):
    """The shared training loop; subclasses define the target loss and an optional projection."""

    kind = "edit"
    Params = FTParams

    def target_logprobs(self, model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
        raise NotImplementedError

    def project_(self, params: dict[str, torch.nn.Parameter], w0: dict[str, torch.Tensor]):
        """Called after every optimiser step (FT-L: the norm constraint)."""

    def trained_parameters(self, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        p = self.params
        paths = [layer_path(model, i, p.module) for i in resolve_layers(model, p.layers)]
        return module_parameters(model, paths)

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        p = self.params
        params = self.trained_parameters(model)
        w0 = {n: w.detach().clone() for n, w in params.items()}
        plus = list(problem.plus)
        if not plus:
            return UpdateResult(log={"loss": [], "note": "no Q+ pairs"})
        with trainable(model, params.values()):
            epoch_losses = fit_pairs(
                model, tokenizer, plus, list(problem.minus), params.values(), p,
                self.target_logprobs, after_step=lambda: self.project_(params, w0),
            )  # fmt: skip
        log.debug("%s: target loss %s", self.name, epoch_losses)
        return UpdateResult(log={"loss": epoch_losses, "trained": sorted(params)})


@register_method
class FTM(_FineTune):
    """FT-M (KnowEdit, arXiv 2401.01286): fine-tune one layer's MLP down-projection with
    cross-entropy on the target answer tokens only (prompt masked)."""

    name = "ft_m"
    paper = "Zhang et al. 2024, KnowEdit/EasyEdit FT-M (arXiv 2401.01286)"
    Params = FTParams

    def target_logprobs(self, model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
        return answer_logprobs(model, batch, reduction="mean")


@register_method
class FTL(_FineTune):
    """FT-L (ROME's FT+L baseline, arXiv 2202.05262; KnowEdit arXiv 2401.01286): last-token
    objective on one layer's MLP down-projection with an L-infinity norm constraint."""

    name = "ft_l"
    paper = "Meng et al. 2022, ROME FT+L baseline (arXiv 2202.05262); Zhu et al. 2020"
    Params = FTLParams

    def target_logprobs(self, model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
        return last_token_target_logprobs(model, batch)

    def project_(self, params: dict[str, torch.nn.Parameter], w0: dict[str, torch.Tensor]):
        eps = self.params.norm_constraint
        if eps is None:
            return
        with torch.no_grad():
            for n, w in params.items():
                # ||W - W_0||_inf <= eps, elementwise clamp (Zhu et al. 2020, eq. 2).
                w.copy_(torch.clamp(w, min=w0[n] - eps, max=w0[n] + eps))
