"""Turn facts into text with a graph spec's templates.

Training text uses the `statement`, `question`, `cloze` and `negation` templates; `paraphrase`
templates are held out for evaluation and never rendered into the corpus. Prompt shapes are
chosen so that ``prompt + " " + answer`` of a direct probe is a line (or a line's prefix) of the
training corpus: a model trained on the corpus can answer it.
"""

from __future__ import annotations

from dataclasses import dataclass

TRUE, FALSE = "true", "false"
YES, NO = "yes", "no"
TF_PREFIX = "True or false:"


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

    def text(self, relation: str) -> RelationText:
        return self._rel[relation]

    # -- training forms ---------------------------------------------------------------------

    def cloze(self, relation: str, subject: str) -> str:
        """The training cloze prompt (first cloze template), ending before the object."""
        return fill(self._rel[relation].cloze[0], subject)

    def question(self, relation: str, subject: str) -> str:
        """The training question (first question template); its answer is the object."""
        return fill(self._rel[relation].question[0], subject)

    def training_prompts(self, relation: str, subject: str) -> list[str]:
        """Every training-template prompt of (subject, relation): cloze forms, then questions."""
        t = self._rel[relation]
        return [fill(c, subject) for c in t.cloze] + [fill(q, subject) for q in t.question]

    def statement(self, relation: str, subject: str, obj: str, variant: int = 0) -> str:
        t = self._rel[relation].statement
        return fill(t[variant % len(t)], subject, obj)

    def negation(self, relation: str, subject: str, obj: str) -> str:
        return fill(self._rel[relation].negation[0], subject, obj)

    def tf_prompt(self, sentence: str) -> str:
        """A true/false question about a sentence; answered by ``true`` or ``false``."""
        return f"{TF_PREFIX} {sentence}"

    # -- evaluation-only forms -----------------------------------------------------------------

    def paraphrases(self, relation: str, subject: str) -> list[str]:
        """Held-out cloze prompts (never in the corpus)."""
        return [fill(p, subject) for p in self._rel[relation].paraphrase]

    def reverse(self, relation: str, obj: str) -> str:
        """A cloze prompt about the object, ending before the subject."""
        return fill(self._rel[relation].reverse[0], "", obj)

    def comparison(self, relation: str, a: str, b: str) -> str:
        """A yes/no question: do `a` and `b` have the same answer for `relation`?"""
        return f"{self.question(relation, a)} {self.question(relation, b)} Same answer?"
