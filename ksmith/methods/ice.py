"""ICE: in-context editing, no weight change.

Zheng et al. 2023, "Can We Edit Factual Knowledge by In-Context Learning?", arXiv 2305.12740
(IKE), in the zero-demonstration form benchmarked as ICE in KnowEdit/EasyEdit (arXiv
2401.01286): the new fact is stated in the context before the query,

    "New Fact: {prompt} {target}\\nPrompt: " + query

so the edited "model" is the base model plus a prompt prefix per request. The runner stores the
prefixes as ``g<i>/prefix.json`` (request_id -> prefix) and the evaluator prepends a request's
prefix to each of its probes. With ``scope: group`` every prefix states all of the group's new
facts (a memory of the whole batch), in request order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from ksmith.methods.base import (
    MethodParams,
    Request,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    register_method,
)
from ksmith.render.text import IN_CONTEXT

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


class ICEParams(MethodParams):
    """ICE hyper-parameters: the prefix template and which facts each prefix states."""

    template: str = Field(
        IN_CONTEXT,
        description="prefix template; {facts} is replaced by the stated fact(s)",
    )
    fact: str = Field(
        "{prompt} {target}",
        description="how one fact is stated; {prompt}: the request's cloze prompt, "
        "{target}: its new object, {subject}, {relation} also available",
    )
    separator: str = Field(" ", description="joins several facts (scope: group)")
    scope: Literal["request", "group"] = Field(
        "request", description="request: each prefix states its own fact; group: all facts"
    )

    @field_validator("template")
    @classmethod
    def _has_facts(cls, v: str) -> str:
        if "{facts}" not in v:
            raise ValueError("template must contain {facts}")
        _check_format(v, facts="")
        return v

    @field_validator("fact")
    @classmethod
    def _fact_fields(cls, v: str) -> str:
        _check_format(v, prompt="", target="", subject="", relation="")
        return v


def _check_format(template: str, **fields: str) -> None:
    try:
        template.format(**fields)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"bad placeholder {e} (allowed: {sorted(fields)})") from e


@register_method
class ICE(UpdateMethod):
    """In-context editing (Zheng et al. 2023, arXiv 2305.12740): the new fact as a prefix."""

    name = "ice"
    kind = "edit"
    paper = "Zheng et al. 2023, in-context knowledge editing (arXiv 2305.12740)"
    Params = ICEParams

    def state(self, r: Request) -> str:
        return self.params.fact.format(
            prompt=r.prompt, target=r.new_object, subject=r.subject, relation=r.relation
        )

    def apply_batch(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        problem: UpdateProblem,
    ) -> UpdateResult:
        p = self.params
        facts = {r.request_id: self.state(r) for r in problem.requests}
        if p.scope == "group":
            everything = p.separator.join(facts.values())
            prefixes = {rid: p.template.format(facts=everything) for rid in facts}
        else:
            prefixes = {rid: p.template.format(facts=fact) for rid, fact in facts.items()}
        return UpdateResult(prompt_prefix=prefixes)
