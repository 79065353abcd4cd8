"""Values v* for the locate-then-edit editors (ROME, MEMIT, AlphaEdit).

v* is the output of a module at the lookup token that makes the model produce the new object,
found by gradient descent on an additive δ (ROME arXiv 2202.05262 Eq. 4; MEMIT arXiv 2210.07229
Eq. 16):

    v* = v + argmin_δ  -1/N Σ_j log P(o* | x_j + p; v + δ)  +  D_KL(P(· | p'; v + δ) ‖ P(· | p'))

plus the weight decay and the L2-ball clamp of the reference implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ksmith.methods.locate import (
    EditTarget,
    LocateParams,
    first_output,
    lookup_index,
    pad_right,
    pad_token_id,
)
from ksmith.methods.train_utils import IGNORE, chunks, encode_pair_ids, model_device, trainable
from ksmith.models.arch import arch_of, get_module, linear_weight_out_in

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def optimize_values(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    targets: Sequence[EditTarget],
    module_path: str,
    prefixes: Sequence[str],
    params: LocateParams,
) -> tuple[torch.Tensor, dict[str, float]]:
    """v* per request (ROME Eq. 4 / MEMIT Eq. 16) at the output of `module_path`.

    Requests in a batch are optimized jointly but independently: each has its own δ_i (the loss
    is a sum of per-request terms and Adam updates each coordinate on its own gradient), and a
    request stops moving once its loss is below ``v_loss_stop``; so the result does not depend
    on the batching, which only trades memory for speed. A batch holds at most
    ``v_batch_rows`` sequences: each request brings one per prefix plus its essence prompt.
    Returns (n, d_out) float32 and a log of mean final losses.
    """
    parts, logs = [], []
    per_batch = max(1, params.v_batch_rows // (len(prefixes) + 1))
    for chunk in chunks(list(targets), per_batch):
        v, lg = _optimize_chunk(model, tokenizer, chunk, module_path, prefixes, params)
        parts.append(v)
        logs.append(lg)
    n = len(targets)
    log_out = {k: sum(lg[k] * lg["n"] for lg in logs) / n for k in ("nll", "kl", "steps")}
    return torch.cat(parts), log_out


def _optimize_chunk(model, tokenizer, targets, module_path, prefixes, params):
    device = model_device(model)
    n, P = len(targets), len(prefixes)
    seqs, labels, look = [], [], []
    for t in targets:  # rewriting rows: prefix + prompt + answer, loss on the answer tokens
        for p in prefixes:
            ctx, ans = encode_pair_ids(tokenizer, p + t.prompt, t.answer)
            seqs.append(ctx + ans)
            labels.append([IGNORE] * len(ctx) + ans)
            look.append(lookup_index(tokenizer, p + t.prompt, t.subject, params.fact_token))
    for t in targets:  # essence rows: KL at the subject's last token
        text = params.kl_prompt.format(t.subject)
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        seqs.append(ids)
        labels.append([IGNORE] * len(ids))
        look.append(lookup_index(tokenizer, text, t.subject, "subject_last"))
    ids, mask = pad_right(seqs, pad_token_id(tokenizer), device)
    lab = torch.full_like(ids, IGNORE)
    for b, row in enumerate(labels):
        lab[b, : len(row)] = torch.tensor(row)
    rows = torch.arange(len(seqs), device=device)
    look_t = torch.tensor(look, device=device)
    owner = torch.cat([torch.arange(n).repeat_interleave(P), torch.arange(n)]).to(device)
    kl_rows = rows[n * P :]

    module = get_module(model, module_path)
    width = _first_dim(model, module_path)
    delta = torch.zeros(n, width, device=device, requires_grad=True)  # δ_i: (n, d)
    v_init: list[torch.Tensor] = []  # v_i at the clean prompt (prefix ""): (n, d)

    def hook(_mod, _args, out):
        h = first_output(out)  # (B, T, d)
        if not v_init:
            v_init.append(h[rows[: n * P : P], look_t[: n * P : P]].detach().float())
        h = torch.index_put(h, (rows, look_t), delta[owner].to(h.dtype), accumulate=True)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    opt = torch.optim.Adam([delta], lr=params.v_lr)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    kl_init = None
    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    steps = 0
    try:
        with trainable(model, []):
            for it in range(params.v_num_grad_steps):
                logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
                shift = logits[: n * P, :-1].float().log_softmax(-1)  # (nP, T-1, V)
                tgt = lab[: n * P, 1:]
                tok = shift.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                tok = tok * (tgt != IGNORE)
                per_row = tok.sum(1) / (tgt != IGNORE).sum(1)  # mean log p per answer token
                nll = -per_row.view(n, P).mean(1)  # (n,)
                kl_logp = logits[kl_rows, look_t[n * P :]].float().log_softmax(-1)  # (n, V)
                if kl_init is None:
                    kl_init = kl_logp.detach()
                kl = (kl_logp.exp() * (kl_logp - kl_init)).sum(-1)  # KL(P_δ ‖ P_0): (n,)
                v0 = v_init[0]
                wd = params.v_weight_decay * delta.norm(dim=1) / v0.norm(dim=1) ** 2
                loss = nll + params.kl_factor * kl + wd  # (n,)
                log.debug(
                    "v* step %d: nll %.4f kl %.4f wd %.4f",
                    it,
                    float(nll.detach().mean()),
                    float(kl.detach().mean()),
                    float(wd.detach().mean()),
                )
                done |= loss.detach() < params.v_loss_stop
                if bool(done.all()) or it == params.v_num_grad_steps - 1:
                    break
                opt.zero_grad()
                loss[~done].sum().backward()
                before = delta.detach().clone()
                opt.step()
                steps += 1
                with torch.no_grad():
                    delta[done] = before[done]
                    max_norm = params.clamp_norm_factor * v0.norm(dim=1, keepdim=True)
                    norm = delta.norm(dim=1, keepdim=True)
                    delta.mul_(torch.where(norm > max_norm, max_norm / norm, torch.ones_like(norm)))
    finally:
        handle.remove()
        model.train(was_training)
    v_star = (v_init[0] + delta.detach()).float()  # (n, d)
    return v_star, {
        "nll": float(nll.detach().mean()),
        "kl": float(kl.detach().mean()),
        "steps": steps,
        "n": n,
    }


def _first_dim(model: torch.nn.Module, module_path: str) -> int:
    """Output width of an MLP down-projection or of a block (the model's hidden size)."""
    module = get_module(model, module_path)
    if hasattr(module, "weight") and module.weight.dim() == 2:
        return int(linear_weight_out_in(module, arch_of(model)).shape[0])
    return int(model.config.hidden_size)
