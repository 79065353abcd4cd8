"""AlphaEdit: null-space constrained knowledge editing (Fang et al. 2025, arXiv 2410.02355).

MEMIT trades the new facts against preserved knowledge K₀ inside one least-squares objective.
AlphaEdit removes the trade-off: it projects the update onto the null space of the preserved
keys, so (W + ∆P) K₀ = W K₀ exactly, and only fits the new keys K₁ while not undoing the keys
K_p written by earlier edits (sequential, lifelong editing). Per layer (Eq. 12-14):

    P  = Û Ûᵀ,  Û = eigenvectors of K₀K₀ᵀ (∝ E[kkᵀ]) with eigenvalue < threshold    (Eq. 8-9)
    ∆P = R K₁ᵀ P (K_p K_pᵀ P + K₁ K₁ᵀ P + α I)⁻¹                                     (Eq. 14)

with the residual R spread over layers as in MEMIT. α is the reference code's ``L2`` (the
paper's identity term has α = 1). Because P is a projection, ∆P = ∆P·P, hence ∆P K₀ = 0 for
keys in the span of K₀. The running sum K_p K_pᵀ lives in the method instance, per model object,
and starts empty at each `apply` (one group of the runner: groups are independent replicas from
the base weights); ``reset()`` clears all per-model state.
"""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.base import register_method
from ksmith.methods.locate import moments_for, solve_device, state_for
from ksmith.methods.memit import SpreadEditor, SpreadParams

log = logging.getLogger(__name__)


class AlphaEditParams(SpreadParams):
    """AlphaEdit hyper-parameters (defaults for the world model; specs/methods/alphaedit.yaml)."""

    nullspace_threshold: float = Field(
        1e-2, gt=0, description="eigenvalues of E[kkᵀ] below this span the preserved null space"
    )
    nullspace_scale: Literal["absolute", "relative"] = Field(
        "relative",
        description="absolute: compare eigenvalues to the threshold (paper); relative: to the "
        "threshold times the largest eigenvalue",
    )
    L2: float = Field(0.01, gt=0, description="α, weight of the ‖∆P‖² term (reference code L2)")


def null_space_projection(C0: torch.Tensor, threshold: float) -> torch.Tensor:
    """P = Û Ûᵀ onto the eigenvectors of the symmetric C0 (d, d) with eigenvalue < threshold
    (AlphaEdit Eq. 8-9). Float64 (d, d)."""
    eigvals, U = torch.linalg.eigh(C0.double())  # ascending eigenvalues, U: (d, d)
    U_hat = U[:, eigvals < threshold]  # (d, r)
    return U_hat @ U_hat.T


def alphaedit_delta(
    R: torch.Tensor, K1: torch.Tensor, P: torch.Tensor, Kp_Kp: torch.Tensor, alpha: float
) -> torch.Tensor:
    """∆P = R K₁ᵀ P (K_pK_pᵀ P + K₁K₁ᵀ P + α I)⁻¹ (AlphaEdit Eq. 14). Float64.

    R: (d_out, k); K1: (d_in, k); P: (d_in, d_in) projection; Kp_Kp: (d_in, d_in) running sum of
    earlier edited keys' outer products. Returns (d_out, d_in). Computed as the transpose of
    (P (K₁K₁ᵀ + K_pK_pᵀ) + α I)⁻¹ P K₁ Rᵀ, using Pᵀ = P.
    """
    R, K1, P, Kp_Kp = R.double(), K1.double(), P.double(), Kp_Kp.double()
    eye = torch.eye(P.shape[0], dtype=P.dtype, device=P.device)
    A = P @ (K1 @ K1.T + Kp_Kp) + alpha * eye  # (d_in, d_in)
    return torch.linalg.solve(A, P @ K1 @ R.T).T  # (d_out, d_in)


@register_method
class AlphaEdit(SpreadEditor):
    """Null-space projected MEMIT with a lifelong key cache (arXiv 2410.02355, Eq. 14)."""

    name: ClassVar[str] = "alphaedit"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = (
        "Fang, Jiang, Wang, Ma, Shi, Wang, He, Chua. AlphaEdit: Null-Space Constrained "
        "Knowledge Editing for Language Models. ICLR 2025. arXiv:2410.02355"
    )
    Params = AlphaEditParams

    def apply(self, model, tokenizer, problem):
        """One group: a stream of edits of its own from the base weights (the runner restores
        them between groups, on the same model object), so K_p K_pᵀ starts empty here and
        grows only within the group (sequential mode). Without the reset a group's update
        depended on which groups came before it in the run."""
        self._state = state_for(self._state, model)
        for cache in self._state.extra.get("Kp_Kp", {}).values():
            cache.zero_()
        return super().apply(model, tokenizer, problem)

    def _prepare(self, model, tokenizer, problem, state, layers) -> None:
        p: AlphaEditParams = self.params  # type: ignore[assignment]
        moments = moments_for(state, model, tokenizer, problem, p, layers, self.name)
        P = state.extra.setdefault("P", {})
        cache = state.extra.setdefault("Kp_Kp", {})
        dev = solve_device(model)
        for layer in layers:
            if layer in P:
                continue
            C0 = moments[layer].to(dev)
            cut = p.nullspace_threshold
            if p.nullspace_scale == "relative":
                cut *= float(torch.linalg.eigvalsh(C0.double()).max())
            P[layer] = null_space_projection(C0, cut)
            rank = int(round(float(P[layer].trace())))
            if rank == 0:
                raise KsmithError(
                    f"alphaedit: the null space of E[kkᵀ] at layer {layer} is empty (no "
                    f"eigenvalue below {cut:.3g}); raise params.nullspace_threshold or set "
                    "params.nullspace_scale: relative in specs/methods/alphaedit.yaml"
                )
            log.info("layer %d: null space of dimension %d of %d", layer, rank, C0.shape[0])
            cache[layer] = torch.zeros_like(P[layer])

    def _layer_delta(self, state, i, layer, R, K1) -> torch.Tensor:
        p: AlphaEditParams = self.params  # type: ignore[assignment]
        return alphaedit_delta(R, K1, state.extra["P"][layer], state.extra["Kp_Kp"][layer], p.L2)

    def _after(self, model, tokenizer, state, targets, layers) -> None:
        """K_p K_pᵀ += K₁ K₁ᵀ with the keys as they are after the edit (reference code)."""
        for layer in layers:
            K1 = self._keys(model, tokenizer, state, targets, layer).T
            K1 = K1.to(state.extra["Kp_Kp"][layer].device).double()
            state.extra["Kp_Kp"][layer] += K1 @ K1.T
