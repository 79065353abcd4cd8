"""Shared tokenization and loss helpers for every gradient-based update method.

All editing and unlearning methods score the same thing: the log-probability of an answer
continuing a prompt after ONE space (docs/contracts.md section 3, ``prompt + " " + answer``).
These helpers do it once, batched with right padding, with a mask over the answer tokens only,
so that "the loss on the target" means the same thing in FT-M, LoRA, GA, NPO, ...

Tokenization follows lm-eval's ``_encode_pair``: encode the context and the whole text, and take
the answer tokens as the whole text's tokens after the context's. That gives the tokens a model
sees at evaluation time (the evaluation backend scores continuations the same way).

Typical use inside a method::

    with trainable(model, params):                  # only `params` get gradients
        batch = encode_pairs(tokenizer, prompts, answers, device=model_device(model))
        logp = answer_logprobs(model, batch, reduction="mean")   # (B,), differentiable
        loss = -logp.mean()
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeVar

import torch

from ksmith.errors import KsmithError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ksmith.methods.base import TextPair, UpdateProblem

T = TypeVar("T")
Reduction = Literal["sum", "mean"]
IGNORE = -100  # label value of positions that carry no loss (prompt and padding)


@dataclass(frozen=True)
class PairBatch:
    """A right-padded batch of ``prompt + " " + answer`` sequences.

    ``input_ids``, ``attention_mask``, ``labels``: (B, T). ``labels[b, t]`` is the token id at
    position t when t is an answer token, else IGNORE; so the prompt and the padding carry no
    loss. ``prompt_lengths``: (B,) number of context tokens; the last prompt token sits at
    ``prompt_lengths - 1`` and its logits predict the first answer token.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompt_lengths: torch.Tensor

    @property
    def answer_mask(self) -> torch.Tensor:
        """(B, T) bool: True on answer tokens."""
        return self.labels != IGNORE

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def encode_pair_ids(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str
) -> tuple[list[int], list[int]]:
    """(context ids, answer ids) for ``prompt + " " + answer``, split as lm-eval does.

    The context is encoded with the tokenizer's special tokens (a BOS if it adds one); the
    answer tokens are the whole text's tokens after the context's. An answer that tokenizes to
    nothing is an error (there would be nothing to train on).
    """
    context = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    whole = tokenizer(prompt + " " + answer, add_special_tokens=True)["input_ids"]
    # A tokenizer that appends EOS would put it after the answer; drop trailing specials the
    # context also ends with, so the split point is the context length.
    while context and whole and context[-1] == whole[-1] and context[-1] in _specials(tokenizer):
        context, whole = context[:-1], whole[:-1]
    if whole[: len(context)] != context:
        # The context's tokenization changed when the answer was appended (BPE merges across
        # the boundary): fall back to encoding the answer on its own.
        answer_ids = tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
    else:
        answer_ids = whole[len(context) :]
    if not answer_ids:
        raise KsmithError(f"answer {answer!r} (after prompt {prompt!r}) encodes to no tokens")
    return list(context), list(answer_ids)


def _specials(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    return set(getattr(tokenizer, "all_special_ids", []) or [])


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    device: torch.device | str | None = None,
) -> PairBatch:
    """Tokenize (prompt, answer) pairs into a right-padded PairBatch on `device`."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    if not prompts:
        raise ValueError("encode_pairs needs at least one pair")
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    encoded = [encode_pair_ids(tokenizer, p, a) for p, a in zip(prompts, answers, strict=True)]
    width = max(len(c) + len(a) for c, a in encoded)
    input_ids = torch.full((len(encoded), width), int(pad), dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for b, (ctx, ans) in enumerate(encoded):
        n, m = len(ctx), len(ans)
        input_ids[b, : n + m] = torch.tensor(ctx + ans)
        attention[b, : n + m] = 1
        labels[b, n : n + m] = torch.tensor(ans)
    lengths = torch.tensor([len(c) for c, _ in encoded])
    return PairBatch(
        input_ids.to(device), attention.to(device), labels.to(device), lengths.to(device)
    )


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position log p(label_t | tokens < t), zero where the label is IGNORE.

    logits: (B, T, V) from a causal LM over the batch's input_ids; labels: (B, T).
    Returns (B, T) float32; position 0 is always zero (nothing predicts it).
    """
    # The logits at t-1 predict the token at t.
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    mask = shift_labels != IGNORE
    logp = torch.log_softmax(shift_logits, dim=-1)
    picked = logp.gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    picked = picked * mask
    return torch.nn.functional.pad(picked, (1, 0))  # (B, T)


