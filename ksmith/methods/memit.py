"""MEMIT: Mass-Editing Memory in a Transformer (Meng et al. 2023, arXiv 2210.07229).

A batch of k facts is written into the MLP down-projections of a range of layers ℛ at once.
The target hidden state z_i = h_i^L + δ_i at the last edited layer L is found per request by
gradient descent (Eq. 16; `values.optimize_values` at the block output). Then, layer by layer
(low to high), with K₁ (d_in, k) the current keys of the requests and R (d, k) the remaining
residual z − h^L divided over the layers left (Eq. 15-16),

    ∆ = R K₁ᵀ (C₀ + K₁ K₁ᵀ)⁻¹,    C₀ = λ E[k kᵀ]              (Eq. 14)

which is the least-squares solution of  min_∆ ‖(W + ∆) K₁ − (W K₁ + R)‖² + ‖∆ K₀‖²  with
K₀ K₀ᵀ = C₀ (the preserved keys). As in the reference code (``compute_ks.py``), a key is
averaged over the context prefixes within each prefix-length group and then across the groups
(the bare prompt is one group), and λ·E[kkᵀ] is formed in float64. AlphaEdit (alphaedit.py) reuses this driver with a
null-space-projected solve.
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
    context_prefix_groups,
    edit_targets,
    module_io,
    moments_for,
    solve_device,
    state_for,
)
from ksmith.methods.values import optimize_values
from ksmith.models.arch import layer_path, num_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class SpreadParams(LocateParams):
    """Parameters of editors that spread a batch of edits over several layers."""

    layers: tuple[int, ...] = Field(
        (0,), min_length=1, description="edited layers ℛ (negative counts from the end)"
    )


class MEMITParams(SpreadParams):
    """MEMIT hyper-parameters (defaults for the world model; see specs/methods/memit.yaml)."""

    mom2_update_weight: float = Field(
        10.0, gt=0, description="λ in C₀ = λ E[kkᵀ]: how strongly preserved keys resist"
    )


def memit_delta(R: torch.Tensor, K1: torch.Tensor, C0: torch.Tensor) -> torch.Tensor:
    """∆ = R K₁ᵀ (C₀ + K₁K₁ᵀ)⁻¹ (MEMIT Eq. 14). Float64.

    R: (d_out, k) residuals; K1: (d_in, k) keys; C0: (d_in, d_in) = λ E[kkᵀ]. Returns
    (d_out, d_in), the minimiser of ‖∆K₁ − R‖² + tr(∆ C₀ ∆ᵀ).
    """
    R, K1, C0 = R.double(), K1.double(), C0.double()
    A = C0 + K1 @ K1.T  # (d_in, d_in), symmetric positive definite
    return R @ torch.linalg.solve(A, K1).T  # (d_out, k) @ (k, d_in)


class SpreadEditor(UpdateMethod):
    """The MEMIT driver: v* at the last layer, then one closed-form solve per layer."""

    Params = SpreadParams

    def __init__(self, params: SpreadParams | None = None):
        super().__init__(params)
        self._state: ModelState | None = None

    def reset(self) -> None:
        """Forget the per-model state (statistics, prefixes, any running key cache)."""
        self._state = None

    def _layers(self, model: torch.nn.Module) -> list[int]:
        p: SpreadParams = self.params  # type: ignore[assignment]
        n = num_layers(model)
        for layer in p.layers:
            layer_path(model, layer, "mlp_out")  # validates against the model's depth
        return sorted({layer % n for layer in p.layers})

    def _keys(self, model, tokenizer, state: ModelState, targets, layer: int) -> torch.Tensor:
        """K₁ᵀ (k, d_in): keys averaged within each prefix-length group, then across groups
        (the reference ``compute_ks``)."""
        assert state.prefixes is not None
        return compute_keys(
            model, tokenizer, targets, layer, state.prefixes, self.params, state.prefix_groups
        )

    def _prepare(
        self, model, tokenizer, problem: UpdateProblem, state: ModelState, layers: list[int]
    ) -> None:
        """Per-method setup before any weight changes (statistics, projections)."""
        raise NotImplementedError

    def _layer_delta(
        self, state: ModelState, i: int, layer: int, R: torch.Tensor, K1: torch.Tensor
    ) -> torch.Tensor:
        """The update of layer ℛ[i] given residuals R (d_out, k) and keys K₁ (d_in, k)."""
        raise NotImplementedError

    def _after(
        self, model, tokenizer, state: ModelState, targets: list[EditTarget], layers: list[int]
    ) -> None:
        """Hook run after all layers are edited (AlphaEdit grows its key cache here)."""

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        p: SpreadParams = self.params  # type: ignore[assignment]
        state = self._state = state_for(self._state, model)
        layers = self._layers(model)
        targets = edit_targets(problem, self.name)
        self._prepare(model, tokenizer, problem, state, layers)
        if state.prefixes is None:
            groups = context_prefix_groups(
                model, tokenizer, p.context_lengths, p.context_starts, problem.seed
            )
            state.prefixes = [prefix for group in groups for prefix in group]
            state.prefix_groups = tuple(len(group) for group in groups)
        L = layers[-1]
        block_L = layer_path(model, L, "")
        z, vlog = optimize_values(model, tokenizer, targets, block_L, state.prefixes, p)  # (k, d)
        dev = solve_device(model)
        sites = [(t.prompt, t.subject) for t in targets]
        norms = {}
        for i, layer in enumerate(layers):
            K1 = self._keys(model, tokenizer, state, targets, layer).T  # (d_in, k)
            _, h_L = module_io(model, tokenizer, sites, block_L, p.fact_token, p.key_batch_size)
            R = (z - h_L).T / (len(layers) - i)  # (d, k): this layer's share of the residual
            delta = self._layer_delta(state, i, layer, R.to(dev), K1.to(dev))  # (d_out, d_in)
            add_to_weight(model, layer, delta)
            norms[layer] = float(delta.norm())
            log.debug(
                "layer %d: residual %.4f, update norm %.4f",
                layer,
                float(R.norm(dim=0).mean()),
                norms[layer],
            )
        self._after(model, tokenizer, state, targets, layers)
        return UpdateResult(log={"layers": layers, "v_star": vlog, "delta_norm": norms})


@register_method
class MEMIT(SpreadEditor):
    """Batch editing over a range of layers (arXiv 2210.07229, Eq. 14-16)."""

    name: ClassVar[str] = "memit"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = (
        "Meng, Sharma, Andonian, Belinkov, Bau. Mass-Editing Memory in a Transformer. "
        "ICLR 2023. arXiv:2210.07229"
    )
    Params = MEMITParams

    def _prepare(self, model, tokenizer, problem, state, layers) -> None:
        moments_for(state, model, tokenizer, problem, self.params, layers, self.name)

    def _layer_delta(self, state, i, layer, R, K1) -> torch.Tensor:
        p: MEMITParams = self.params  # type: ignore[assignment]
        # λ E[kkᵀ] formed in float64 (as the reference): E[kkᵀ] is ill-conditioned (cond. near
        # 1e7 on real models), and rounding λC to float32 alone moves ∆ by ~1e-3 relative.
        C0 = p.mom2_update_weight * state.moments[layer].to(R.device, torch.float64)
        return memit_delta(R, K1, C0)
