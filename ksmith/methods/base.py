"""The update contract shared by every editing and unlearning method.

docs/design.md, "The unified problem": a request set R of size k defines Q+ (what must change) and Q-
(what must stay); every method solves, exactly or approximately,

    theta' = argmin L_target(theta'; Q+, q_target) + lambda_pres L_pres(theta'; Q-)
                    + lambda_reg R(theta', theta)

A method is a class registered in `METHODS` with a pydantic `Params` model (defaults in
``specs/methods/<name>.yaml``) and one entry point, ``apply(model, tokenizer, problem)``, which
changes the model in place (or returns a prompt prefix, for in-context editing). The runner
(``ksmith update``) diffs the weights to store a delta, so methods never handle files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from ksmith.registry import Registry

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

Kind = Literal["edit", "unlearn"]
TargetKind = Literal["new_object", "neutral", "idk"]
Mode = Literal["batch", "sequential"]


@dataclass(frozen=True)
class Request:
    """One intervention: (subject, relation, old_object) -> new_object, or -> nothing.

    `prompt` is the training-template cloze prompt with the subject filled in, ending right
    before the answer (no trailing space); the answer is scored as ``" " + object``.
    """

    request_id: str
    subject: str
    relation: str
    prompt: str
    old_object: str
    new_object: str | None  # None for unlearn

    @property
    def target(self) -> str | None:
        return self.new_object


@dataclass(frozen=True)
class TextPair:
    """A (prompt, answer) training pair; the answer continues the prompt after one space."""

    prompt: str
    answer: str
    request_id: str = ""


@dataclass(frozen=True)
class UpdateProblem:
    """Everything a method may see. Never the held-out evaluation probes.

    `plus` is the Q+ training view: prompts (training templates only) whose answer must become
    the new object (edit) or must stop being the old one (unlearn; `answer` is then the old
    object). `minus` is the Q- training view (retain set): facts that must stay, disjoint from the
    evaluation's contextual probes. `target` says what an unlearned prompt should turn into.
    """

    kind: Kind
    requests: tuple[Request, ...]
    plus: tuple[TextPair, ...] = ()
    minus: tuple[TextPair, ...] = ()
    target: TargetKind = "new_object"
    mode: Mode = "batch"
    idk_answers: tuple[str, ...] = ("I don't know",)
    seed: int = 0
    # Text for second-moment statistics (ROME/MEMIT/AlphaEdit): the world's training corpus, or
    # a declared local corpus. Empty: methods fall back to their `mom2_corpus_path` parameter.
    corpus: tuple[str, ...] = ()
    # Identifies the unedited model for statistics caches; None: hashed from the weights.
    model_fingerprint: str | None = None

    def subproblems(self) -> list[UpdateProblem]:
        """One problem per request (sequential, lifelong editing), each with its own Q+ view
        and the shared Q- view."""
        return [
            replace(
                self,
                requests=(r,),
                plus=tuple(p for p in self.plus if p.request_id == r.request_id),
                mode="batch",
            )
            for r in self.requests
        ]


@dataclass
class UpdateResult:
    """What `apply` returns besides changing the model in place.

    `prompt_prefix` (in-context editing) maps request ids to a text the evaluator prepends to
    that request's probes. `added_modules` tells the runner to save a full model, not a delta.
    `log` holds per-step numbers (losses) for the update record, JSON-serialisable; every number
    under a key containing ``"loss"`` (at any depth, in lists too) must be finite: the runner
    checks it and stops the run otherwise.
    """

    prompt_prefix: dict[str, str] = field(default_factory=dict)
    added_modules: bool = False
    log: dict[str, Any] = field(default_factory=dict)


class MethodParams(BaseModel):
    """Base for each method's hyper-parameters: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class UpdateMethod(ABC):
    """One editing or unlearning algorithm.

    Subclasses set `name`, `kind`, `paper` (citation with arXiv id), `Params`, and implement
    `apply_batch`; register with ``@register_method``. Sequential mode is handled here: requests
    are applied one after another on the same model, and the method instance keeps any running
    state (AlphaEdit's key cache). The runner seeds torch before `apply`, puts the model in eval
    mode (no dropout), and restores nothing itself: a method leaves the model with its update
    applied, and should leave `requires_grad` flags and `.grad` as it found them
    (``ksmith.methods.train_utils.trainable`` does that).

    `on_step`, when set (by the runner, for checkpoints along a lifelong stream), is called in
    sequential mode after each request as ``on_step(edits_so_far, merged_result_so_far)``, with
    the model in the state those edits left it; it must not change the model.
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    paper: ClassVar[str]
    Params: ClassVar[type[MethodParams]] = MethodParams
    on_step: Callable[[int, UpdateResult], None] | None = None

    def __init__(self, params: MethodParams | None = None):
        self.params = params if params is not None else self.Params()

    def target_kind(self) -> TargetKind:
        """What an updated Q+ prompt should produce: the new object (edit), or for unlearning a
        neutral answer (the old object made unlikely) by default; IdK-style methods override
        this to return ``"idk"``. The runner sets ``UpdateProblem.target`` from it."""
        return "new_object" if self.kind == "edit" else "neutral"

    def apply(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        from ksmith.methods.layers import check_layers, model_depth

        check_layers(self.name, self.params, model_depth(model))
        if problem.mode == "sequential":
            merged = UpdateResult()
            for i, sub in enumerate(problem.subproblems()):
                res = self.apply_batch(model, tokenizer, sub)
                merged.prompt_prefix.update(res.prompt_prefix)
                merged.added_modules |= res.added_modules
                merged.log[f"step{i}"] = res.log
                if self.on_step is not None:
                    self.on_step(i + 1, merged)
            return merged
        return self.apply_batch(model, tokenizer, problem)

    @abstractmethod
    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        """Apply all of `problem.requests` at once, in place."""


METHODS: Registry[type[UpdateMethod]] = Registry("method", entry_point_group="ksmith.methods")

_M = TypeVar("_M", bound=type[UpdateMethod])


def register_method(cls: _M) -> _M:
    """Class decorator: register `cls` in METHODS under ``cls.name`` (with its kind and paper).

    Checks the class declares what the registry and ``ksmith methods`` need; a duplicate name
    raises. ``@METHODS.register(name, kind=...)`` also works but this keeps name and kind in one
    place.
    """
    for attr in ("name", "kind", "paper"):
        if not isinstance(getattr(cls, attr, None), str):
            raise TypeError(f"{cls.__qualname__} must set class attribute {attr!r} (a string)")
    if cls.kind not in ("edit", "unlearn"):
        raise TypeError(f"{cls.__qualname__}.kind must be 'edit' or 'unlearn', not {cls.kind!r}")
    METHODS.register(cls.name, kind=cls.kind, paper=cls.paper)(cls)
    return cls
