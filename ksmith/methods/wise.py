"""WISE: a side memory for lifelong editing, with routing, sharding and merging (Wang et al.
2024, arXiv 2405.14768).

WISE keeps the main memory, the value matrix W_v of one FFN (a block's MLP down-projection),
unchanged and writes edits into a *side memory* W_v' that starts as a copy. Here the
side memory is held as its difference τ = W_v' − W_v (d_out, d_in), so the side output for an
activation a (the projection's input) is W_v a + τ a.

Routing: the paper's activation score Δ_act(a) = ‖a (W_v' − W_v)‖₂ = ‖τ a‖₂ says whether an
input concerns an edit. The side memory answers when Δ_act ≥ ε, the main memory otherwise (then
the output is exactly the unedited one). ε = act_ratio · the smallest Δ_act of an edit's
in-scope tokens at the end of its training (``min_act() * act_ratio`` in the reference code,
EasyEdit's WISE, the authors' release; it also passes both outputs through the model's
activation function before the norm, where this follows the paper's definition).
Training adds to the edit's cross-entropy the paper's margin loss (α, β, γ = act_margin) that
pushes Δ_act of the edit's tokens above β, that of an irrelevant input (a Q- pair) below α, and
their difference above γ; as in the reference, each hinge term is the mean of its positive
entries, and the side memory is trained by SGD (edit_lr, n_iter), clamped element-wise to
W_v ± norm_constraint (weight decay acts on τ, i.e. towards the main memory).

Knowledge sharding and merging: edits are written ``shard_size`` at a time into a
fresh side memory τ_i, each shard updating only a random subset M_i (ratio ρ = mask_ratio) of
its entries (the gradient is masked); the shards are then merged with TIES (Yadav et al. 2023,
arXiv 2306.01708): trim each τ_i to its largest |entries| (``density``), elect a sign per entry
(the sign of the sum), and average the entries that agree with it.

Routing is decided per token (each position by its own Δ_act), so teacher-forced scoring, packed
batches and cached generation agree; the reference routes a whole sequence by its mean Δ_act
(the top-1 over tokens past 100 tokens). The side memory is an attachment
(`ksmith.methods.attach`): a forward hook, saved as ``g<i>/attach/`` and re-attached on load.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.attach import ATTACHMENTS, Attachment, attached
from ksmith.methods.base import (
    MethodParams,
    TextPair,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    register_method,
)
from ksmith.methods.train_utils import (
    answer_logprobs,
    encode_pairs,
    model_device,
    trainable,
)
from ksmith.models.arch import arch_of, get_module, layer_path, linear_weight_out_in, num_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class WISEParams(MethodParams):
    """WISE hyper-parameters (defaults for the world model; specs/methods/wise.yaml)."""

    layer: int = Field(-1, description="block whose MLP down-projection gets the side memory")
    mask_ratio: float = Field(0.2, gt=0, le=1, description="ρ: share of entries a shard updates")
    edit_lr: float = Field(1.0, gt=0, description="SGD learning rate of the side memory")
    n_iter: int = Field(70, ge=1, description="SGD steps per edit")
    stop_loss: float = Field(0.0, ge=0, description="stop an edit's training below this loss")
    weight_decay: float = Field(1e-5, ge=0, description="SGD weight decay (reference: 1e-5)")
    norm_constraint: float | None = Field(
        1.0, gt=0, description="clamp W_v' element-wise to W_v ± this (None: no clamp)"
    )
    act_margin: tuple[float, float, float] = Field(
        (5.0, 20.0, 10.0), description="(α, β, γ): irrelevant Δ_act < α, edit Δ_act > β, gap > γ"
    )
    act_ratio: float = Field(0.88, gt=0, description="ε = act_ratio x smallest edit Δ_act")
    shard_size: int = Field(10, ge=1, description="edits per shard (reference save_freq)")
    density: float = Field(0.53, gt=0, le=1, description="TIES: share of entries a shard keeps")


def ties_merge(taus: list[torch.Tensor], density: float) -> torch.Tensor:
    """TIES merging of task vectors (arXiv 2306.01708): trim each to its `density` largest
    magnitudes, elect the sign of the sum per entry, average the kept entries of that sign."""
    trimmed = []
    for tau in taus:
        k = max(1, int(round(density * tau.numel())))
        keep = torch.zeros(tau.numel(), dtype=torch.bool, device=tau.device)
        keep[tau.abs().flatten().topk(k).indices] = True  # the k largest |entries|
        trimmed.append(torch.where(keep.view(tau.shape), tau, torch.zeros_like(tau)))
    stack = torch.stack(trimmed)  # (m, ...)
    sign = torch.sign(stack.sum(dim=0))  # elected sign per entry
    agree = (torch.sign(stack) == sign) & (stack != 0)
    count = agree.sum(dim=0).clamp(min=1)
    return (stack * agree).sum(dim=0) / count


class SideMemory(Attachment):
    """WISE's side memory on one down-projection: the merged τ (d_out, d_in) and threshold ε,
    plus, while editing, the finished shards and the one being written."""

    kind: ClassVar[str] = "wise"

    def __init__(self, model, module_path: str, tau: torch.Tensor, epsilon: float):
        super().__init__(model)
        self.module_path = module_path
        self.tau = tau.detach().to(model_device(model), torch.float32)  # merged side memory
        self.epsilon = float(epsilon)
        self.shards: list[torch.Tensor] = []  # finished shards' τ_i
        self.current: torch.Tensor | None = None  # τ of the shard being written
        self.mask: torch.Tensor | None = None  # its gradient mask M_i
        self.in_shard = 0  # edits written into the current shard
        self.generator: torch.Generator | None = None  # draws the shards' masks
        self.edits = 0
        self.training: torch.Tensor | None = None  # τ used for every token while training
        self.captured: list[tuple[torch.Tensor, torch.Tensor]] = []  # (a, τa) while training
        self.hook(get_module(model, module_path), self._forward_hook)

    @classmethod
    def empty(cls, model, module_path: str) -> SideMemory:
        w = linear_weight_out_in(get_module(model, module_path), arch_of(model))
        return cls(model, module_path, torch.zeros(w.shape), float("inf"))

    def num_parameters(self) -> int:
        return self.tau.numel() + 1

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        meta = {"module_path": self.module_path, "epsilon": self.epsilon, "edits": self.edits}
        return meta, {"tau": self.tau}

    @classmethod
    def from_state(cls, model, meta, tensors) -> SideMemory:
        memory = cls(model, meta["module_path"], tensors["tau"], meta["epsilon"])
        memory.edits = int(meta.get("edits", 0))
        return memory

    def activation_score(self, a: torch.Tensor, tau: torch.Tensor | None = None):
        """(τa, Δ_act = ‖τa‖₂) per row of a (..., d_in): (..., d_out), (...)."""
        delta = a.float() @ (self.tau if tau is None else tau).T
        return delta, delta.norm(dim=-1)

    def _forward_hook(self, _module, args, out):
        a = args[0]
        if self.training is not None:  # editing: the shard's side memory answers everywhere
            delta, _ = self.activation_score(a, self.training)
            self.captured.append((a, delta))
            return out + delta.to(out.dtype)
        if not math.isfinite(self.epsilon):
            return None  # nothing written yet
        delta, score = self.activation_score(a)
        use = (score >= self.epsilon).unsqueeze(-1)  # route: side memory iff Δ_act ≥ ε
        return torch.where(use, out + delta.to(out.dtype), out)

    def merge(self, density: float) -> None:
        """τ ← TIES of the finished shards and the current one (a single shard as it is)."""
        parts = [*self.shards, *([self.current] if self.current is not None else [])]
        if parts:
            self.tau = parts[0].clone() if len(parts) == 1 else ties_merge(parts, density)


ATTACHMENTS.register(SideMemory.kind)(SideMemory)


def _hinge_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of the positive entries (0 if none), as the reference code's margin terms."""
    pos = x[x > 0]
    return pos.mean() if pos.numel() else x.new_zeros(())


