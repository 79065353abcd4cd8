"""Train (or fine-tune) a causal LM on a world's corpus until it knows the world.

From scratch: a word-level tokenizer and a small Llama- or GPT-2-style model made from a config.
With a base model: the same loop fine-tunes it on the corpus, as TOFU (arXiv 2401.06121) does
with its fictitious authors. Every corpus line is one sequence (``<bos> line <eos>``), batches
are right-padded, the loss is next-token cross-entropy on all real tokens; AdamW with linear
warm-up and cosine decay; optionally a curriculum first (`curriculum`: the lines about a share
of the subjects). Training stops at the step budget or, with `stop_early`, at the first
knowledge check (every `eval_every` steps, on a fixed sample of the profile's probes) that
reaches the thresholds: never on wall time, so the same spec gives the same weights on any
machine under any load.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ksmith.errors import KsmithError
from ksmith.evaluate.hf import HFBackend
from ksmith.intervene.sample import derive_seed
from ksmith.world.fused import LossFn, fused_loss, fused_optimizer, unsupported
from ksmith.world.probes import KnowledgeProbes, measure
from ksmith.world.spec import WorldModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run reached; `history` holds one record per knowledge check."""

    steps: int
    train_seconds: float  # wall clock (logged only: the model folder never depends on it)
    cpu_seconds: float  # process CPU time: the cost on an idle machine, whatever the load
    check: dict[str, dict[str, float]]  # the last check: kind -> format -> accuracy
    stopped_by: str  # "threshold" | "max_steps"
    history: list[dict[str, Any]] = field(default_factory=list)


def abilities(check: dict[str, dict[str, float]]) -> dict[str, float]:
    """kind -> the least accuracy over its formats (`ksmith.world.profile.summary`'s rule)."""
    return {k: min(fs.values()) for k, fs in check.items() if fs}


def reached(check: dict[str, dict[str, float]], thresholds: dict[str, float]) -> bool:
    """Every ability the check measures is at or above its threshold."""
    got = abilities(check)
    return all(got[k] >= v for k, v in thresholds.items() if k in got)