def answer_logprobs(
    model: torch.nn.Module, batch: PairBatch, *, reduction: Reduction = "sum"
) -> torch.Tensor:
    """Log-probability of each example's answer tokens given its prompt: (B,), differentiable.

    ``reduction="sum"`` gives log p(answer | prompt); ``"mean"`` divides by the number of answer
    tokens (a per-token average, what fine-tuning cross-entropy minimises). Prompt and padding
    positions contribute nothing, so they receive no gradient.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    per_token = token_logprobs(logits, batch.labels)  # (B, T)
    total = per_token.sum(dim=1)
    if reduction == "sum":
        return total
    return total / batch.answer_mask.sum(dim=1).clamp(min=1)


def pair_logprobs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    answers: Sequence[str],
    *,
    reduction: Reduction = "sum",
    batch_size: int | None = None,
) -> torch.Tensor:
    """`answer_logprobs` straight from strings, in chunks of `batch_size` (all at once if None).

    Differentiable unless called under ``torch.no_grad()``; returns (N,) on the model's device.
    """
    device = model_device(model)
    size = batch_size or len(prompts)
    parts = [
        answer_logprobs(model, encode_pairs(tokenizer, p, a, device=device), reduction=reduction)
        for p, a in zip(chunks(prompts, size), chunks(answers, size), strict=True)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, device=device)


def pairs_text(pairs: Iterable[TextPair]) -> tuple[list[str], list[str]]:
    """(prompts, answers) of a sequence of TextPairs."""
    items = list(pairs)
    return [p.prompt for p in items], [p.answer for p in items]


def target_pairs(problem: UpdateProblem) -> list[TextPair]:
    """The Q+ pairs with the answer the updated model should produce.

    edit (target ``new_object``): the pairs as given (answer = new object). unlearn with target
    ``idk``: each prompt paired with an "I don't know" answer, cycling through
    ``problem.idk_answers``. unlearn with target ``neutral``: the pairs as given (answer = the
    old object, whose probability the method pushes down).
    """
    from dataclasses import replace

    if problem.target != "idk":
        return list(problem.plus)
    idk = problem.idk_answers
    return [replace(p, answer=idk[i % len(idk)]) for i, p in enumerate(problem.plus)]


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of at most `size` items (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def cycle_batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Endless consecutive batches of `size` items, wrapping around (for a retain set that is
    smaller or larger than the number of training steps). Deterministic order."""
    if not items:
        return
    i = 0
    while True:
        yield [items[(i + j) % len(items)] for j in range(min(size, len(items)))]
        i = (i + size) % len(items)


@contextlib.contextmanager
def trainable(model: torch.nn.Module, params: Iterable[torch.nn.Parameter]) -> Iterator[None]:
    """Within the block only `params` require grad; on exit every parameter's ``requires_grad``
    is restored and all ``.grad`` are cleared, so the method leaves no training state behind."""
    wanted = {id(p) for p in params}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(id(p) in wanted)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
            p.grad = None


def module_parameters(
    model: torch.nn.Module, paths: Iterable[str]
) -> dict[str, torch.nn.Parameter]:
    """Full name -> parameter for every parameter of the modules at dotted `paths` (weight and,
    if present, bias), in model order."""
    prefixes = tuple(f"{p}." for p in paths)
    out = {n: p for n, p in model.named_parameters() if n.startswith(prefixes)}
    if not out:
        raise KsmithError(f"no parameters under {sorted(paths)}")
    return out


def resolve_layers(model: torch.nn.Module, layers: Sequence[int] | None) -> list[int]:
    """Declared layer indices, normalised to 0..n-1 (negative counts from the end). None or
    empty means the middle layer, ``num_layers // 2``."""
    from ksmith.models.arch import num_layers

    n = num_layers(model)
    if not layers:
        return [n // 2]
    out = []
    for layer in layers:
        if not -n <= layer < n:
            raise KsmithError(f"layer {layer} out of range: the model has {n} layers")
        out.append(layer % n)
    return sorted(set(out))