@register_method
class WISE(UpdateMethod):
    """Side memory with activation routing, sharding and TIES merging (arXiv 2405.14768)."""

    name: ClassVar[str] = "wise"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = (
        "Wang, Li, Yao, Huang, Chen, Zhang. WISE: Rethinking the Knowledge Memory for Lifelong "
        "Model Editing of Large Language Models. NeurIPS 2024. arXiv:2405.14768"
    )
    Params = WISEParams

    def memory(self, model: torch.nn.Module) -> SideMemory:
        p: WISEParams = self.params  # type: ignore[assignment]
        path = layer_path(model, p.layer % num_layers(model), "mlp_out")
        for a in attached(model):
            if isinstance(a, SideMemory) and a.module_path == path:
                return a
        return SideMemory.empty(model, path)

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        p: WISEParams = self.params  # type: ignore[assignment]
        pairs = list(problem.plus) or [
            TextPair(r.prompt, r.new_object or "", r.request_id) for r in problem.requests
        ]
        if any(not pair.answer for pair in pairs):
            raise KsmithError("wise: every edit needs a new object")
        minus = list(problem.minus)
        mem = self.memory(model)
        if mem.generator is None:  # one stream of shard masks per side memory
            mem.generator = torch.Generator().manual_seed(problem.seed)
        losses, mins = [], []
        with trainable(model, []):
            for i, pair in enumerate(pairs):
                if mem.current is None:  # a new shard: fresh side memory, fresh mask M_i
                    mem.current = torch.zeros_like(mem.tau)
                    mem.mask = (
                        torch.rand(mem.tau.shape, generator=mem.generator) < p.mask_ratio
                    ).to(mem.tau.device, mem.tau.dtype)
                irrelevant = minus[(mem.edits + i) % len(minus)] if minus else None
                loss, min_act = self._edit(model, tokenizer, mem, pair, irrelevant)
                losses.append(loss)
                mins.append(min_act)
                mem.in_shard += 1
                if mem.in_shard == p.shard_size:
                    mem.shards.append(mem.current)
                    mem.current, mem.mask, mem.in_shard = None, None, 0
        mem.edits += len(pairs)
        new_eps = p.act_ratio * min(mins)
        mem.epsilon = min(mem.epsilon, new_eps)
        mem.merge(p.density)
        return UpdateResult(
            log={
                "final_loss": losses,
                "epsilon": mem.epsilon,
                "shards": len(mem.shards) + (mem.current is not None),
                "edits": mem.edits,
            }
        )

    def _edit(self, model, tokenizer, mem: SideMemory, pair: TextPair, irrelevant):
        """Train the current shard on one edit; returns (last loss, min in-scope Δ_act)."""
        p: WISEParams = self.params  # type: ignore[assignment]
        alpha, beta, gamma = p.act_margin
        device = model_device(model)
        rows = [pair] + ([irrelevant] if irrelevant is not None else [])
        batch = encode_pairs(
            tokenizer, [r.prompt for r in rows], [r.answer for r in rows], device=device
        )
        # in scope: the edit's positions whose outputs predict its answer tokens
        start = int(batch.prompt_lengths[0]) - 1
        end = int(batch.attention_mask[0].sum()) - 1
        assert mem.current is not None and mem.mask is not None
        tau = mem.current.clone().requires_grad_(True)
        opt = torch.optim.SGD([tau], lr=p.edit_lr, weight_decay=p.weight_decay)
        loss_value, min_act = float("nan"), float("inf")
        mem.training = tau
        try:
            for _ in range(p.n_iter):
                mem.captured.clear()
                logp = answer_logprobs(model, batch, reduction="mean")[:1]  # the edit row only
                (_a, delta) = mem.captured[0]
                score = delta.norm(dim=-1)  # (B, T) Δ_act per token
                inside = score[0, start:end]
                loss = -logp.mean() + _hinge_mean(beta - inside)
                if irrelevant is not None:
                    outside = score[1, : int(batch.attention_mask[1].sum())]
                    loss = loss + _hinge_mean(outside - alpha)
                    loss = loss + _hinge_mean(gamma - (inside[:, None] - outside[None, :]))
                loss_value, min_act = float(loss.detach()), float(inside.detach().min())
                if loss_value < p.stop_loss:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                tau.grad.mul_(mem.mask)  # knowledge sharding: only M_i is written
                opt.step()
                if p.norm_constraint is not None:
                    with torch.no_grad():
                        tau.clamp_(-p.norm_constraint, p.norm_constraint)
            with torch.no_grad():  # Δ_act of the edit under the trained shard
                mem.captured.clear()
                model(input_ids=batch.input_ids[:1], attention_mask=batch.attention_mask[:1])
                min_act = float(mem.captured[0][1].norm(dim=-1)[0, start:end].min())
        finally:
            mem.training = None
            mem.captured.clear()
        mem.current = tau.detach()
        return loss_value, min_act
