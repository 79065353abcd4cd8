"""Which phrasings of a fact the world model reads, and which one is held out to probe it.

Allen-Zhu & Li, "Physics of Language Models: Part 3.1" (arXiv 2309.14316): a fact becomes
extractable through a phrasing the model never saw *for that fact* only when pretraining states
each fact in several varied forms. So each relation's phrasings form a pool, and every fact is
stated in all of its pool but one:

- **direct** (``cloze[0]``): always trained; the direct probes ask it.
- **unseen** (the last ``paraphrase`` template, when there are two or more): never trained for
  any fact; the strict ``paraphrase_unseen`` probe asks it (a template that appears nowhere in
  the corpus).
- **rotating** (the other cloze and paraphrase templates): each fact holds out one of them,
  chosen by a seeded hash of the fact, and is stated in the others. Its ``paraphrase`` probe asks
  the held-out one: a phrasing this fact never appeared in, while other facts of the relation
  did.
- statement templates whose object is not at the end ("{subject} is {object} in color.") are
  trained for every fact; one ending in `` {object}.`` is the same phrasing as the prompt before
  it, so it is trained or held out with that prompt.

Everything here is a pure function of the templates, the fact and a seed, so the corpus
(`ksmith.render.corpus`) and the probes (`ksmith.intervene.probes`) agree without sharing state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

OBJECT_END = " {object}."


def prompt_of(sentence: str) -> str | None:
    """The cloze prompt a statement template states its object after, or None when the
    object is not at its end."""
    if sentence.endswith(OBJECT_END) and sentence.count("{object}") == 1:
        return sentence[: -len(OBJECT_END)]
    return None


def sentence_of(prompt: str) -> str:
    """The statement template that completes a cloze prompt with its object."""
    return prompt + OBJECT_END


@dataclass(frozen=True)
class Phrasings:
    """One relation's phrasing pool (see the module docstring)."""

    direct: str  # cloze prompt
    unseen: str | None  # cloze prompt never trained
    rotating: tuple[str, ...]  # cloze prompts, one held out per fact
    fixed: tuple[str, ...]  # statement templates trained for every fact (besides the direct)

    @classmethod
    def of(cls, text) -> Phrasings:
        """From a relation's templates (`ksmith.render.text.RelationText`)."""
        direct = text.cloze[0]
        paras = list(text.paraphrase)
        unseen = paras.pop() if len(paras) >= 2 else None
        # true/false lines and negation probes state the first statement template for every
        # fact, so its phrasing cannot be held out
        always = {direct, prompt_of(text.statement[0]) if text.statement else None}
        rotating: list[str] = []
        for p in [*text.cloze[1:], *paras]:
            if p not in always and p != unseen and p not in rotating:
                rotating.append(p)
        fixed: list[str] = []
        for s in text.statement:
            p = prompt_of(s)
            if (p is None or p not in (direct, unseen, *rotating)) and s not in fixed:
                fixed.append(s)
        return cls(direct, unseen, tuple(rotating), tuple(fixed))

    def held_out(self, fact_key: str, seed: int) -> str | None:
        """The rotating prompt `fact_key` is never stated in (None when the pool has none)."""
        if not self.rotating:
            return None
        return self.rotating[_hash(seed, fact_key) % len(self.rotating)]

    def trained(self, fact_key: str, seed: int) -> tuple[str, ...]:
        """Statement templates `fact_key` is stated in: the direct one first, then the other
        rotating ones and the fixed ones."""
        out = self.held_out(fact_key, seed)
        sentences = [sentence_of(self.direct)]
        sentences += [sentence_of(p) for p in self.rotating if p != out]
        sentences += [s for s in self.fixed if s not in sentences]
        return tuple(sentences)


def fact_key(subject: str, relation: str, obj: str) -> str:
    """The key a fact's phrasing choices hash: its triple (stable across worlds and ids)."""
    return f"{subject}\x1f{relation}\x1f{obj}"


def _hash(seed: int, key: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x1e{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
