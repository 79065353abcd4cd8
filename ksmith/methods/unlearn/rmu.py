"""Representation misdirection for unlearning (RMU).

Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning",
arXiv 2403.03218, Sec. 5 (the RMU forget and retain losses). With M(t) the hidden state after
block l, M_frozen the same in the model before unlearning, u a fixed random unit vector and c
the steering coefficient:

    L_forget = E_{x in D_f} (1/L_x) sum_{t in x} || M_updated(t) - c u ||_2^2           (forget)
    L_retain = E_{x in D_r} (1/L_x) sum_{t in x} || M_updated(t) - M_frozen(t) ||_2^2   (retain)
    L        = L_forget + alpha * L_retain

Only the MLP output (down) projection weights of layers l-2, l-1, l are updated, as in the
paper's code. u is drawn once from U[0, 1)^d and normalised, seeded from the problem; the frozen
retain activations are computed once up front, so no second model copy is kept. The squared norm
is averaged over the d hidden units (a constant 1/d on both terms, absorbed by alpha and lr).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.base import MethodParams, register_method
from ksmith.methods.train_utils import PairBatch
from ksmith.methods.unlearn.common import (
    GradientUnlearning,
    RetainParams,
    predict_mask,
    row_chunks,
    select,
)
from ksmith.models.arch import get_module, layer_path, num_layers


class RMUParams(RetainParams):
    """RMU: the steered layer l, the updated layers, c, and the retain weight alpha."""

    layer: int = Field(
        -1, description="layer l whose output is steered (negative counts from the end)"
    )
    update_layers: tuple[int, ...] | None = Field(
        None,
        description="layers whose MLP down-projection weight is updated; null = l-2, l-1, l",
    )
    steering_coeff: float = Field(
        20.0, gt=0, description="steering coefficient c of the forget loss"
    )
    positions: Literal["all", "answer"] = Field(
        "all",
        description="tokens the activation losses average over: every real token of prompt "
        "and answer (the paper) or only the positions that predict answer tokens",
    )


def layer_output(model: torch.nn.Module, batch: PairBatch, layer: int, grad: bool) -> torch.Tensor:
    """Hidden state after block `layer` for `batch`, (B, T, d), via a forward hook."""
    block = get_module(model, layer_path(model, layer, ""))
    cache: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        cache.append(output[0] if isinstance(output, tuple) else output)

    handle = block.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grad):
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    return cache[0]


def masked_mse(h: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over rows of (1/L_x) sum_t mean_d (h - target)^2; h (B, T, d), mask (B, T)."""
    per_token = ((h - target) ** 2).mean(dim=-1)  # (B, T)
    m = mask.to(per_token.dtype)
    return ((per_token * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)).mean()


@register_method
class RMU(GradientUnlearning):
    """RMU: steer layer-l activations on D_f to c u, keep them on D_r (arXiv 2403.03218)."""

    name: ClassVar[str] = "rmu"
    paper: ClassVar[str] = (
        "Li et al. 2024, The WMDP Benchmark: Measuring and Reducing Malicious Use With "
        "Unlearning, arXiv 2403.03218"
    )
    Params: ClassVar[type[MethodParams]] = RMUParams

    def _layer(self, model: torch.nn.Module) -> int:
        n = num_layers(model)
        layer = self.params.layer  # type: ignore[attr-defined]
        if not -n <= layer < n:
            raise KsmithError(f"rmu: params.layer={layer} out of range for a {n}-layer model")
        return layer % n

    def update_layers(self, model: torch.nn.Module) -> list[int]:
        """The layers whose MLP down-projection moves (declared, or l-2..l)."""
        n, layer = num_layers(model), self._layer(model)
        declared = self.params.update_layers  # type: ignore[attr-defined]
        if declared is None:
            return [i for i in (layer - 2, layer - 1, layer) if i >= 0]
        bad = [i for i in declared if not -n <= i < n]
        if bad:
            raise KsmithError(f"rmu: params.update_layers {bad} out of range ({n} layers)")
        return sorted({i % n for i in declared})

    def trainable(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        wanted = {layer_path(model, i, "mlp_out") + ".weight" for i in self.update_layers(model)}
        return [(n, p) for n, p in model.named_parameters() if n in wanted]

    def _mask(self, batch: PairBatch) -> torch.Tensor:
        if self.params.positions == "answer":  # type: ignore[attr-defined]
            return predict_mask(batch)
        return batch.attention_mask.bool()

    def prepare(self, model, forget, retain, gen) -> None:
        self.l = self._layer(model)
        # one forward pass gives the width d, device and dtype of M(t)
        h = layer_output(model, select(forget, torch.arange(1)), self.l, grad=False)
        d = h.shape[-1]
        u = torch.rand(d, generator=gen)  # U[0, 1)^d as in the paper's code
        self.u = (u / u.norm()).to(h.device, h.dtype)  # (d,) unit vector
        # M_frozen on the whole retain set, (N_r, T_r, d), before any step.
        self.h_frozen = None
        if retain is not None:
            self.h_frozen = torch.cat(
                [layer_output(model, part, self.l, grad=False) for part in row_chunks(retain)]
            )

    def release(self) -> None:
        self.h_frozen = None

    def forget_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        h = layer_output(model, batch, self.l, grad=True)  # (B, T, d)
        c = self.params.steering_coeff  # type: ignore[attr-defined]
        return masked_mse(h, c * self.u, self._mask(batch))

    def retain_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        assert self.h_frozen is not None
        h = layer_output(model, batch, self.l, grad=True)  # (B, T, d)
        frozen = self.h_frozen[idx, : h.shape[1]]  # (B, T, d)
        return masked_mse(h, frozen, self._mask(batch))
