"""Gradient ascent (GA) and gradient difference (GradDiff) on the forget likelihood.

GA (Jang et al. 2022, arXiv 2210.01504; the TOFU baseline, Maini et al. 2024, arXiv 2401.06121,
Sec. 4): maximise the forget set's negative log-likelihood, i.e. minimise

    L_GA(theta) = -E_{(x, y) in D_f} [ -log pi_theta(y | x) ] = E_{D_f} [ log pi_theta(y | x) ].

GradDiff (TOFU, "gradient difference"; open-unlearning's ``GradDiff``) adds the retain NLL:

    L_GD(theta) = -L_NLL(D_f; theta) + alpha * L_NLL(D_r; theta).

Both average token log-probabilities over the answer tokens of a mini-batch, as TOFU does.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ksmith.methods.base import MethodParams, register_method
from ksmith.methods.train_utils import PairBatch
from ksmith.methods.unlearn.common import GradientUnlearning, RetainParams, TrainParams, nll


class GAParams(TrainParams):
    """GA has no retain term: only the shared optimisation knobs."""


class GradDiffParams(RetainParams):
    """GradDiff: the shared knobs plus the retain weight alpha."""


@register_method
class GradientAscent(GradientUnlearning):
    """GA: ascend the forget NLL, L = -L_NLL(D_f) (TOFU, arXiv 2401.06121)."""

    name: ClassVar[str] = "ga"
    paper: ClassVar[str] = (
        "Jang et al. 2022, Knowledge Unlearning for Mitigating Privacy Risks in Language Models, "
        "arXiv 2210.01504; TOFU, Maini et al. 2024, arXiv 2401.06121"
    )
    Params: ClassVar[type[MethodParams]] = GAParams
    uses_retain: ClassVar[bool] = False

    def forget_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        return -nll(model, batch)


@register_method
class GradDiff(GradientUnlearning):
    """GradDiff: L = -L_NLL(D_f) + alpha * L_NLL(D_r) (TOFU, arXiv 2401.06121)."""

    name: ClassVar[str] = "graddiff"
    paper: ClassVar[str] = "TOFU, Maini et al. 2024, arXiv 2401.06121 (gradient difference)"
    Params: ClassVar[type[MethodParams]] = GradDiffParams

    def forget_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        return -nll(model, batch)
