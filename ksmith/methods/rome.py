"""ROME: Rank-One Model Editing (Meng et al. 2022, arXiv 2202.05262).

One fact is one key-value pair in a mid-layer MLP down-projection W (d_out, d_in). ROME inserts
(k*, v*) with the rank-one update that minimally disturbs the other keys, measured by their
uncentered second moment C = K Kᵀ (Eq. 2):

    Ŵ = W + Λ (C⁻¹ k*)ᵀ,    Λ = (v* − W k*) / ((C⁻¹ k*)ᵀ k*)

k* is the key at the subject's last token averaged over context prefixes (Eq. 3), v* the value
that makes the model say the new object (Eq. 4; `values.optimize_values`). As in the reference
implementation, v* is the value *at the request prompt* (its own output plus δ), so Λ is taken
at the prompt's own key k: Λ = (v* − W k) / ((C⁻¹k*)ᵀ k), which gives Ŵ k = v* exactly; with no
context prefixes k = k* and this is Eq. 2 verbatim. ``mom2_adjustment: false`` sets C = I
(EasyEdit's default): ∆ = (v* − W k) k*ᵀ / (k*ᵀ k).

ROME edits one fact at a time: a batch of requests is applied one after another, each on the
model left by the previous one, with C always from the unedited model.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from ksmith.methods.base import UpdateMethod, UpdateProblem, UpdateResult, register_method
from ksmith.methods.locate import (
    EditTarget,
    LocateParams,
    ModelState,
    add_to_weight,
    compute_keys,
    context_prefixes,
    edit_targets,
    moments_for,
    solve_device,
    state_for,
)
from ksmith.methods.values import optimize_values
from ksmith.models.arch import arch_of, get_module, layer_path, linear_weight_out_in, num_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class ROMEParams(LocateParams):
    """ROME hyper-parameters (defaults for the world model; see specs/methods/rome.yaml)."""

    layer: int = Field(0, description="the edited layer's index (negative counts from the end)")
    mom2_adjustment: bool = Field(
        True, description="weigh the update by C⁻¹ = E[kkᵀ]⁻¹ (paper); false: C = I (EasyEdit)"
    )
    mom2_regularization: float = Field(
        1e-2, ge=0, description="ridge added to C's diagonal, relative to its mean diagonal"
    )


def rank_one_update(
    W: torch.Tensor,
    k_star: torch.Tensor,
    v_star: torch.Tensor,
    C: torch.Tensor | None,
    k: torch.Tensor | None = None,
    v_of_k: torch.Tensor | None = None,
) -> torch.Tensor:
    """∆ = Λ (C⁻¹k*)ᵀ with Λ = (v* − W k) / ((C⁻¹k*)ᵀ k)  (ROME Eq. 2). Float64.

    W: (d_out, d_in); k*: (d_in,) the prefix-averaged key (Eq. 3), which sets the direction
    C⁻¹k*; k: (d_in,) the key the value v* (d_out,) is written for, default k* (then this is
    Eq. 2 verbatim). C: (d_in, d_in), or None for the identity. `v_of_k` is the module's current
    output at k (W k plus any bias); default W k. Returns ∆ (d_out, d_in) of rank one with
    (W + ∆) k = v*.
    """
    W, k_star, v = W.double(), k_star.double(), v_star.double()
    k = k_star if k is None else k.double()
    u = torch.linalg.solve(C.double(), k_star) if C is not None else k_star  # C⁻¹k*: (d_in,)
    current = v_of_k.double() if v_of_k is not None else W @ k  # (d_out,)
    Lambda = (v - current) / (u @ k)  # (d_out,)
    return torch.outer(Lambda, u)  # (d_out, d_in)


@register_method
class ROME(UpdateMethod):
    """Rank-one locate-then-edit (arXiv 2202.05262, Eq. 2)."""

    name: ClassVar[str] = "rome"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = (
        "Meng, Bau, Andonian, Belinkov. Locating and Editing Factual Associations in GPT. "
        "NeurIPS 2022. arXiv:2202.05262"
    )
    Params = ROMEParams

    def __init__(self, params: ROMEParams | None = None):
        super().__init__(params)
        self._state: ModelState | None = None

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        p: ROMEParams = self.params  # type: ignore[assignment]
        state = self._state = state_for(self._state, model)
        layer_path(model, p.layer, "mlp_out")  # validates the index before wrapping negatives
        layer = p.layer % num_layers(model)
        targets = edit_targets(problem, self.name)
        C = None
        if p.mom2_adjustment:
            C = moments_for(state, model, tokenizer, problem, p, [layer], self.name)[layer]
            if p.mom2_regularization:
                C = C + p.mom2_regularization * C.diagonal().mean() * torch.eye(C.shape[0])
        if state.prefixes is None:
            state.prefixes = context_prefixes(
                model, tokenizer, p.context_lengths, p.context_starts, problem.seed
            )
        log_out = {}
        for target in targets:
            log_out[target.prompt] = self._edit_one(model, tokenizer, target, layer, C, state)
        return UpdateResult(log={"layer": layer, "requests": log_out})

    def _edit_one(
        self,
        model,
        tokenizer,
        target: EditTarget,
        layer: int,
        C: torch.Tensor | None,
        state: ModelState,
    ) -> dict[str, float]:
        p: ROMEParams = self.params  # type: ignore[assignment]
        path = layer_path(model, layer, "mlp_out")
        assert state.prefixes is not None
        k_star = compute_keys(model, tokenizer, [target], layer, state.prefixes, p)[0]  # (d_in,)
        # v* is the value at the request prompt itself (v(prompt) + δ), so the pair written is
        # (k, v*) with k the prompt's own key, in the direction C⁻¹k* (as the reference code).
        k = compute_keys(model, tokenizer, [target], layer, [""], p)[0]  # (d_in,)
        v_star, vlog = optimize_values(model, tokenizer, [target], path, state.prefixes, p)
        module = get_module(model, path)
        W = linear_weight_out_in(module, arch_of(model)).detach()  # (d_out, d_in)
        with torch.no_grad():
            v_of_k = module(k.to(W.dtype)[None])[0].float()  # W k + b: (d_out,)
        dev = solve_device(model)
        delta = rank_one_update(
            W.to(dev),
            k_star.to(dev),
            v_star[0].to(dev),
            None if C is None else C.to(dev),
            k.to(dev),
            v_of_k.to(dev),
        )
        add_to_weight(model, layer, delta)
        return {**vlog, "delta_norm": float(delta.norm())}
