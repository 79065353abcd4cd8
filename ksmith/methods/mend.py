"""MEND: model editor networks with gradient decomposition (Mitchell, Lin, Bosselut, Finn,
Manning 2022, "Fast Model Editing at Scale", arXiv 2110.11309; reference code
eric-mitchell/mend, algs/mend.py and nn.py).

For a linear layer W_l of the base model and an edit example (x_e, y_e), the gradient of the
edit's loss is a sum of rank-1 outer products, one per token i of the batch (Sec. 3.1):

    grad_{W_l} L = sum_i delta_{l+1}^i u_l^i^T

with u_l^i the layer's input and delta_{l+1}^i the gradient of the loss at its output. MEND
never forms that matrix. A small editor network g_l maps each token's pair (u, delta),
concatenated as z_l = [u; delta] and standardised (the reference's running input
normalisation), to pseudo-activations and pseudo-deltas (u~, delta~) = g_l(z_l), with the
paper's low-rank residual MLP and per-layer scale s and shift o (Eq. 3):

    h_l    = z_l + relu(s^1_l * (U_1 V_1 z_l + b) + o^1_l)
    g(z_l) = h_l + relu(s^2_l * (U_2 V_2 h_l + b_2) + o^2_l)

U_1, U_2 start at zero, so g starts as the identity and MEND as a plain gradient step. One
network serves all edited layers of one shape; s, o are per layer. The edit (Eq. 5) is

    grad~_{W_l} = sum_i delta~^i u~^i^T,     W~_l = W_l - alpha_l grad~_{W_l}

with alpha_l a learned per-layer step size. So an applied update is a sum of rank-1 outer
products, one per token: its rank is at most the number of tokens of the edit batch.

Training (`ksmith.methods.trained.mend_train`, on the world's training split) minimises Eq. 4,
L = c_edit L_e + L_loc: L_e = -log p_{W~}(y_e | x'_e) over the edit's equivalence inputs
(its in-scope prompts), L_loc = KL(p_W(. | x_loc) || p_{W~}(. | x_loc)) over locality prompts;
only the editor networks and the alphas learn, the base model is frozen. ``ksmith
train-editor --method mend`` writes them; `ksmith update` applies a batch of requests as one
edit (the gradient of all of them together, as the reference edits a batch) and the runner
stores the weight delta.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.base import (
    MethodParams,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    register_method,
)
from ksmith.methods.train_utils import encode_pairs, model_device, token_logprobs
from ksmith.models.arch import arch_of, get_module, layer_path, num_layers

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PAPER = (
    "Mitchell, Lin, Bosselut, Finn, Manning. Fast Model Editing at Scale. ICLR 2022. "
    "arXiv:2110.11309"
)


class MENDParams(MethodParams):
    """MEND at update time (defaults: specs/methods/mend.yaml)."""

    editor_path: str | None = Field(
        None, description="the trained-editor folder (ksmith train-editor --method mend)"
    )


class MENDTraining(MethodParams):
    """How ``ksmith train-editor --method mend`` trains the editor networks."""

    layers: list[int] = Field([-1], description="blocks whose MLP projections MEND edits")
    modules: list[Literal["mlp_in", "mlp_out"]] = Field(
        ["mlp_in", "mlp_out"], description="which projections of each block"
    )
    rank: int = Field(32, ge=1, description="rank of U V in the editor MLP")
    edit_lr: float = Field(1e-3, gt=0, description="initial per-layer step size alpha_l")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate of the editor networks")
    lr_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the alphas")
    c_edit: float = Field(0.03, gt=0, description="weight of L_e against L_loc (Eq. 4)")
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_edits: int = Field(4, ge=1, description="edits per step (one batched edit)")
    n_train: int = Field(400, ge=2, description="training edits drawn from the split")
    n_heldout: int = Field(50, ge=1, description="held-out edits (on held-out subjects)")
    locality: int = Field(
        4, ge=0, description="locality prompts per split edit (half on its subject)"
    )
    log_every: int = Field(25, ge=1, description="a training-curve point every this many steps")
    seed: int = Field(0, description="seed of the split draw, the init and the batches")


class EditorMLP(torch.nn.Module):
    """g for one weight shape (Eq. 3): z (N, d_in + d_out) -> (u~, delta~), per-layer s, o."""

    def __init__(self, d_in: int, d_out: int, rank: int, n_layers: int):
        super().__init__()
        d = d_in + d_out
        self.d_in = d_in
        self.U1 = torch.nn.Parameter(torch.zeros(d, rank))  # zero: g starts as the identity
        self.V1 = torch.nn.Parameter(torch.randn(rank, d) / d**0.5)
        self.b1 = torch.nn.Parameter(torch.zeros(d))
        self.U2 = torch.nn.Parameter(torch.zeros(d, rank))
        self.V2 = torch.nn.Parameter(torch.randn(rank, d) / d**0.5)
        self.b2 = torch.nn.Parameter(torch.zeros(d))
        self.s1 = torch.nn.Parameter(torch.ones(n_layers, d))
        self.o1 = torch.nn.Parameter(torch.zeros(n_layers, d))
        self.s2 = torch.nn.Parameter(torch.ones(n_layers, d))
        self.o2 = torch.nn.Parameter(torch.zeros(n_layers, d))
        # running input statistics (the reference's `norm`), frozen after training
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("m2", torch.zeros(d))

    def observe(self, z: torch.Tensor) -> None:
        """Add a batch of inputs (N, d) to the running mean and variance (Chan et al.)."""
        z = z.detach().double()
        n, mean = float(z.shape[0]), z.mean(0)
        m2 = ((z - mean) ** 2).sum(0)
        total = self.count.double() + n
        delta = mean - self.mean.double()
        self.mean.copy_((self.mean + delta * n / total).float())
        self.m2.copy_((self.m2 + m2 + delta**2 * self.count * n / total).float())
        self.count.copy_(total.float())

    def forward(self, z: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        var = self.m2 / (self.count - 1).clamp(min=1)
        std = var.clamp(min=1e-12).sqrt()
        z = (z - self.mean) / std  # (N, d)
        # clamp, not relu: at initialisation every pre-activation is exactly 0, where relu's
        # gradient is 0 and nothing would learn; clamp's is 1 (as the reference's LRLinear)
        h = z + torch.clamp(
            self.s1[layer] * (z @ self.V1.T @ self.U1.T + self.b1) + self.o1[layer], min=0
        )
        g = h + torch.clamp(
            self.s2[layer] * (h @ self.V2.T @ self.U2.T + self.b2) + self.o2[layer], min=0
        )
        return g[:, : self.d_in], g[:, self.d_in :]  # u~ (N, d_in), delta~ (N, d_out)


class MENDEditor(torch.nn.Module):
    """The editor networks of every edited weight (one `EditorMLP` per weight shape, a mode
    per weight) and the per-weight step sizes alpha."""

    def __init__(self, paths: list[str], shapes: list[tuple[int, int]], rank: int, edit_lr: float):
        super().__init__()
        self.paths = list(paths)
        self.shapes = [tuple(s) for s in shapes]  # (d_in, d_out) of each weight
        groups: dict[str, list[int]] = {}
        for i, (d_in, d_out) in enumerate(self.shapes):
            groups.setdefault(f"{d_in}x{d_out}", []).append(i)
        self.key = {i: k for k, members in groups.items() for i in members}
        self.mode = {i: members.index(i) for members in groups.values() for i in members}
        self.nets = torch.nn.ModuleDict(
            {k: EditorMLP(*map(int, k.split("x")), rank, len(m)) for k, m in groups.items()}
        )
        self.alpha = torch.nn.Parameter(torch.full((len(paths),), float(edit_lr)))

    def config(self) -> dict[str, Any]:
        rank = next(iter(self.nets.values())).U1.shape[1]
        return {"paths": self.paths, "shapes": [list(s) for s in self.shapes], "rank": rank}

    @classmethod
    def from_saved(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> MENDEditor:
        try:
            editor = cls(config["paths"], config["shapes"], int(config["rank"]), 0.0)
            editor.load_state_dict(tensors)
        except (KeyError, RuntimeError, ValueError) as e:
            raise KsmithError(f"mend: the editor's weights do not fit its card: {e}") from e
        return editor.eval()

    def deltas(
        self, model: torch.nn.Module, batch, *, observe: bool = False
    ) -> dict[str, torch.Tensor]:
        """Parameter name -> the edit's weight change -alpha_l sum_i delta~^i u~^i^T, in the
        weight's own layout; differentiable in the editor, not in the model."""
        conv1d = arch_of(model).conv1d
        pairs = token_grads(model, self.paths, batch)
        out = {}
        for i, (path, (u, delta)) in enumerate(zip(self.paths, pairs, strict=True)):
            net = self.nets[self.key[i]]
            z = torch.cat([u, delta], dim=1)  # (N, d_in + d_out): one row per token
            if observe:
                net.observe(z)
            u_t, d_t = net(z, self.mode[i])  # (N, d_in), (N, d_out)
            grad = d_t.T @ u_t  # (d_out, d_in): a sum of N rank-1 outer products
            out[f"{path}.weight"] = -self.alpha[i] * (grad.T if conv1d else grad)
        return out