def build_model(spec: WorldModelSpec, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A freshly initialised model of the spec's shape, seeded by ``spec.seed``."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": spec.tie_embeddings,
        "initializer_range": spec.init_std,
    }
    if spec.arch == "llama":
        config = LlamaConfig(
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            max_position_embeddings=spec.max_position,
            **ids,
        )
    else:
        config = GPT2Config(
            n_embd=spec.hidden,
            n_inner=spec.intermediate,
            n_layer=spec.layers,
            n_head=spec.heads,
            n_positions=spec.max_position,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
    torch.manual_seed(spec.seed)
    return AutoModelForCausalLM.from_config(config)


def encode_lines(
    tokenizer: PreTrainedTokenizerBase, lines: Sequence[str], max_length: int
) -> list[list[int]]:
    """Token ids of each line with the tokenizer's own specials, then EOS; checked against
    the context window."""
    eos = tokenizer.eos_token_id
    out = []
    for line, ids in zip(lines, tokenizer(list(lines))["input_ids"], strict=True):
        ids = list(ids) + ([eos] if eos is not None and (not ids or ids[-1] != eos) else [])
        if len(ids) > max_length:
            raise KsmithError(
                f"corpus line of {len(ids)} tokens exceeds max_position={max_length}: {line!r}"
            )
        out.append(ids)
    return out


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1 at `total` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


BUCKET_BATCHES = 64  # batches per length-sorting window


def _batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator):
    """Endless deterministic stream of index batches: a fresh permutation per epoch, cut into
    windows of `BUCKET_BATCHES` batches whose lines are sorted by length before batching (so a
    batch pads little: descriptions are ten times longer than questions), the window's
    batches then in a seeded order. Every line is seen once per epoch."""
    n = len(lengths)
    window = batch_size * BUCKET_BATCHES
    while True:
        perm = torch.randperm(n, generator=generator).tolist()
        for lo in range(0, n, window):
            part = sorted(perm[lo : lo + window], key=lengths.__getitem__)
            chunks = [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
            for j in torch.randperm(len(chunks), generator=generator).tolist():
                yield chunks[j]


def _draw(subject: str, seed: int) -> float:
    """A seeded uniform draw in [0, 1) for `subject`, from its name alone."""
    return derive_seed(seed, subject) / 2**63


def curriculum(
    subjects: Sequence[str],
    fraction: float,
    seed: int,
    kinds: Sequence[str] = (),
    only: Sequence[str] = (),
) -> list[int]:
    """Indices of the lines about the curriculum's subjects: those whose seeded draw
    (`_draw`) is below `fraction`, or, when none is, the one of least draw. Decided per
    subject, so a retain world (some facts, or whole subjects, removed) keeps its world's
    curriculum subjects. Lines about no subject ("") are never in it. With `only`, just the
    lines whose kind (`kinds`, one per line) is one of `only`.

    Zucchet et al. 2025, "How do language models learn facts? Dynamics, curricula and
    hallucinations" (arXiv 2503.21676), section 4: a model learning facts about many
    individuals sits on a loss plateau while it forms the attention circuits recall needs; the
    plateau grows with the number of individuals, and a warm-up on few of them shortens it."""
    if fraction <= 0:
        return []
    draws = {s: _draw(s, seed) for s in dict.fromkeys(subjects) if s}
    chosen = {s for s, d in draws.items() if d < fraction}
    if not chosen and draws:
        chosen = {min(draws, key=lambda s: (draws[s], s))}
    allowed = set(only)
    return [
        i for i, s in enumerate(subjects)
        if s in chosen and (not allowed or kinds[i] in allowed)
    ]  # fmt: skip


def _stream(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
            focus: Sequence[int], focus_steps: int):  # fmt: skip
    """`focus_steps` batches of the `focus` lines (`_batches` over them), then batches of
    every line."""
    if focus_steps:
        for k, batch in enumerate(_batches([lengths[i] for i in focus], batch_size, generator)):
            if k == focus_steps:
                break
            yield [focus[i] for i in batch]
    yield from _batches(lengths, batch_size, generator)


def step_loss(
    model: PreTrainedModel,
    seqs: Sequence[Sequence[int]],
    pad: int,
    fused_step: LossFn | None = None,
) -> torch.Tensor:
    """One batch's training loss: the token sequences `seqs` right-padded with `pad`; with
    `fused_step` (`ksmith.world.fused.fused_loss`) computed by it from the ids and lengths,
    else by the model's own forward with labels -100 at the pads (loss on every real token)."""
    device = next(model.parameters()).device
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s)
        mask[row, : len(s)] = 1
    if fused_step is not None:
        return fused_step(ids.to(device), [len(s) for s in seqs])
    labels = ids.masked_fill(mask == 0, -100)
    return model(
        input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
    ).loss


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    lines: Sequence[str],
    check: KnowledgeProbes,
    spec: WorldModelSpec,
    *,
    lr: float,
    progress: bool = True,
    subjects: Sequence[str] = (),
    kinds: Sequence[str] = (),
) -> TrainResult:
    """Train `model` in place on `lines` until the knowledge check (`check`, measured every
    `spec.eval_every` steps) reaches `spec.thresholds`, or for `spec.max_steps` steps. Steps
    alone decide when it stops, so the weights depend on the spec and the data only. With a
    curriculum (`spec.curriculum_steps` above 0), the first `spec.curriculum_steps` steps train
    on the lines whose subject (`subjects`, one per line) is a curriculum subject (a
    `spec.curriculum_fraction` share of them) and, with `spec.curriculum_kinds`, whose kind
    (`kinds`, one per line) is one of them."""
    if not lines:
        raise KsmithError("the corpus is empty: nothing to train on")
    focus: list[int] = []
    if spec.curriculum_steps:
        if len(subjects) != len(lines):
            raise KsmithError(
                "curriculum_fraction needs each corpus line's subject (the corpus's `subject` "
                f"column): got {len(subjects)} subjects for {len(lines)} lines"
            )
        if spec.curriculum_kinds and len(kinds) != len(lines):
            raise KsmithError(
                "curriculum_kinds needs each corpus line's kind (the corpus's `kind` column): "
                f"got {len(kinds)} kinds for {len(lines)} lines"
            )
        focus = curriculum(
            subjects, spec.curriculum_fraction, spec.seed, kinds, spec.curriculum_kinds
        )
        if not focus and spec.curriculum_kinds and any(subjects):
            raise KsmithError(
                f"curriculum_kinds: the curriculum's subjects have no line of kind "
                f"{', '.join(spec.curriculum_kinds)} (the corpus's kinds: "
                f"{', '.join(sorted(set(kinds)))}); set curriculum_steps=0 for no curriculum"
            )
        if not focus:
            raise KsmithError(
                "curriculum_fraction needs each corpus line's subject, and no line names one: "
                "set curriculum_steps=0 for no curriculum"
            )
        log.info(
            "curriculum: %d steps on %d of %d lines (%d subjects) first",
            spec.curriculum_steps, len(focus), len(lines),
            len({subjects[i] for i in focus}),
        )  # fmt: skip
    max_len = HFBackend(model, tokenizer).max_length
    data = encode_lines(tokenizer, lines, max_len)
    pad = tokenizer.pad_token_id
    generator = torch.Generator().manual_seed(spec.seed)
    torch.manual_seed(spec.seed)
    fused, fused_step = spec.train_kernels == "fused", None
    if fused:
        reason = unsupported(model)
        if reason is None:
            fused_step = fused_loss(model)
        else:  # e.g. arch gpt2 or a --base model: its own forward, still the fused AdamW
            log.info(
                "train_kernels fused: %s, so the model's own forward computes the loss", reason
            )
        optimizer = fused_optimizer(
            model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=spec.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=spec.weight_decay
        )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, spec.warmup_steps, spec.decay_steps or spec.max_steps)
    )
    targets = {k: v for k, v in spec.thresholds.items() if k != "fluency"}
    history: list[dict[str, Any]] = []
    stopped_by, step, loss_ema, last = "max_steps", 0, None, {}
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(total=spec.max_steps, desc="pretrain", unit="step", disable=not progress)
    model.train()
    batches = _stream([len(x) for x in data], spec.batch_size, generator, focus,
                      spec.curriculum_steps)  # fmt: skip
    for batch in batches:
        batch_loss = step_loss(model, [data[i] for i in batch], pad, fused_step)
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip, foreach=fused or None)
        optimizer.step()
        schedule.step()
        step += 1
        loss = batch_loss.item()
        loss_ema = loss if loss_ema is None else 0.95 * loss_ema + 0.05 * loss
        bar.update(1)
        if step % spec.eval_every == 0 or step >= spec.max_steps:
            model.eval()
            last = measure(HFBackend(model, tokenizer, batch_size=spec.eval_batch_size), check)
            model.train()
            got = abilities(last)
            history.append({"step": step, "loss": round(loss_ema, 4), "check": last})
            bar.set_postfix(loss=f"{loss_ema:.3f}", least=_least(got))
            log.info("step %d: loss %.3f, %s", step, loss_ema, _fmt(got))
            if spec.stop_early and reached(last, targets):
                stopped_by = "threshold"
                break
        elif step % 10 == 0:
            bar.set_postfix(loss=f"{loss_ema:.3f}")
        if step >= spec.max_steps:
            break
    bar.close()
    model.eval()
    result = TrainResult(
        step, time.perf_counter() - start, time.process_time() - cpu_start, last, stopped_by,
        history,
    )  # fmt: skip
    log.info(
        "trained %d steps in %.1fs, %.1f CPU s (%s)",
        step,
        result.train_seconds,
        result.cpu_seconds,
        stopped_by,
    )
    return result


def _least(got: dict[str, float]) -> str:
    if not got:
        return "n/a"
    k = min(got, key=got.__getitem__)
    return f"{k} {got[k]:.2f}"


def _fmt(got: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in got.items()) or "nothing measured"
