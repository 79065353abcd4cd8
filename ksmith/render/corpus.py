"""The world model's training corpus: every fact of the closure in training templates.

Per fact (base and derived): one statement (templates rotate over facts), the cloze form when
the statement does not already begin with it, the training question with its answer, and two
true/false lines (the statement is true, its negation is false). Every second fact (by default)
also gets a true/false line about a wrong object, so "true" is not the only answer ever seen.
Paraphrase templates are never used here: they are held out for evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator

from ksmith.render.text import FALSE, TRUE, Renderer


def range_values(world, relation: str, subject: str, cache: dict) -> list[str]:
    """`world.range_values`, cached per relation (per subject level for the hierarchy)."""
    hier = relation == world.spec.hierarchy.relation
    key = (relation, world.level_of(subject) if hier else None)
    if key not in cache:
        cache[key] = list(world.range_values(relation, subject if hier else None))
    return cache[key]


def _draw(values: list[str], held: set[str], rng: random.Random) -> str | None:
    """A random value not in `held` (rejection first: ranges are usually large)."""
    for _ in range(8):
        if not values:
            return None
        v = values[rng.randrange(len(values))]
        if v not in held:
            return v
    free = [v for v in values if v not in held]
    return free[rng.randrange(len(free))] if free else None


def world_facts(world) -> list:
    """The closure's facts in a stable order (by fact id), independent of hashing."""
    facts = world.facts
    items = list(facts.values()) if isinstance(facts, dict) else list(facts)
    items.sort(key=lambda f: f.id)
    return items


def corpus_lines(
    world,
    renderer: Renderer,
    *,
    seed: int,
    wrong_object_every: int = 2,
    facts: Iterable | None = None,
) -> Iterator[tuple[str, str, str]]:
    """Yield ``(domain, fact_id, text)`` rows for `world`'s closure, in a deterministic order.

    `wrong_object_every`: one fact in this many also gets a false statement about a value it
    does not hold (0 disables).
    """
    domain = world.spec.domain
    rng = random.Random(seed)
    ranges: dict = {}
    for i, f in enumerate(world_facts(world) if facts is None else facts):
        s, r, o = f.subject, f.relation, f.object
        statement = renderer.statement(r, s, o, variant=i)
        yield domain, f.id, statement
        cloze = renderer.cloze(r, s)
        if not statement.startswith(f"{cloze} {o}"):
            yield domain, f.id, f"{cloze} {o}"
        yield domain, f.id, f"{renderer.question(r, s)} {o}"
        first = renderer.statement(r, s, o)
        yield domain, f.id, f"{renderer.tf_prompt(first)} {TRUE}"
        yield domain, f.id, f"{renderer.tf_prompt(renderer.negation(r, s, o))} {FALSE}"
        if wrong_object_every and i % wrong_object_every == 0:
            values = range_values(world, r, s, ranges)
            held = set(world.objects(s, r))
            w = _draw(values, held, rng)
            if w is not None:
                if (i // max(wrong_object_every, 1)) % 2 == 0:
                    yield domain, "", f"{renderer.tf_prompt(renderer.statement(r, s, w))} {FALSE}"
                else:
                    yield domain, "", f"{renderer.tf_prompt(renderer.negation(r, s, w))} {TRUE}"
