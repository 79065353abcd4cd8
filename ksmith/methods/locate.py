"""Shared pieces of the locate-then-edit editors (ROME, MEMIT, AlphaEdit).

One implementation of each step the three papers share:

- the *lookup token*: the subject's last token in a prompt (ROME, arXiv 2202.05262, Sec. 3.1);
- *context prefixes*: short texts sampled from the model and put before the prompt, so that keys
  and values hold across contexts (ROME Eq. 3, the average over x_j + p);
- *keys* k: the input of a layer's MLP down-projection at the lookup token, averaged over the
  prefixes (ROME Eq. 3: k* = 1/N Σ_j k(x_j + s)); MEMIT's reference code (``compute_ks.py``)
  averages within each prefix-length group first, then across the groups, the bare prompt
  being a group of its own;
- *values* v*: the output of a module at the lookup token that makes the model produce the new
  object (ROME Eq. 4, MEMIT Eq. 16), in `ksmith.methods.values`.

Methods hold a `ModelState` per model object: the fingerprint, prefixes and second moments of
the *unedited* model, so sequential editing keeps using the statistics of the original weights.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.base import MethodParams, UpdateProblem
from ksmith.methods.stats import MomentSettings, StatsSource, second_moments, weights_fingerprint
from ksmith.methods.train_utils import chunks, model_device
from ksmith.models.arch import arch_of, get_module, layer_path, linear_weight_out_in

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class LocateParams(MethodParams):
    """Hyper-parameters shared by ROME, MEMIT and AlphaEdit (names as in the reference code)."""

    fact_token: Literal["subject_last", "last"] = Field(
        "last", description="lookup token: the subject's last token (paper), or the prompt's last"
    )
    context_lengths: tuple[tuple[int, int], ...] = Field(
        (), description="context prefixes to sample: (length in tokens, how many) pairs"
    )
    context_starts: tuple[str, ...] = Field(
        ("The", "Therefore", "Because", "I", "You"),
        description="texts the sampled prefixes start from; unknown-token starts are skipped",
    )
    v_num_grad_steps: int = Field(25, ge=1, description="gradient steps of the v* optimization")
    v_lr: float = Field(0.5, gt=0, description="Adam learning rate of δ")
    v_weight_decay: float = Field(0.5, ge=0, description="weight of ‖δ‖ / ‖v‖² in the v* loss")
    kl_factor: float = Field(0.0625, ge=0, description="weight of the essence-drift KL term")
    kl_prompt: str = Field("{} is a", description="essence prompt; {} is the subject")
    clamp_norm_factor: float = Field(4.0, gt=0, description="‖δ‖ is clamped to this times ‖v‖")
    v_loss_stop: float = Field(0.05, ge=0, description="stop a request's optimization below this")
    v_batch_rows: int = Field(
        256,
        ge=1,
        description="sequences per v* optimization batch (requests x (prefixes + 1 essence row)); "
        "bounds its memory. Batching is exact: each request has its own δ and Adam is "
        "per-coordinate",
    )
    key_batch_size: int = Field(64, ge=1, description="sequences per forward pass for keys")
    mom2_corpus_path: str | None = Field(
        None,
        description="corpus for E[kkᵀ]: dataset folder (its corpus), .txt, .parquet or .jsonl; "
        "used when the UpdateProblem carries no corpus",
    )
    mom2_n_tokens: int = Field(100_000, ge=1, description="tokens over which E[kkᵀ] is taken")
    mom2_batch_tokens: int = Field(4096, ge=1, description="max padded tokens per forward pass")
    mom2_seed: int = Field(0, description="seed of the corpus order for the token sample")
    mom2_cache_dir: str | None = Field(
        None, description="statistics cache; default $KSMITH_CACHE/stats or ~/.cache/ksmith/stats"
    )


@dataclass(frozen=True)
class EditTarget:
    """One request as the editors see it: the prompt, its subject, and the answer to write."""

    prompt: str
    subject: str
    answer: str


def edit_targets(problem: UpdateProblem, method: str) -> list[EditTarget]:
    """The new object for an edit; an "I don't know" answer for unlearning with target ``idk``
    (the unified objective's neutral target). Other unlearning targets have no value to write."""
    out = []
    for i, r in enumerate(problem.requests):
        if problem.kind == "edit":
            if not r.new_object:
                raise KsmithError(f"{method}: edit request {r.request_id!r} has no new_object")
            answer = r.new_object
        elif problem.target == "idk":
            answer = problem.idk_answers[i % len(problem.idk_answers)]
        else:
            raise KsmithError(
                f"{method} writes a target answer: for unlearning set the intervention target "
                f"to 'idk' (got {problem.target!r})"
            )
        out.append(EditTarget(r.prompt, r.subject, answer))
    return out


@dataclass
class ModelState:
    """What a method remembers about one model object (its unedited self)."""

    model: weakref.ref
    fingerprint: str | None = None
    prefixes: list[str] | None = None
    # Sizes of the consecutive prefix-length groups in `prefixes` (the bare prompt first).
    prefix_groups: tuple[int, ...] | None = None
    moments: dict[int, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # per-method running state


def state_for(current: ModelState | None, model: torch.nn.Module) -> ModelState:
    """`current` if it belongs to `model`, else a fresh state (a new model starts afresh)."""
    if current is not None and current.model() is model:
        return current
    return ModelState(weakref.ref(model))


def moments_for(
    state: ModelState,
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    problem: UpdateProblem,
    params: LocateParams,
    layers: Sequence[int],
    method: str,
) -> dict[int, torch.Tensor]:
    """E[kkᵀ] at `layers` of the model as first seen (call before editing it).

    The corpus is ``problem.corpus`` when the UpdateProblem carries one, else
    ``params.mom2_corpus_path``; the model fingerprint is ``problem.model_fingerprint`` when
    given, else a hash of the weights as first seen.
    """
    missing = [layer for layer in layers if layer not in state.moments]
    if missing:
        corpus = problem.corpus
        if corpus:
            source = StatsSource.from_texts(corpus, name="problem.corpus")
        elif params.mom2_corpus_path:
            source = StatsSource.from_path(params.mom2_corpus_path)
        else:
            raise KsmithError(
                f"{method} needs a corpus for its second-moment statistics: set "
                f"params.mom2_corpus_path in specs/methods/{method}.yaml (a dataset folder, or "
                "a .txt/.parquet/.jsonl file)"
            )
        if state.fingerprint is None:
            state.fingerprint = problem.model_fingerprint or weights_fingerprint(model)
        settings = MomentSettings(
            params.mom2_n_tokens, params.mom2_batch_tokens, params.mom2_seed, params.mom2_cache_dir
        )
        state.moments.update(
            second_moments(
                model, tokenizer, missing, source, settings, model_fingerprint=state.fingerprint
            )
        )
    return {layer: state.moments[layer] for layer in layers}


def context_prefixes(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    lengths: Sequence[tuple[int, int]],
    starts: Sequence[str],
    seed: int,
    top_k: int = 5,
) -> list[str]:
    """``[""]`` plus texts sampled from the model (top-k), each ending in ``". "`` (ROME's
    context templates). Deterministic given `seed`. The flat form of `context_prefix_groups`."""
    groups = context_prefix_groups(model, tokenizer, lengths, starts, seed, top_k)
    return [p for group in groups for p in group]


@torch.no_grad()
def context_prefix_groups(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    lengths: Sequence[tuple[int, int]],
    starts: Sequence[str],
    seed: int,
    top_k: int = 5,
) -> list[list[str]]:
    """``[[""], group for lengths[0], group for lengths[1], ...]``: one group of sampled
    prefixes per (length, count) pair, as MEMIT's ``get_context_templates`` nests them."""
    unk = tokenizer.unk_token_id
    start_ids = [
        ids
        for s in starts
        if (ids := tokenizer(s, add_special_tokens=True)["input_ids"]) and unk not in ids
    ]
    if not start_ids and tokenizer.bos_token_id is not None:
        start_ids = [[tokenizer.bos_token_id]]
    device = model_device(model)
    gen = torch.Generator().manual_seed(seed)
    groups = [[""]]
    for length, count in lengths:
        per_start = max(1, count // max(1, len(start_ids)))
        group = []
        for ids in start_ids:
            seq = torch.tensor([ids] * per_start, device=device)  # (n, t)
            while seq.shape[1] < max(length, len(ids) + 1):
                logits = model(input_ids=seq).logits[:, -1, :].float().cpu()  # (n, V)
                top = logits.topk(min(top_k, logits.shape[-1]), dim=-1)
                pick = torch.multinomial(top.values.softmax(-1), 1, generator=gen)  # (n, 1)
                seq = torch.cat([seq, top.indices.gather(1, pick).to(device)], dim=1)
            for row in seq.tolist():
                text = tokenizer.decode(row, skip_special_tokens=True)
                group.append(text.replace("{", " ").replace("}", " ").strip() + ". ")
        if group:  # empty only when no start text tokenizes
            groups.append(group)
    return groups


def lookup_index(
    tokenizer: PreTrainedTokenizerBase, text: str, subject: str, fact_token: str
) -> int:
    """Token index (in ``tokenizer(text)``) of the subject's last token, or of the text's last
    token for ``fact_token="last"`` or when the subject does not occur in the text."""
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])

    def n_tokens(s: str) -> int:
        ids = tokenizer(s, add_special_tokens=True)["input_ids"]
        while len(ids) > 1 and ids[-1] in specials and ids[-1] != ids[0]:
            ids = ids[:-1]  # a tokenizer that appends EOS
        return len(ids)

    if fact_token == "subject_last":
        pos = text.rfind(subject)
        if pos < 0:
            pos = text.lower().rfind(subject.lower())
        if pos >= 0:
            return n_tokens(text[: pos + len(subject)]) - 1
        log.warning("subject %r not in %r: using the last token", subject, text)
    return n_tokens(text) - 1


def pad_right(seqs: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids, attention mask), each (B, max length), on `device`."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(list(s))
        mask[b, : len(s)] = 1
    return ids.to(device), mask.to(device)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The tokenizer's pad id, else its EOS id, else 0."""
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else (tokenizer.eos_token_id or 0))


