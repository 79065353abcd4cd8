"""Unlearning methods: GA, GradDiff, NPO, SimNPO, RMU, IdK fine-tuning and ReLearn.

Importing this package registers each method in `ksmith.methods.METHODS` under its paper's name
(``ga``, ``graddiff``, ``npo``, ``simnpo``, ``rmu``, ``idk``, ``relearn``). Default
hyper-parameters live in ``specs/methods/<name>.yaml``.
"""

from ksmith.methods.unlearn.common import (
    GradientUnlearning,
    RetainParams,
    TrainParams,
    forget_view,
    nll,
)
from ksmith.methods.unlearn.ga import GAParams, GradDiff, GradDiffParams, GradientAscent
from ksmith.methods.unlearn.idk import IdKFineTune, IdKParams, ReLearn, ReLearnParams, alternatives
from ksmith.methods.unlearn.npo import NPO, NPOParams, SimNPO, SimNPOParams, npo_loss, simnpo_loss
from ksmith.methods.unlearn.rmu import RMU, RMUParams, layer_output

__all__ = [
    "NPO",
    "RMU",
    "GAParams",
    "GradDiff",
    "GradDiffParams",
    "GradientAscent",
    "GradientUnlearning",
    "IdKFineTune",
    "IdKParams",
    "NPOParams",
    "RMUParams",
    "ReLearn",
    "ReLearnParams",
    "RetainParams",
    "SimNPO",
    "SimNPOParams",
    "TrainParams",
    "alternatives",
    "forget_view",
    "layer_output",
    "nll",
    "npo_loss",
    "simnpo_loss",
]
