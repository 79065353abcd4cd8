"""Turn facts into text with a graph spec's templates.

Which cloze and paraphrase phrasings a fact is trained in, and which one probes it as a
paraphrase, is decided per fact by `ksmith.render.phrasing`; the last paraphrase template of a
relation is never trained at all (the strict, unseen paraphrase). Prompt shapes are chosen so
that ``prompt + " " + answer`` of a direct probe is in the training corpus: a model trained on
the corpus can answer it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ksmith.render.phrasing import Phrasings, fact_key

TRUE, FALSE = "true", "false"
YES, NO = "yes", "no"
TF_PREFIX = "True or false:"
# Reasoned probes (Allen-Zhu & Li, "Physics of Language Models: Part 3.2, Knowledge
# Manipulation", arXiv 2309.14402): a true/false or same-answer question about stored facts is
# answered after the model first writes those facts out (`Renderer.recall`), then the cue, then
# the answer. Their finding: without such a chain of thought even large models do not learn to
# classify or compare stored knowledge; with it in training and inference, they do. The corpus
# teaches the form; a probe's `cue` column tells the scorer to let the model write its own
# recall first (ksmith.evaluate.scoring).
TF_CUE = "Answer:"
COMPARISON_CUE = "Same answer?"
CUES = {"negation": TF_CUE, "comparison": COMPARISON_CUE}  # reasoned probe type -> its cue
# A (subject, relation) with more values than this is asked without the recall (its lines and
# probes have no cue): listing a region's many inhabitants is a long enumeration the 2-layer
# model would have to learn in a fixed order, while a membership question about it asks one
# stored fact.
RECALL_MAX_VALUES = 3


def reasoned(*value_counts: int) -> bool:
    """Whether a true/false or comparison question about keys with these many values is asked
    with the recall before its cue."""
    return all(0 < n <= RECALL_MAX_VALUES for n in value_counts)


# In-context statement of a fact before a prompt: the format of in-context editing (ICE,
# KnowEdit's zero-demonstration IKE), which the corpus teaches the world model to follow.
IN_CONTEXT = "New Fact: {facts}\nPrompt: "


def fill(template: str, subject: str = "", obj: str = "") -> str:
    """Fill ``{subject}`` and ``{object}`` (plain replacement: names never contain braces)."""
    return template.replace("{subject}", subject).replace("{object}", obj)


@dataclass(frozen=True)
class RelationText:
    """The templates of one relation, as tuples (spec order)."""

    statement: tuple[str, ...]
    question: tuple[str, ...]
    cloze: tuple[str, ...]
    paraphrase: tuple[str, ...]
    reverse: tuple[str, ...]
    negation: tuple[str, ...]


class Renderer:
    """Renders any relation of one graph spec (hierarchy relation included)."""

    def __init__(self, spec):
        self._rel: dict[str, RelationText] = {}
        self._phrasings: dict[str, Phrasings] = {}
        self.seed = int(spec.seed)  # of every fact's held-out phrasing (`phrasing_seed`)
        for name in spec.relation_names():
            t = spec.templates(name)
            self._rel[name] = RelationText(
                tuple(t.statement),
                tuple(t.question),
                tuple(t.cloze),
                tuple(t.paraphrase),
                tuple(t.reverse),
                tuple(t.negation),
            )
            self._phrasings[name] = Phrasings.of(self._rel[name])

    def text(self, relation: str) -> RelationText:
        return self._rel[relation]

    # -- training forms ---------------------------------------------------------------------

    def cloze(self, relation: str, subject: str) -> str:
        """The training cloze prompt (first cloze template), ending before the object."""
        return fill(self._rel[relation].cloze[0], subject)

    def question(self, relation: str, subject: str) -> str:
        """The training question (first question template); its answer is the object."""
        return fill(self._rel[relation].question[0], subject)

    def phrasings(self, relation: str) -> Phrasings:
        return self._phrasings[relation]

    def training_prompts(self, relation: str, subject: str, obj: str) -> list[str]:
        """The prompts the fact (subject, relation, obj) is trained in: the direct cloze, the
        other cloze forms it is stated in (never its held-out paraphrase), then the questions."""
        ph = self._phrasings[relation]
        out = ph.held_out(fact_key(subject, relation, obj), self.seed)
        clozes = [ph.direct, *(p for p in ph.rotating if p != out)]
        return [fill(c, subject) for c in clozes] + [
            fill(q, subject) for q in self._rel[relation].question
        ]

    def statement(self, relation: str, subject: str, obj: str, variant: int = 0) -> str:
        t = self._rel[relation].statement
        return fill(t[variant % len(t)], subject, obj)

    def negation(self, relation: str, subject: str, obj: str) -> str:
        return fill(self._rel[relation].negation[0], subject, obj)

    def tf_prompt(self, sentence: str) -> str:
        """A true/false question about a sentence; the model's recall, `TF_CUE`, then ``true``
        or ``false`` follow it."""
        return f"{TF_PREFIX} {sentence}"

    def recall(self, relation: str, subject: str, values) -> str:
        """The chain of thought of a reasoned probe about (subject, relation): the first
        statement template once per value, values in sorted order ("" for none)."""
        return " ".join(self.statement(relation, subject, v) for v in sorted(values))

    # -- evaluation-only forms -----------------------------------------------------------------

    def paraphrase(self, relation: str, subject: str, obj: str) -> str | None:
        """The cloze prompt the fact (subject, relation, obj) is never stated in, while other
        facts of the relation are (None when the relation has a single phrasing)."""
        p = self._phrasings[relation].held_out(fact_key(subject, relation, obj), self.seed)
        return None if p is None else fill(p, subject)

    def unseen_paraphrase(self, relation: str, subject: str) -> str | None:
        """The cloze prompt of the relation's template that no corpus line uses (None when the
        relation has fewer than two paraphrase templates)."""
        p = self._phrasings[relation].unseen
        return None if p is None else fill(p, subject)

    def reverse(self, relation: str, obj: str) -> str:
        """A cloze prompt about the object, ending before the subject."""
        return fill(self._rel[relation].reverse[0], "", obj)

    def comparison(self, relation: str, a: str, b: str) -> str:
        """Do `a` and `b` have the same answer for `relation`? Both questions; the model's
        recall of both, `COMPARISON_CUE`, then ``yes`` or ``no`` follow it."""
        return f"{self.question(relation, a)} {self.question(relation, b)}"
