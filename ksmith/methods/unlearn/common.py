"""The training loop every gradient-based unlearning method shares.

An unlearning method here is a forget objective on the Q+ view (``problem.plus``: prompt and the
old answer) plus, when its paper defines one, a retain objective on the Q- view
(``problem.minus``). The loop below owns everything else: encoding the pairs once, seeded
mini-batches, the optimizer, gradient clipping, which parameters may move, and per-step logs.
A method subclass supplies only its losses (and optional precomputation from the model before
unlearning, such as NPO's reference log-probabilities or RMU's frozen activations).

The model is run in eval mode (no dropout) so that a seed fixes the result exactly; its
train/eval flag, every parameter's ``requires_grad`` and ``.grad`` are restored afterwards
(``train_utils.trainable``). Every random choice (mini-batch order, RMU's u, IdK answers) comes
from ``problem.seed``.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
from pydantic import Field
from tqdm.auto import tqdm

from ksmith.errors import KsmithError
from ksmith.methods.base import MethodParams, TextPair, UpdateMethod, UpdateProblem, UpdateResult
from ksmith.methods.train_utils import (
    IGNORE,
    PairBatch,
    answer_logprobs,
    encode_pairs,
    model_device,
    pairs_text,
    trainable,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


class TrainParams(MethodParams):
    """Optimisation knobs shared by every gradient-based unlearning method."""

    steps: int = Field(30, ge=1, description="optimizer steps (each on one forget mini-batch)")
    lr: float = Field(1e-3, gt=0, description="learning rate")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay (adamw)")
    batch_size: int = Field(16, ge=1, description="forget pairs per step (capped at the set size)")
    max_grad_norm: float | None = Field(
        1.0, gt=0, description="clip the global gradient norm to this; null for no clipping"
    )


class RetainParams(TrainParams):
    """Adds the retain term: alpha * L_retain on the Q- view."""

    alpha: float = Field(1.0, ge=0, description="weight of the retain term on the Q- view")
    retain_batch_size: int = Field(
        16, ge=1, description="retain pairs per step (capped at the set size)"
    )


@dataclass
class _Cycler:
    """Seeded epoch-style sampler: a fresh permutation of range(n) whenever one runs out."""

    n: int
    size: int
    gen: torch.Generator

    def __post_init__(self) -> None:
        self.size = min(self.size, self.n)
        self._perm = torch.randperm(self.n, generator=self.gen)
        self._pos = 0

    def next(self) -> torch.Tensor:
        if self._pos + self.size > self.n:
            self._perm = torch.randperm(self.n, generator=self.gen)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self.size]
        self._pos += self.size
        return idx


def forget_view(problem: UpdateProblem) -> list[TextPair]:
    """The Q+ pairs to forget; the requests' own (prompt, old object) when `plus` is empty."""
    if problem.plus:
        return list(problem.plus)
    return [TextPair(r.prompt, r.old_object, r.request_id) for r in problem.requests]


def encode(
    tokenizer: PreTrainedTokenizerBase, pairs: list[TextPair], device: torch.device
) -> PairBatch:
    """All `pairs` as one right-padded batch (train_utils.encode_pairs)."""
    prompts, answers = pairs_text(pairs)
    return encode_pairs(tokenizer, prompts, answers, device=device)


def select(batch: PairBatch, idx: torch.Tensor) -> PairBatch:
    """Rows `idx` of `batch`, trimmed to the longest selected row."""
    mask = batch.attention_mask[idx]
    width = int(mask.sum(dim=1).max())
    return PairBatch(
        batch.input_ids[idx, :width],
        mask[:, :width],
        batch.labels[idx, :width],
        batch.prompt_lengths[idx],
    )


def row_chunks(batch: PairBatch, size: int = 64) -> Iterator[PairBatch]:
    """Consecutive slices of at most `size` rows, full width (for precomputation)."""
    for start in range(0, len(batch), size):
        sl = slice(start, start + size)
        yield PairBatch(
            batch.input_ids[sl],
            batch.attention_mask[sl],
            batch.labels[sl],
            batch.prompt_lengths[sl],
        )


def predict_mask(batch: PairBatch) -> torch.Tensor:
    """(B, T) bool: positions whose next-token prediction is an answer token."""
    m = torch.zeros_like(batch.labels, dtype=torch.bool)
    m[:, :-1] = batch.labels[:, 1:] != IGNORE
    return m


def answer_lengths(batch: PairBatch) -> torch.Tensor:
    """(B,) number of answer tokens |y| per row."""
    return batch.answer_mask.sum(dim=1)


def nll(model: torch.nn.Module, batch: PairBatch) -> torch.Tensor:
    """Token-mean negative log-likelihood of the answers in `batch` (a scalar)."""
    logp = answer_logprobs(model, batch, reduction="sum")  # (B,)
    return -logp.sum() / answer_lengths(batch).sum().clamp(min=1)


