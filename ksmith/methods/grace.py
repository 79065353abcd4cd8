"""GRACE: lifelong editing with a discrete key-value adaptor (Hartvigsen et al. 2023,
arXiv 2211.11031).

GRACE leaves the weights alone. Beside one module (here a block's MLP projection, as the
reference code wraps ``inner_params``) it keeps a *codebook* C = {(k_i, v_i, ε_i, y_i)}: keys
k_i are inputs h^{l-1} of that module, values v_i replace its output, ε_i is a deferral radius
and y_i the label the entry was written for. For a query h (the paper's deferral rule):

    i* = argmin_i d(h, k_i),   GRACE(h) = v_{i*}  if d(h, k_{i*}) ≤ ε_{i*},  else f_l(h)

with d the Euclidean distance: an input outside the radius of its nearest key goes through the
unchanged module, so the model is untouched there. An edit (x_t, y_t) takes as key the module
input at the last token of x_t and maintains the codebook (Algorithm 1):

- empty codebook, or d(h, k_{i*}) > ε_init + ε_{i*} (no overlap): add (h, v, ε_init, y_t);
- overlap with the same label, d > ε_{i*}: *expand*, ε_{i*} ← d ("coverage"), or move the key
  halfway to h and set ε_{i*} ← d ("moving_average"); the entry's value is trained further;
- overlap with a different label: *split*, add (h, v, d/2, y_t) and shrink ε_{i*} to d/2 (the
  reference code subtracts 1e-5 so the two balls do not touch).

The chosen entry's value v is then trained by gradient descent on the edit's loss with the
codebook in the forward pass (reference: Adam, lr 1.0, 100 iterations, cold init uniform [0,1)).

Queries are taken at every token position, each independently (causal: a position only sees
itself), so teacher-forced scoring, log-likelihood and cached generation agree; at generation
time this is what the reference's ``replace_last`` does at each step (its query is the newest
token). The codebook is an attachment
(`ksmith.methods.attach`): forward hooks, saved as ``g<i>/attach/`` and re-attached on load.
Every Q+ training pair is one edit (x_t, y_t); a batch of k requests is k edits in a row.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Literal

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
from ksmith.methods.train_utils import answer_logprobs, encode_pairs, model_device, trainable
from ksmith.models.arch import get_module, layer_path, num_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Relative slack of the deferral test d <= ε. Expansion sets ε to the distance of the query that
# triggered it, so that query, asked again (an efficacy probe is the edit's own prompt), lies on
# the boundary by construction, and whether it falls inside depended on the last bits of its
# hidden state: another batch composition (teacher-forced scoring vs generation) put one probe
# of 36,004 on either side (margins of +2e-7 and 0 alone, outside in the evaluation's batch; a
# radius of 1.75 on the default world model, k=100). 1e-3 is far above float32 rounding of a
# distance (about 1e-5 relative here) and far below the radii's scale; the nearest key still
# decides which entry answers.
RADIUS_RTOL = 1e-3


class GRACEParams(MethodParams):
    """GRACE hyper-parameters (defaults for the world model; specs/methods/grace.yaml)."""

    layer: int = Field(-1, description="block whose MLP projection gets the codebook")
    module: Literal["mlp_out", "mlp_in"] = Field(
        "mlp_out", description="which projection: keys are its input, values replace its output"
    )
    eps_init: float = Field(1.0, gt=0, description="ε_init: deferral radius of a new key")
    eps_expand: Literal["coverage", "moving_average"] = Field(
        "coverage", description="how a same-label overlap grows the nearest entry (Algorithm 1)"
    )
    value_init: Literal["cold", "warm"] = Field(
        "cold", description="a new value: uniform [0,1) (cold), or the module's output (warm)"
    )
    edit_lr: float = Field(1.0, gt=0, description="Adam learning rate of the value")
    n_iter: int = Field(100, ge=1, description="gradient steps per edit")
    stop_loss: float = Field(
        0.0, ge=0, description="stop an edit's value training below this loss (0: all n_iter)"
    )


class Codebook(Attachment):
    """GRACE's codebook on one module: keys (n, d_in), values (n, d_out), radii (n,), labels."""

    kind: ClassVar[str] = "grace"

    def __init__(
        self,
        model: torch.nn.Module,
        module_path: str,
        keys: torch.Tensor,
        values: torch.Tensor,
        epsilons: torch.Tensor,
        labels: list[str],
    ):
        super().__init__(model)
        self.module_path = module_path
        device = model_device(model)
        self.keys = keys.detach().to(device, torch.float32)
        self.values = values.detach().to(device, torch.float32)
        self.epsilons = epsilons.detach().to(device, torch.float32)
        self.labels = list(labels)
        # (entry index, value tensor) used instead of values[j] while that value is trained
        self._training: tuple[int, torch.Tensor] | None = None
        self.hook(get_module(model, module_path), self._forward_hook)

    @classmethod
    def empty(cls, model: torch.nn.Module, module_path: str) -> Codebook:
        w = get_module(model, module_path).weight
        d_in, d_out = _io_dims(model, module_path, w)
        z = torch.zeros
        return cls(model, module_path, z(0, d_in), z(0, d_out), z(0), [])

    def __len__(self) -> int:
        return len(self.labels)

    def num_parameters(self) -> int:
        return self.keys.numel() + self.values.numel() + self.epsilons.numel()

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        meta = {"module_path": self.module_path, "labels": self.labels}
        return meta, {"keys": self.keys, "values": self.values, "epsilons": self.epsilons}

    @classmethod
    def from_state(cls, model, meta, tensors) -> Codebook:
        n = len(meta["labels"])
        if not (len(tensors["keys"]) == len(tensors["values"]) == len(tensors["epsilons"]) == n):
            raise KsmithError("grace: codebook keys, values, radii and labels differ in length")
        return cls(
            model,
            meta["module_path"],
            tensors["keys"],
            tensors["values"],
            tensors["epsilons"],
            meta["labels"],
        )

    def nearest(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distance, index) of the nearest key to each row of h (N, d_in): (N,), (N,)."""
        d = torch.cdist(h.float(), self.keys, compute_mode="donot_use_mm_for_euclid_dist")  # (N, n)
        return d.min(dim=1)

    def _forward_hook(self, _module, args, out):
        if len(self) == 0:
            return None
        h = args[0]  # (B, T, d_in)
        dist, idx = self.nearest(h.reshape(-1, h.shape[-1]))  # (B*T,)
        # Deferral: the codebook answers within ε_{i*} (`RADIUS_RTOL`: float rounding).
        inside = dist <= self.epsilons[idx] * (1 + RADIUS_RTOL)
        values = self.values
        if self._training is not None:
            j, v = self._training
            values = torch.cat([values[:j], v[None], values[j + 1 :]])  # differentiable in v
        new = values[idx].to(out.dtype).view(out.shape)  # (B, T, d_out)
        return torch.where(inside.view(*out.shape[:-1], 1), new, out)

    def insert(
        self, h: torch.Tensor, label: str, value: torch.Tensor, p: GRACEParams
    ) -> tuple[int, str]:
        """Algorithm 1's codebook update for key h (d_in,) with label y; returns the index of
        the entry whose value is to be trained, and the action taken."""
        h = h.detach().float()
        if len(self) == 0:
            return self._add(h, value, p.eps_init, label), "add"
        dist, idx = self.nearest(h[None])
        d, i = float(dist[0]), int(idx[0])
        if d > p.eps_init + float(self.epsilons[i]):
            return self._add(h, value, p.eps_init, label), "add"
        if self.labels[i] != label:
            j = self._add(h, value, d / 2, label)
            self.epsilons[i] = d / 2 - 1e-5  # split: the two balls no longer overlap
            return j, "split"
        if d > float(self.epsilons[i]):
            if p.eps_expand == "moving_average":
                self.keys[i] = 0.5 * self.keys[i] + 0.5 * h
            self.epsilons[i] = d
            return i, "expand"
        return i, "covered"

    def _add(self, h: torch.Tensor, value: torch.Tensor, eps: float, label: str) -> int:
        dev = self.keys.device
        self.keys = torch.cat([self.keys, h[None].to(dev)])
        self.values = torch.cat([self.values, value.detach().float()[None].to(dev)])
        self.epsilons = torch.cat([self.epsilons, torch.tensor([eps], device=dev)])
        self.labels.append(label)
        return len(self) - 1


ATTACHMENTS.register(Codebook.kind)(Codebook)


def _io_dims(model: torch.nn.Module, module_path: str, weight: torch.Tensor) -> tuple[int, int]:
    from ksmith.models.arch import arch_of

    d_out, d_in = weight.shape
    return (d_out, d_in) if arch_of(model).conv1d else (d_in, d_out)  # Conv1D is (in, out)


@torch.no_grad()
def _key_and_output(
    model: torch.nn.Module, tokenizer, pair: TextPair, module: torch.nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """The module's input and its own output (without any codebook) at the last prompt token
    of `pair`: (d_in,), (d_out,)."""
    batch = encode_pairs(tokenizer, [pair.prompt], [pair.answer], device=model_device(model))
    t = int(batch.prompt_lengths[0]) - 1
    seen: dict[str, torch.Tensor] = {}

    def grab(m, args, _out):
        x = args[0][:, t : t + 1]  # (1, 1, d_in)
        seen["in"], seen["out"] = x[0, 0].float(), m.forward(x)[0, 0].float()  # no hooks

    handle = module.register_forward_hook(grab)
    try:
        model(input_ids=batch.input_ids[:, : t + 1])
    finally:
        handle.remove()
    return seen["in"], seen["out"]


@register_method
class GRACE(UpdateMethod):
    """A codebook of layer-input keys with deferral radii (arXiv 2211.11031, Algorithm 1)."""

    name: ClassVar[str] = "grace"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = (
        "Hartvigsen, Sankaranarayanan, Palangi, Kim, Ghassemi. Aging with GRACE: Lifelong Model "
        "Editing with Discrete Key-Value Adaptors. NeurIPS 2023. arXiv:2211.11031"
    )
    Params = GRACEParams

    def codebook(self, model: torch.nn.Module) -> Codebook:
        """The model's codebook at the configured module (created empty on first use)."""
        p: GRACEParams = self.params  # type: ignore[assignment]
        path = layer_path(model, p.layer % num_layers(model), p.module)
        for a in attached(model):
            if isinstance(a, Codebook) and a.module_path == path:
                return a
        return Codebook.empty(model, path)

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        p: GRACEParams = self.params  # type: ignore[assignment]
        pairs = list(problem.plus) or [
            TextPair(r.prompt, r.new_object or "", r.request_id) for r in problem.requests
        ]
        if any(not pair.answer for pair in pairs):
            raise KsmithError("grace: every edit needs a new object")
        book = self.codebook(model)
        module = get_module(model, book.module_path)
        device = model_device(model)
        actions: dict[str, int] = {}
        losses = []
        with trainable(model, []):
            for pair in pairs:
                h, out = _key_and_output(model, tokenizer, pair, module)
                init = out if p.value_init == "warm" else torch.rand(out.shape, device=device)
                j, action = book.insert(h, pair.answer, init, p)
                actions[action] = actions.get(action, 0) + 1
                losses.append(self._train_value(model, tokenizer, book, j, pair))
        log.debug("grace: %d entries after %s", len(book), actions)
        return UpdateResult(
            log={"codebook_size": len(book), "actions": actions, "final_loss": losses}
        )

    def _train_value(self, model, tokenizer, book: Codebook, j: int, pair: TextPair) -> float:
        """Train v_j so the model answers `pair` with the codebook in place (Adam, n_iter)."""
        p: GRACEParams = self.params  # type: ignore[assignment]
        batch = encode_pairs(tokenizer, [pair.prompt], [pair.answer], device=model_device(model))
        v = book.values[j].clone().requires_grad_(True)
        opt = torch.optim.Adam([v], lr=p.edit_lr)
        book._training = (j, v)
        loss = torch.tensor(float("nan"))
        try:
            for _ in range(p.n_iter):
                loss = -answer_logprobs(model, batch, reduction="mean").mean()
                if float(loss.detach()) < p.stop_loss:
                    break
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        finally:
            book._training = None
        with torch.no_grad():
            book.values[j] = v.detach()
        return float(loss.detach())
