"""LoRA editing: low-rank adapters trained on the Q+ view, merged into the base weights.

Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv 2106.09685, eq. 3:
a frozen weight W_0 (d x k) gets a trainable update

    h = W_0 x + (alpha / r) * B A x,    B: (d, r) initialised to 0,  A: (r, k) random

so Delta W = (alpha / r) B A has rank <= r. As an editor (KnowEdit's LoRA/AdaLoRA baseline,
arXiv 2401.01286; Wu et al. 2023) the adapters sit on declared modules (``mlp_out``/``attn_out``
of the declared layers, paths from ``ksmith.models.arch``) and are trained with teacher-forced
cross-entropy on the target answer tokens (prompt masked, as FT-M), plus an optional retain
term on the Q- view (lambda_pres, ``retain_weight``).

Adapters come from ``peft``. After training they are merged (``merge_and_unload``), so the model
keeps its architecture and the runner stores an ordinary low-rank delta instead of a full model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.base import (
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    register_method,
)
from ksmith.methods.fit import FitParams, fit_pairs
from ksmith.methods.train_utils import (
    answer_logprobs,
    trainable,
)
from ksmith.models.arch import arch_of, layer_path, num_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ADAPTER = "ksmith"


class LoRAParams(FitParams):
    """LoRA editor hyper-parameters."""

    layers: tuple[int, ...] = Field(
        (), description="layers to adapt (negative: from the end); empty: every layer"
    )
    modules: tuple[Literal["mlp_out", "mlp_in", "attn_out"], ...] = Field(
        ("mlp_out",), min_length=1, description="block modules to adapt (arch table names)"
    )
    rank: int = Field(8, ge=1, description="r: rank of B A")
    alpha: float = Field(16.0, gt=0, description="alpha: the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter input")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate")


@register_method
class LoRA(UpdateMethod):
    """LoRA (Hu et al. 2021, arXiv 2106.09685) as an editor; adapters merged after training."""

    name = "lora"
    kind = "edit"
    paper = "Hu et al. 2021, LoRA (arXiv 2106.09685)"
    Params = LoRAParams

    def target_modules(self, model: torch.nn.Module) -> list[str]:
        """Full dotted paths of the adapted modules."""
        p = self.params
        n = num_layers(model)
        for i in p.layers:
            if not -n <= i < n:
                raise KsmithError(f"lora: layer {i} out of range: the model has {n} layers")
        layers = sorted({i % n for i in p.layers}) if p.layers else list(range(n))
        return [layer_path(model, i, m) for i in layers for m in p.modules]

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        from peft import LoraConfig, get_peft_model

        p = self.params
        plus = list(problem.plus)
        if not plus:
            return UpdateResult(log={"loss": [], "note": "no Q+ pairs"})
        targets = self.target_modules(model)
        config = LoraConfig(
            r=p.rank,
            lora_alpha=p.alpha,
            lora_dropout=p.dropout,
            target_modules=targets,
            fan_in_fan_out=arch_of(model).conv1d,  # GPT-2 Conv1D stores (in, out)
            bias="none",
        )
        # `trainable(model, [])` records every base flag and restores it afterwards; peft
        # freezes the base and makes only the adapters trainable in between.
        with trainable(model, []):
            peft_model = get_peft_model(model, config, adapter_name=ADAPTER)
            merged = False
            try:
                adapters = [w for w in peft_model.parameters() if w.requires_grad]
                epoch_losses = fit_pairs(
                    peft_model,
                    tokenizer,
                    plus,
                    list(problem.minus),
                    adapters,
                    p,
                    lambda m, batch: answer_logprobs(m, batch, reduction="mean"),
                )
                # W <- W_0 + (alpha / r) B A, adapters removed: `model` is a plain model again.
                unloaded = peft_model.merge_and_unload()
                merged = True
            finally:
                if not merged:
                    peft_model.unload()  # drop the adapters, base weights untouched
        if unloaded is not model:
            raise KsmithError("lora: peft returned a different model object after merging")
        log.debug("lora: target loss %s", epoch_losses)
        return UpdateResult(log={"loss": epoch_losses, "adapted": targets})