class GradientUnlearning(UpdateMethod):
    """Base of the loss-based unlearning methods: ``L = L_forget + alpha * L_retain``.

    Subclasses implement `forget_loss`; they may override `forget_pairs` (the pairs the forget
    term trains on, e.g. IdK answers), `prepare` (precompute from the model before any step),
    `retain_loss` (default: NLL of the Q- answers) and `trainable` (default: every parameter).
    """

    kind: ClassVar[Literal["unlearn"]] = "unlearn"
    uses_retain: ClassVar[bool] = True
    Params: ClassVar[type[MethodParams]] = RetainParams

    # ---- hooks for subclasses -------------------------------------------------------------
    def forget_pairs(self, problem: UpdateProblem) -> list[TextPair]:
        return forget_view(problem)

    def prepare(
        self,
        model: torch.nn.Module,
        forget: PairBatch,
        retain: PairBatch | None,
        gen: torch.Generator,
    ) -> None:
        """Precompute anything taken from the model before unlearning (no grad)."""

    @abstractmethod
    def forget_loss(
        self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor
    ) -> torch.Tensor:
        """The forget objective on one mini-batch; `idx` indexes rows of the full forget set."""

    def retain_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        return nll(model, batch)

    def retain_regularizer(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        """An extra, already weighted term on the retain mini-batch (e.g. a KL); None = none."""
        return None

    def trainable(self, model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def release(self) -> None:
        """Drop whatever `prepare` cached (called when the loop ends, also on error)."""

    # ---- the loop -------------------------------------------------------------------------
    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        if problem.kind != "unlearn":
            raise KsmithError(
                f"method '{self.name}' unlearns; got a problem of kind '{problem.kind}'"
            )
        p = self.params
        assert isinstance(p, TrainParams)
        device = model_device(model)
        forget_pairs = self.forget_pairs(problem)
        if not forget_pairs:
            raise KsmithError(f"method '{self.name}': the problem has nothing to forget")
        forget = encode(tokenizer, forget_pairs, device)
        use_retain = self.uses_retain and len(problem.minus) > 0
        retain = encode(tokenizer, list(problem.minus), device) if use_retain else None
        if self.uses_retain and not problem.minus:
            log.warning("%s: the problem has no retain (Q-) pairs; training without it", self.name)

        gen = torch.Generator().manual_seed(problem.seed)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self.prepare(model, forget, retain, gen)
            named = self.trainable(model)
            with trainable(model, [q for _, q in named]):
                history = self._train(model, forget, retain, gen)
        finally:
            self.release()
            model.train(was_training)
        return UpdateResult(log={**history, "trainable_parameters": sorted(n for n, _ in named)})

    def _train(
        self,
        model: torch.nn.Module,
        forget: PairBatch,
        retain: PairBatch | None,
        gen: torch.Generator,
    ) -> dict[str, list[float]]:
        """`steps` optimizer steps on L_forget + alpha * L_retain (+ regularizer); the losses."""
        p = self.params
        assert isinstance(p, TrainParams)
        alpha = getattr(p, "alpha", 0.0)
        params = [q for q in model.parameters() if q.requires_grad]
        opt = self._optimizer(params)
        forget_sampler = _Cycler(len(forget), p.batch_size, gen)
        retain_sampler = (
            _Cycler(len(retain), getattr(p, "retain_batch_size", 16), gen) if retain else None
        )
        history: dict[str, list[float]] = {
            "loss": [],
            "forget_loss": [],
            "retain_loss": [],
            "regularizer": [],
        }
        for _ in tqdm(range(p.steps), desc=self.name, leave=False, disable=None):
            idx = forget_sampler.next()
            l_forget = self.forget_loss(model, select(forget, idx), idx)
            loss = l_forget
            if retain is not None and retain_sampler is not None:
                r_idx = retain_sampler.next()
                r_batch = select(retain, r_idx)
                if alpha > 0:
                    l_retain = self.retain_loss(model, r_batch, r_idx)
                    loss = loss + alpha * l_retain
                    history["retain_loss"].append(float(l_retain.detach()))
                reg = self.retain_regularizer(model, r_batch, r_idx)
                if reg is not None:
                    loss = loss + reg
                    history["regularizer"].append(float(reg.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if p.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, p.max_grad_norm)
            opt.step()
            history["loss"].append(float(loss.detach()))
            history["forget_loss"].append(float(l_forget.detach()))
        return {k: v for k, v in history.items() if v}

    def _optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        p = self.params
        assert isinstance(p, TrainParams)
        if p.optimizer == "sgd":
            return torch.optim.SGD(params, lr=p.lr, weight_decay=p.weight_decay)
        return torch.optim.AdamW(params, lr=p.lr, weight_decay=p.weight_decay)
