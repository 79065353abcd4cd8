"""Training MEND's editor networks on the world's training split (arXiv 2110.11309, Eq. 4;
reference code eric-mitchell/mend, algs/mend.py and editable_model.py).

Each step draws `batch_edits` split edits and edits the frozen base model with all of them at
once: the editor turns the edit loss's per-token (u, delta) pairs into a weight change (Eq. 5;
`ksmith.methods.mend.MENDEditor.deltas`), and the edited model W~ is scored on

    L = c_edit * L_e + L_loc
    L_e   = -log p_{W~}(y_e | x'_e), mean over the answer tokens of every in-scope prompt x'_e
            of the edits (their training templates and held-out paraphrase);
    L_loc = KL(p_W(. | x_loc) || p_{W~}(. | x_loc)), mean over the real tokens of the edits'
            locality prompts (each followed by its answer).

Gradients reach the editor networks and the per-weight step sizes through W~ (the base
model's weights stay frozen). The curve records the training losses and, on a fixed set of
held-out edits (subjects no training edit has), each edit alone: its edit loss, the share of
its in-scope prompts answered with the new object and the share of its locality prompts whose
answer stays; a point at step 0 gives the unedited baseline (MEND at initialisation is a plain
gradient step of size edit_lr).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from tqdm import tqdm

from ksmith.methods.mend import (
    MENDEditor,
    MENDTraining,
    edit_loss,
    edited_forward,
    edited_paths,
    weight_shape,
)
from ksmith.methods.train_utils import encode_pairs, model_device
from ksmith.methods.trained.split import SplitEdit, TrainingSplit

log = logging.getLogger(__name__)

CURVE_HELDOUT = 16  # held-out edits scored at each curve point


def _batches(tokenizer, edits: list[SplitEdit], device):
    """(edit batch, equivalence batch, locality batch) of a set of edits."""
    edit = encode_pairs(tokenizer, [e.prompt for e in edits], [e.new_object for e in edits],
                        device=device)  # fmt: skip
    eq = [(x, e.new_object) for e in edits for x in e.in_scope()]
    loc = [(x, a) for e in edits for x, a in zip(e.minus_prompts, e.minus_answers, strict=True)]
    eq_b = encode_pairs(tokenizer, *zip(*eq, strict=True), device=device)
    loc_b = encode_pairs(tokenizer, *zip(*loc, strict=True), device=device) if loc else None
    return edit, eq_b, loc_b


def _kl(base_logits, new_logits, mask) -> torch.Tensor:
    """KL(p_base || p_new) per real token, averaged."""
    lp = torch.log_softmax(base_logits.float(), -1)
    lq = torch.log_softmax(new_logits.float(), -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)  # (B, T)
    m = mask.float()
    return (kl * m).sum() / m.sum().clamp(min=1)


def _losses(model, editor: MENDEditor, batches, *, observe: bool):
    edit, eq, loc = batches
    deltas = editor.deltas(model, edit, observe=observe)
    l_e = edit_loss(edited_forward(model, deltas, eq.input_ids, eq.attention_mask), eq)
    l_loc = torch.zeros(())
    if loc is not None:
        with torch.no_grad():
            base = model(input_ids=loc.input_ids, attention_mask=loc.attention_mask).logits
        new = edited_forward(model, deltas, loc.input_ids, loc.attention_mask)
        l_loc = _kl(base, new, loc.attention_mask)
    return l_e, l_loc, deltas


def _answered(logits, batch) -> torch.Tensor:
    """(B,) whether every answer token is the greedy choice."""
    pred = logits[:, :-1].argmax(-1)  # predicts positions 1..
    labels, mask = batch.labels[:, 1:], batch.answer_mask[:, 1:]
    return ((pred == labels) | ~mask).all(dim=1)


@torch.no_grad()
def heldout_scores(model, tokenizer, editor: MENDEditor, edits: list[SplitEdit]) -> dict[str, Any]:
    """Each held-out edit applied alone: mean edit loss, edit success (in-scope prompts
    answered with the new object) and locality (locality answers unchanged)."""
    device = model_device(model)
    losses, success, kept = [], [], []
    for e in edits:
        edit, eq, loc = _batches(tokenizer, [e], device)
        deltas = editor.deltas(model, edit)
        logits = edited_forward(model, deltas, eq.input_ids, eq.attention_mask)
        losses.append(float(edit_loss(logits, eq)))
        success += _answered(logits, eq).tolist()
        if loc is not None:
            base = model(input_ids=loc.input_ids, attention_mask=loc.attention_mask).logits
            new = edited_forward(model, deltas, loc.input_ids, loc.attention_mask)
            kept += (_answered(new, _as_greedy(base, loc))).tolist()
    return {
        "edit_loss": round(sum(losses) / len(losses), 6),
        "edit_success": round(sum(success) / len(success), 4),
        "locality": round(sum(kept) / len(kept), 4) if kept else None,
        "edits": len(edits),
    }


def _as_greedy(base_logits, batch):
    """`batch` with its answer labels replaced by the base model's greedy tokens (so
    "unchanged" means the edited model predicts what the base model predicted)."""
    from dataclasses import replace

    pred = base_logits[:, :-1].argmax(-1)
    labels = batch.labels.clone()
    labels[:, 1:] = torch.where(batch.answer_mask[:, 1:], pred, labels[:, 1:])
    return replace(batch, labels=labels)


def train_mend(
    model: torch.nn.Module,
    tokenizer,
    split: TrainingSplit,
    t: MENDTraining,
    *,
    progress: bool = True,
) -> tuple[MENDEditor, list[dict[str, Any]], dict[str, Any]]:
    """Train the editor; returns (editor, the training curve, held-out scores on every
    held-out edit)."""
    torch.manual_seed(t.seed)
    device = model_device(model)
    paths = edited_paths(model, t.layers, t.modules)
    editor = MENDEditor(paths, [weight_shape(model, p) for p in paths], t.rank, t.edit_lr)
    editor.to(device)
    opt = torch.optim.Adam(
        [
            {"params": [p for n, p in editor.named_parameters() if n != "alpha"], "lr": t.lr},
            {"params": [editor.alpha], "lr": t.lr_lr},
        ]
    )
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    held = list(split.heldout[:CURVE_HELDOUT])
    gen = torch.Generator().manual_seed(t.seed)
    n = len(split.train)
    # Normalisation statistics before the first point: one pass over a few batches.
    with torch.no_grad():
        for _ in range(4):
            pick = torch.randperm(n, generator=gen)[: t.batch_edits].tolist()
            edit, _, _ = _batches(tokenizer, [split.train[i] for i in pick], device)
            editor.deltas(model, edit, observe=True)
    curve: list[dict[str, Any]] = [
        {"step": 0, "heldout": heldout_scores(model, tokenizer, editor, held)}
    ]
    run_e: list[float] = []
    run_loc: list[float] = []
    try:
        for step in tqdm(range(1, t.steps + 1), desc="mend editor", disable=not progress):
            pick = torch.randperm(n, generator=gen)[: t.batch_edits].tolist()
            batches = _batches(tokenizer, [split.train[i] for i in pick], device)
            l_e, l_loc, _ = _losses(model, editor, batches, observe=True)
            loss = t.c_edit * l_e + l_loc
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            run_e.append(float(l_e.detach()))
            run_loc.append(float(l_loc.detach()))
            if step % t.log_every == 0 or step == t.steps:
                curve.append(
                    {
                        "step": step,
                        "edit_loss": round(sum(run_e) / len(run_e), 6),
                        "loc_loss": round(sum(run_loc) / len(run_loc), 6),
                        "alpha": [round(float(a), 6) for a in editor.alpha.detach()],
                        "heldout": heldout_scores(model, tokenizer, editor, held),
                    }
                )
                log.debug("mend: %s", curve[-1])
                run_e, run_loc = [], []
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    editor.eval()
    return editor, curve, heldout_scores(model, tokenizer, editor, list(split.heldout))
