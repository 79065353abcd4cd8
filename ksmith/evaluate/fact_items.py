"""Which probes feed the unlearning metrics: per asked fact, its cloze prompts, its answer and
the wrong objects the world offers as its perturbations (`ksmith.evaluate.unlearning`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ksmith.errors import KsmithError


@dataclass(frozen=True)
class FactItems:
    """One fact's items for the metrics: the prompts asking it (cloze), its answer, and the
    wrong objects of the same relation the world offers as perturbations (mcq distractors)."""

    group: int
    request_id: str
    fact: tuple[str, str, str]  # subject, relation, object
    prompts: tuple[str, ...]  # paraphrase cloze prompts (the direct one when none)
    direct: str  # the direct cloze prompt ("" when the config has none)
    answer: str
    wrong: tuple[str, ...]

    def correct_requests(self) -> list[tuple[str, str]]:
        """(prompt, answer) pairs of the truth ratio's paraphrased-correct side."""
        return [(p, self.answer) for p in self.prompts]

    def perturbed_requests(self) -> list[tuple[str, str]]:
        """(prompt, wrong answer) pairs: the truth ratio's perturbed side and the MIA holdout."""
        return [(p, w) for p in self.prompts for w in self.wrong]


def fact_items(
    probes: Sequence[Mapping[str, Any]],
    qset: str,
    removed: frozenset | set = frozenset(),
    requests: Sequence[Mapping[str, Any]] = (),
) -> list[FactItems]:
    """The facts asked by `probes` (contract §3 rows of one config) in `qset`, one `FactItems`
    per (group, request, asked fact), in probe order. Q+: the facts an unlearn request
    forgets (its direct and paraphrase probes); their direct cloze prompt is the request's
    `prompt` (from `requests`, contract §2) when a probe does not give it, and the prompts are
    the paraphrase cloze prompts, else the direct one. Q-: the contextual facts that must stay,
    without those in `removed` ((s, r, o) triples the retain model lacks: `forget_set.json`).
    Distractors come from the fact's mcq probes; the format of each probe is drawn, so a fact
    with no mcq probe (no distractors) or no prompt is left out."""
    types = {
        "Q+": ("direct", "paraphrase", "paraphrase_unseen"),
        "Q-": ("contextual",),
    }.get(qset)
    if types is None:
        raise KsmithError(f"fact_items: qset '{qset}': expected Q+ or Q-")
    direct_of = {(r["group"], r["request_id"]): r["prompt"] for r in requests}
    by: dict[tuple, dict[str, Any]] = {}
    for p in probes:
        if p["qset"] != qset or p["type"] not in types:
            continue
        fact = (p["subject"], p["relation"], p["object"])
        if fact in removed or (qset == "Q+" and p.get("expect_after") != "avoid"):
            continue
        key = (p["group"], p["request_id"], fact)
        got = by.setdefault(key, {"para": [], "direct": direct_of.get(key[:2], ""), "wrong": [],
                                  "answer": p["answer_before"]})  # fmt: skip
        if p["format"] == "cloze":
            if p["type"] in ("direct", "contextual"):
                got["direct"] = got["direct"] or p["prompt"]
            elif p["type"] == "paraphrase":
                got["para"].append(p["prompt"])
        elif p["format"] == "mcq" and not got["wrong"]:
            got["wrong"] = [o for o in p["options"] if o != p["answer_before"]]
    out = []
    for (group, rid, fact), got in by.items():
        prompts = got["para"] or ([got["direct"]] if got["direct"] else [])
        if prompts and got["wrong"]:
            out.append(FactItems(int(group), rid, fact, tuple(dict.fromkeys(prompts)),
                                 got["direct"], got["answer"], tuple(got["wrong"])))  # fmt: skip
    return out