def edited_paths(model: torch.nn.Module, layers: list[int], modules: list[str]) -> list[str]:
    depth = num_layers(model)
    return [layer_path(model, i % depth, m) for i in layers for m in modules]


def weight_shape(model: torch.nn.Module, path: str) -> tuple[int, int]:
    """(d_in, d_out) of a projection (Conv1D stores its weight as (in, out))."""
    w = get_module(model, path).weight
    return (int(w.shape[0]), int(w.shape[1])) if arch_of(model).conv1d else (
        int(w.shape[1]), int(w.shape[0]))  # fmt: skip


def edit_loss(logits: torch.Tensor, batch) -> torch.Tensor:
    """Mean negative log-likelihood of the answer tokens of `batch` (the edit's loss)."""
    lp = token_logprobs(logits, batch.labels)  # (B, T)
    return -lp.sum() / batch.answer_mask.sum().clamp(min=1)


def token_grads(model, paths: list[str], batch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per edited weight, (u, delta) of every real token of `batch`: the layer's input and the
    gradient of the edit loss at its output, (N, d_in) and (N, d_out), detached."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def grab(path):
        def hook(_m, args, out):
            inputs[path] = args[0].detach()
            # d loss / d (out + 0) = d loss / d out, even with every weight frozen; the
            # output still flows on, so an earlier layer's delta includes the later layers'
            zero = torch.zeros_like(out, requires_grad=True)
            outputs[path] = zero
            return out + zero

        return hook

    for path in paths:
        handles.append(get_module(model, path).register_forward_hook(grab(path)))
    try:
        with torch.enable_grad():
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            loss = edit_loss(logits, batch)
            grads = torch.autograd.grad(loss, [outputs[p] for p in paths], allow_unused=True)
    finally:
        for h in handles:
            h.remove()
    real = batch.attention_mask.bool()  # (B, T)
    out = []
    for path, g in zip(paths, grads, strict=True):
        if g is None:
            g = torch.zeros_like(outputs[path])
        out.append((inputs[path][real].float(), g[real].float()))
    return out


def edited_forward(model, deltas: dict[str, torch.Tensor], input_ids, attention_mask):
    """The model's logits with W + delta in place of W (differentiable in the deltas)."""
    from torch.func import functional_call

    params = dict(model.named_parameters())
    new = {n: params[n] + d.to(params[n].dtype) for n, d in deltas.items()}
    return functional_call(
        model, new, (), {"input_ids": input_ids, "attention_mask": attention_mask}, strict=False
    ).logits


@register_method
class MEND(UpdateMethod):
    """Gradient-decomposition editor networks (arXiv 2110.11309, Eq. 3-5)."""

    name: ClassVar[str] = "mend"
    kind: ClassVar[str] = "edit"
    paper: ClassVar[str] = PAPER
    Params = MENDParams

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        from ksmith.methods.stats import weights_fingerprint
        from ksmith.methods.trained.editor import read_editor

        if any(not r.new_object for r in problem.requests):
            raise KsmithError("mend: every edit needs a new object")
        p: MENDParams = self.params  # type: ignore[assignment]
        fp = problem.model_fingerprint or weights_fingerprint(model)
        card, tensors = read_editor(p.editor_path, self.name, fp)
        editor = MENDEditor.from_saved(card["editor"], tensors).to(model_device(model))
        params = dict(model.named_parameters())
        for path, shape in zip(editor.paths, editor.shapes, strict=True):
            if f"{path}.weight" not in params or weight_shape(model, path) != tuple(shape):
                raise KsmithError(f"mend: the editor edits {path} {shape}, not in this model")
        batch = encode_pairs(
            tokenizer,
            [r.prompt for r in problem.requests],
            [r.new_object or "" for r in problem.requests],
            device=model_device(model),
        )
        with torch.no_grad():
            deltas = editor.deltas(model, batch)
            for n, d in deltas.items():
                params[n].add_(d.to(params[n].dtype))
        return UpdateResult(
            log={"edited": sorted(deltas), "tokens": int(batch.attention_mask.sum())}
        )
