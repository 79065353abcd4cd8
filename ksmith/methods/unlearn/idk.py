"""Unlearning by learning a replacement answer: IdK fine-tuning and ReLearn.

Both descend (not ascend) a cross-entropy on the forget prompts, with a new answer in place of
the old one, plus alpha * L_NLL(D_r) on the retain view:

* **IdK** (TOFU, Maini et al. 2024, arXiv 2401.06121, Sec. 4 "Preference Optimization"): each
  forget prompt is paired with a refusal drawn (seeded) from ``problem.idk_answers``;
  L = L_NLL(D_f^idk) + alpha * L_NLL(D_r).
* **ReLearn** (Xu et al. 2025, "ReLearn: Unlearning via Learning for Large Language Models",
  arXiv 2502.11190): positive optimisation on forget prompts whose answers are replaced by
  plausible, non-sensitive alternatives, L = L_CE(D_f^aug) + alpha * L_CE(D_r) + lambda_KL *
  KL(pi_ref || pi_theta) on D_r. The paper writes alternatives with an LLM; our synthetic world
  has closed value ranges, but an UpdateProblem does not carry them, so alternatives are taken
  from the answers the problem itself shows (see `alternatives`).
"""

from __future__ import annotations

import copy
import logging
import random
import re
from typing import ClassVar

import torch
from pydantic import Field

from ksmith.errors import KsmithError
from ksmith.methods.base import (
    MethodParams,
    TargetKind,
    TextPair,
    UpdateProblem,
    register_method,
)
from ksmith.methods.train_utils import PairBatch
from ksmith.methods.unlearn.common import (
    GradientUnlearning,
    RetainParams,
    forget_view,
    nll,
    predict_mask,
)

log = logging.getLogger(__name__)


class IdKParams(RetainParams):
    """IdK fine-tuning: the shared knobs and the retain weight alpha."""


class ReLearnParams(RetainParams):
    """ReLearn: alternatives per prompt and the optional KL weight."""

    alternatives_per_prompt: int = Field(
        1, ge=1, description="distinct alternative answers learned per forget prompt"
    )
    kl_weight: float = Field(
        0.0, ge=0, description="weight of KL(pi_ref || pi_theta) on retain answers; 0 = off"
    )


@register_method
class IdKFineTune(GradientUnlearning):
    """IdK: fine-tune forget prompts toward an "I don't know" answer (TOFU, arXiv 2401.06121)."""

    name: ClassVar[str] = "idk"
    paper: ClassVar[str] = "TOFU, Maini et al. 2024, arXiv 2401.06121 (IdK baseline)"
    Params: ClassVar[type[MethodParams]] = IdKParams

    def target_kind(self) -> TargetKind:
        return "idk"

    def forget_pairs(self, problem: UpdateProblem) -> list[TextPair]:
        if not problem.idk_answers:
            raise KsmithError("idk: the problem declares no idk_answers")
        rng = random.Random(problem.seed)
        return [
            TextPair(p.prompt, rng.choice(problem.idk_answers), p.request_id)
            for p in forget_view(problem)
        ]

    def apply_batch(self, model, tokenizer, problem):
        # A word-level world tokenizer may not know the refusal's words: say so, since the
        # model would then learn to answer "<unk> <unk>".
        unk = tokenizer.unk_token_id
        for answer in problem.idk_answers:
            if (
                unk is not None
                and unk in tokenizer(" " + answer, add_special_tokens=False)["input_ids"]
            ):
                log.warning("idk: %r has words the tokenizer does not know", answer)
        return super().apply_batch(model, tokenizer, problem)

    def forget_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        return nll(model, batch)


def _template(prompt: str, subject: str) -> re.Pattern[str] | None:
    """The prompt with its subject replaced by a wildcard, or None if the subject is absent."""
    if subject not in prompt:
        return None
    return re.compile(".+".join(re.escape(part) for part in prompt.split(subject)) + r"\Z")


def alternatives(problem: UpdateProblem, per_prompt: int = 1) -> list[TextPair]:
    """ReLearn's positive forget pairs: each forget prompt with answers other than its old one.

    Candidates, in order of preference (all seeded by ``problem.seed``):
    1. answers of pairs in `plus` or `minus` whose prompt fits one of the request's own
       templates with another subject: same template, same relation, hence same value range;
    2. otherwise every answer seen in `plus` or `minus`.
    The request's old object and the pair's own answer are never candidates.
    """
    rng = random.Random(problem.seed)
    forget = forget_view(problem)
    seen = list(dict.fromkeys(p.answer for p in (*problem.plus, *problem.minus)))
    by_id = {r.request_id: r for r in problem.requests}
    out: list[TextPair] = []
    for pair in forget:
        req = by_id.get(pair.request_id)
        banned = {pair.answer} | ({req.old_object} if req else set())
        pool: list[str] = []
        if req is not None:
            own = [p.prompt for p in forget if p.request_id == req.request_id] or [req.prompt]
            templates = [t for t in (_template(q, req.subject) for q in own) if t is not None]
            pool = list(
                dict.fromkeys(
                    p.answer
                    for p in (*problem.plus, *problem.minus)
                    if any(t.match(p.prompt) for t in templates)
                )
            )
        pool = [a for a in pool if a not in banned] or [a for a in seen if a not in banned]
        if not pool:
            raise KsmithError(
                f"relearn: no alternative answer for {pair.prompt!r}: the problem shows no "
                f"answer other than {pair.answer!r}"
            )
        for answer in rng.sample(pool, min(per_prompt, len(pool))):
            out.append(TextPair(pair.prompt, answer, pair.request_id))
    return out


@register_method
class ReLearn(GradientUnlearning):
    """ReLearn: learn alternative answers instead of ascending (arXiv 2502.11190)."""

    name: ClassVar[str] = "relearn"
    paper: ClassVar[str] = (
        "Xu et al. 2025, ReLearn: Unlearning via Learning for Large Language Models, "
        "arXiv 2502.11190"
    )
    Params: ClassVar[type[MethodParams]] = ReLearnParams

    def forget_pairs(self, problem: UpdateProblem) -> list[TextPair]:
        return alternatives(problem, self.params.alternatives_per_prompt)  # type: ignore[attr-defined]

    def prepare(self, model, forget, retain, gen) -> None:
        # pi_ref for the KL term: a frozen copy, kept only when the term is on.
        self.ref = None
        if self.params.kl_weight > 0 and retain is not None:  # type: ignore[attr-defined]
            self.ref = copy.deepcopy(model).eval().requires_grad_(False)

    def release(self) -> None:
        self.ref = None

    def forget_loss(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        return nll(model, batch)

    def retain_regularizer(self, model: torch.nn.Module, batch: PairBatch, idx: torch.Tensor):
        """lambda_KL * KL(pi_ref || pi_theta), averaged over the retain answer positions."""
        if self.ref is None:
            return None
        kw = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        m = predict_mask(batch)  # (B, T): positions predicting answer tokens
        logp = torch.log_softmax(model(**kw).logits[m].float(), dim=-1)  # (n, V)
        with torch.no_grad():
            logp_ref = torch.log_softmax(self.ref(**kw).logits[m].float(), dim=-1)  # (n, V)
        kl = (logp_ref.exp() * (logp_ref - logp)).sum(-1).mean()
        return self.params.kl_weight * kl  # type: ignore[attr-defined]