def first_output(out: Any) -> torch.Tensor:
    """A module's main output (blocks may return a tuple whose first item is the hidden state)."""
    return out[0] if isinstance(out, tuple) else out


@torch.no_grad()
def module_io(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    sites: Sequence[tuple[str, str]],
    module_path: str,
    fact_token: str,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of the module at `module_path` at the lookup token of each
    (text, subject) site: (n, d_in), (n, d_out) float32 on the model's device."""
    module = get_module(model, module_path)
    device = model_device(model)
    ins: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    pos: list[torch.Tensor] = []

    def hook(_mod, args, kwargs, out):
        rows = torch.arange(len(pos[0]), device=device)
        x = args[0] if args else kwargs["hidden_states"]  # (B, T, d_in)
        ins.append(x[rows, pos[0]].float())
        outs.append(first_output(out)[rows, pos[0]].float())

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        for chunk in chunks(list(sites), batch_size):
            seqs = [tokenizer(t, add_special_tokens=True)["input_ids"] for t, _ in chunk]
            idx = [lookup_index(tokenizer, t, s, fact_token) for t, s in chunk]
            ids, mask = pad_right(seqs, pad_token_id(tokenizer), device)
            pos[:] = [torch.tensor(idx, device=device)]
            model(input_ids=ids, attention_mask=mask)
    finally:
        handle.remove()
    return torch.cat(ins), torch.cat(outs)


def compute_keys(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    targets: Sequence[EditTarget],
    layer: int,
    prefixes: Sequence[str],
    params: LocateParams,
    groups: Sequence[int] | None = None,
) -> torch.Tensor:
    """k* per request: the MLP down-projection input at layer `layer` at the lookup token,
    averaged over the context prefixes. Returns (n, d_in).

    `groups` None: one flat mean over `prefixes` (ROME Eq. 3, as ROME's ``compute_u``). Else the
    sizes of consecutive groups of `prefixes` (summing to its length): the mean within each
    group, then the mean of the group means (MEMIT's and AlphaEdit's ``compute_ks``), so the
    bare prompt weighs as much as all sampled prefixes of one length together.
    """
    sites = [(p + t.prompt, t.subject) for t in targets for p in prefixes]
    k, _ = module_io(
        model,
        tokenizer,
        sites,
        layer_path(model, layer, "mlp_out"),
        params.fact_token,
        params.key_batch_size,
    )
    k = k.view(len(targets), len(prefixes), -1)  # (n, P, d_in)
    if groups is None:
        return k.mean(dim=1)
    assert sum(groups) == len(prefixes) and all(g > 0 for g in groups), (groups, len(prefixes))
    means = [part.mean(dim=1) for part in k.split(list(groups), dim=1)]  # each (n, d_in)
    return torch.stack(means, dim=1).mean(dim=1)  # (n, d_in)


def solve_device(model: torch.nn.Module) -> torch.device:
    """Where float64 linear algebra runs: the model's device, or CPU where float64 is missing."""
    device = model_device(model)
    return torch.device("cpu") if device.type == "mps" else device


@torch.no_grad()
def add_to_weight(model: torch.nn.Module, layer: int, delta: torch.Tensor) -> None:
    """W ← W + ∆ for the MLP down-projection at `layer`; ∆ is (d_out, d_in)."""
    module = get_module(model, layer_path(model, layer, "mlp_out"))
    w = linear_weight_out_in(module, arch_of(model))  # (d_out, d_in) view
    w.add_(delta.to(device=w.device, dtype=w.dtype))
