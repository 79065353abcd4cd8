"""Training SERAC's scope classifier on the world's training split (arXiv 2206.06520, Sec. 3.2).

The paper trains the classifier with binary cross-entropy on (edit, input) pairs: an edit's
in-scope examples (its rephrasings) are positives, out-of-scope examples negatives, hard ones
included (reference code: algs/serac.py, the `cls` loss on positive and negative pairs). Here a
batch is `batch_edits` split edits; its inputs are their in-scope prompts and their locality
prompts, and the label of (input i, edit j) is whether i asks j's (subject, relation). Every
positive counts as much as all the negatives (positive weight = negatives / positives), as the
paper averages the two losses.

Features are frozen (the world model's hidden states), so they are computed once; training is
a few hundred steps of a small MLP, bounded by steps and seeded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from ksmith.methods.serac import SERACTraining
from ksmith.methods.serac_memory import ScopeClassifier, last_token_features
from ksmith.methods.trained.split import SplitEdit, TrainingSplit

log = logging.getLogger(__name__)


@dataclass
class Examples:
    """Feature rows of a set of edits: keys (edits, H), inputs (N, H), in-scope matrix (N, E),
    and which inputs are in scope of any edit (N,)."""

    keys: torch.Tensor
    inputs: torch.Tensor
    label: torch.Tensor
    positive: torch.Tensor


def _examples(edits: tuple[SplitEdit, ...], feats: dict[str, torch.Tensor]) -> Examples:
    texts: list[tuple[str, tuple[str, str] | None]] = []  # (text, the key it asks or None)
    for e in edits:
        texts += [(t, (e.subject, e.relation)) for t in e.in_scope()]
        texts += [(t, None) for t in e.minus_prompts]
    keys = [(e.subject, e.relation) for e in edits]
    label = torch.tensor([[k == asked for k in keys] for _, asked in texts], dtype=torch.float32)
    # A locality prompt may ask another edit's key in the same set: label it by what it asks.
    asked_of = {t: a for t, a in texts if a is not None}
    for i, (t, a) in enumerate(texts):
        if a is None and t in asked_of:
            label[i] = torch.tensor([k == asked_of[t] for k in keys], dtype=torch.float32)
    return Examples(
        keys=torch.stack([feats[e.prompt] for e in edits]),
        inputs=torch.stack([feats[t] for t, _ in texts]),
        label=label,
        positive=label.max(dim=1).values > 0,
    )


def heldout_accuracy(
    g: ScopeClassifier,
    edits: tuple[SplitEdit, ...],
    feats: dict[str, torch.Tensor],
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Each held-out edit alone in the memory (the split draws several edits per fact, so a
    memory of all of them would leave no input out of scope): its in-scope prompts must score
    above the threshold (in-scope recall), its locality prompts at or below it (out-of-scope
    specificity); accuracy is the mean over all those inputs."""
    hits, quiet = [], []
    with torch.no_grad():
        for e in edits:
            key = feats[e.prompt][None]  # (1, H)
            inside = torch.stack([feats[x] for x in e.in_scope()])
            hits += (torch.sigmoid(g(inside, key))[:, 0] > threshold).tolist()
            if e.minus_prompts:
                outside = torch.stack([feats[x] for x in e.minus_prompts])
                quiet += (torch.sigmoid(g(outside, key))[:, 0] <= threshold).tolist()
    both = hits + quiet
    return {
        "accuracy": round(sum(both) / len(both), 4),
        "in_scope_recall": round(sum(hits) / len(hits), 4),
        "out_of_scope_specificity": round(sum(quiet) / len(quiet), 4) if quiet else None,
        "inputs": len(both),
        "edits": len(edits),
    }


def _pair_loss(g: ScopeClassifier, keys, inputs, label, balance: bool) -> torch.Tensor:
    logits = g(inputs, keys)  # (N, E)
    weight = None
    if balance:
        pos = label.sum().clamp(min=1.0)
        weight = ((label.numel() - pos) / pos).clamp(min=1.0)
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, label, pos_weight=weight)


def train_serac(
    model: torch.nn.Module,
    tokenizer,
    split: TrainingSplit,
    t: SERACTraining,
    *,
    progress: bool = True,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], dict[str, float]]:
    """Train the scope classifier; returns (its tensors, the training curve, held-out
    accuracy). The curve holds, every `t.log_every` steps, the mean training loss since the
    last point and the held-out loss and accuracy."""
    torch.manual_seed(t.seed)
    texts = sorted(
        {x for e in (*split.train, *split.heldout) for x in (*e.in_scope(), *e.minus_prompts)}
    )
    feats_all = last_token_features(model, tokenizer, texts, t.layer)
    feats = dict(zip(texts, feats_all, strict=True))
    train_x = torch.stack([feats[x] for x in texts])
    g = ScopeClassifier(train_x.shape[1], t.proj_dim, t.hidden)
    g.mu.copy_(train_x.mean(0))
    g.sigma.copy_(train_x.std(0).clamp(min=1e-4))
    held = _examples(split.heldout, feats)
    opt = torch.optim.Adam(g.parameters(), lr=t.lr)
    gen = torch.Generator().manual_seed(t.seed)
    curve: list[dict[str, Any]] = []
    running: list[float] = []
    n = len(split.train)
    for step in tqdm(range(1, t.steps + 1), desc="serac classifier", disable=not progress):
        pick = torch.randperm(n, generator=gen)[: min(t.batch_edits, n)].tolist()
        ex = _examples(tuple(split.train[i] for i in pick), feats)
        g.train()
        loss = _pair_loss(g, ex.keys, ex.inputs, ex.label, t.balance)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running.append(float(loss.detach()))
        if step % t.log_every == 0 or step == t.steps:
            g.eval()
            with torch.no_grad():
                held_loss = float(_pair_loss(g, held.keys, held.inputs, held.label, t.balance))
            point = {
                "step": step,
                "train_loss": round(sum(running) / len(running), 6),
                "heldout_loss": round(held_loss, 6),
                "heldout_accuracy": heldout_accuracy(g, split.heldout, feats)["accuracy"],
            }
            curve.append(point)
            log.debug("serac: %s", point)
            running = []
    g.eval()
    tensors = {f"cls.{k}": v.detach().clone() for k, v in g.state_dict().items()}
    return tensors, curve, heldout_accuracy(g, split.heldout, feats)
