"""Negative preference optimization (NPO) and its reference-free variant SimNPO.

NPO (Zhang, Lin, Bai, Mei 2024, arXiv 2404.05868, Eq. 3): with pi_ref the model before
unlearning,

    L_NPO(theta) = (2 / beta) E_{(x, y) in D_f} [ log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta) ],

whose gradient is GA's reweighted per example by W = 2 pi_theta^beta / (pi_theta^beta +
pi_ref^beta) (the paper's gradient analysis): W -> 0 as the example is forgotten, which is what keeps NPO
from GA's catastrophic collapse. NPO+RT adds alpha * L_NLL(D_r). pi(y|x) is the probability of
the whole answer (sum of token log-probs); log pi_ref is computed once before the first step, so
no second model copy is kept.

SimNPO (Fan et al. 2024, arXiv 2410.07163, the SimNPO objective) drops the reference and normalises by length:

    L_SimNPO(theta) = -(2 / beta) E_{D_f} [ log sigma( -(beta / |y|) log pi_theta(y|x) - gamma ) ],

plus alpha * L_NLL(D_r), where |y| is the number of answer tokens and gamma a reward margin.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from ksmith.methods.base import MethodParams, register_method
from ksmith.methods.train_utils import PairBatch, answer_logprobs
from ksmith.methods.unlearn.common import (
    GradientUnlearning,
    RetainParams,
    answer_lengths,
    row_chunks,
)


class NPOParams(RetainParams):
    """NPO+RT: beta (inverse temperature of the preference loss) and the retain weight."""

    beta: float = Field(1.0, gt=0, description="NPO inverse temperature beta (Eq. 3)")


class SimNPOParams(RetainParams):
    """SimNPO: beta, the reward margin gamma, and the retain weight."""

    beta: float = Field(2.5, gt=0, description="SimNPO inverse temperature beta")
    gamma: float = Field(0.0, ge=0, description="SimNPO reward margin gamma")


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """Eq. 3 of arXiv 2404.05868 on sequence log-probs (B,): (2/beta) mean log(1 + r^beta).

    log(1 + exp(z)) = softplus(z) with z = beta * (log pi_theta - log pi_ref): stable for any z.
    """
    return (2.0 / beta) * F.softplus(beta * (logp - logp_ref)).mean()


def simnpo_loss(
    logp: torch.Tensor, n_tokens: torch.Tensor, beta: float, gamma: float
) -> torch.Tensor:
    """SimNPO (arXiv 2410.07163): -(2/beta) mean log sigma(-(beta/|y|) log pi_theta - gamma)."""
    return -(2.0 / beta) * F.logsigmoid(-(beta / n_tokens) * logp - gamma).mean()


@register_method
class NPO(GradientUnlearning):
    """NPO+RT: L = L_NPO(D_f; theta, theta_ref) + alpha * L_NLL(D_r) (arXiv 2404.05868)."""

    name: ClassVar[str] = "npo"
    paper: ClassVar[str] = (
        "Zhang et al. 2024, Negative Preference Optimization: From Catastrophic Collapse to "
        "Effective Unlearning, arXiv 2404.05868"
    )
    Params: ClassVar[type[MethodParams]] = NPOParams

    def prepare(self, model, forget, retain, gen) -> None:
        # log pi_ref(y|x) for every forget row, (N,): the model before any step is the reference.
        self.logp_ref = torch.cat([answer_logprobs(model, part) for part in row_chunks(forget)])

    def release(self) -> None:
        self.logp_ref = None

    def forget_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        logp = answer_logprobs(model, batch)  # (B,) log pi_theta(y|x)
        return npo_loss(logp, self.logp_ref[idx], self.params.beta)  # type: ignore[attr-defined]


@register_method
class SimNPO(GradientUnlearning):
    """SimNPO: reference-free, length-normalised NPO plus alpha * L_NLL(D_r) (arXiv 2410.07163)."""

    name: ClassVar[str] = "simnpo"
    paper: ClassVar[str] = (
        "Fan et al. 2024, Simplicity Prevails: Rethinking Negative Preference Optimization for "
        "LLM Unlearning, arXiv 2410.07163"
    )
    Params: ClassVar[type[MethodParams]] = SimNPOParams

    def forget_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        logp = answer_logprobs(model, batch)  # (B,) log pi_theta(y|x)
        p = self.params
        return simnpo_loss(logp, answer_lengths(batch).float(), p.beta, p.gamma)  # type: ignore[attr-defined]
