"""The world model's training corpus: every fact of the closure, in the forms the probes ask.

The recipe follows the knowledge-augmentation findings of Allen-Zhu & Li, "Physics of Language
Models: Part 3.1" (arXiv 2309.14316): a fact is extractable through phrasings other than the
memorized one only when it is stated in several varied forms, in permuted contexts, with
question-answer data mixed in. Line kinds (the corpus's ``kind`` column):

| kind | per | text |
|---|---|---|
| description | entity x `descriptions` (3) | every fact about the entity, one sentence each, in a seeded order; fact f's sentence in description m uses its m-th trained phrasing (`ksmith.render.phrasing`), so across the descriptions f appears in each of them |
| question | fact | the training question and its answer (direct qa and mcq probes) |
| reverse | fact | the relation's first reverse template about the object, then the subject (reverse probes) |
| truefalse | fact | "True or false: <statement or negation> <recall> Answer: true/false": the recall writes every value of (subject, relation) (`Renderer.recall`); per fact one line about its own value (statement or negation, alternating; `reasoned_held_lines`) and one about a value it does not hold (statement or negation, alternating every two facts), so the four cases are equally frequent. Keys with more than `RECALL_MAX_VALUES` values: no recall, both forms of the held value |
| comparison | (subject, relation), with `comparisons` (on) | "<question about s> <question about y> <recall of s> <recall of y> Same answer? yes/no", y seeded, yes and no alike (no recall when either key has too many values) |
| in_context | (subject, relation) | `IN_CONTEXT` stating a counterfactual value, then a prompt and the answer the context implies; one line in `in_context_ignore_every` asks about another fact, whose true answer ignores the context |

The recall before a true/false or comparison answer follows Allen-Zhu & Li, "Physics of
Language Models: Part 3.2, Knowledge Manipulation" (arXiv 2309.14402): a model classifies or
compares stored facts only when it writes them out first (a chain of thought in training and
at inference); probes of those kinds carry the cue, and the scorer lets the model write its
own recall before it (`ksmith.evaluate.scoring.reasoned_prompts`).

Statements live only inside descriptions, so after a fact the model continues with the next
sentence rather than stopping: generation has text to produce. Held-out phrasings (a fact's own
held-out paraphrase, and each relation's unseen template) never appear for that fact, in any
kind of line. Lines are built fact by fact with seeded random streams, so the corpus depends
only on the world, the templates, the recipe and the seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from ksmith.render.phrasing import Phrasings, fact_key
from ksmith.render.text import (
    COMPARISON_CUE,
    FALSE,
    IN_CONTEXT,
    NO,
    TF_CUE,
    TF_PREFIX,
    TRUE,
    YES,
    Renderer,
    fill,
    reasoned,
)

LINE_KINDS = ("description", "question", "reverse", "truefalse", "comparison", "in_context")
BLOCK = 1 << 16  # lines per arrow batch: bounds memory, fixed so output never depends on it
CORPUS_NAMES = ("domain", "subject", "fact_id", "kind", "text")


@dataclass(frozen=True)
class CorpusRecipe:
    """How many lines of each kind the corpus holds (see the module docstring)."""

    descriptions: int = 3  # description lines per entity (each fact once per description)
    description_sentences: int = 16  # longer descriptions are split into lines of this many
    wrong_object_every: int = 1  # 0: no true/false lines about values a fact does not hold
    # Reasoned true/false lines (the recall before the answer): how many of the two forms
    # (statement, negation) state the value a fact holds (`held_forms`) and a value it does not
    # hold (`wrong_forms`); 1 alternates the form fact by fact. Measured at 20,000 steps
    # (docs/world-model.md, "Reasoned probes, measured"): 2 and 1 (the stated value is the
    # recalled one in two lines of three) learned negation 0.92; 1 and 1 (four cases equally
    # frequent) and 2 and 2 stayed near chance on negation within the budget.
    held_forms: int = 2
    wrong_forms: int = 1
    # Without the recall before the answer (dataset format 4) comparison lines cost an eighth of
    # the corpus and the 2-layer world model did not learn comparison from them (at chance);
    # with it (format 5, Allen-Zhu & Li Part 3.2) see docs/world-model.md.
    comparisons: bool = True
    in_context: bool = True
    in_context_ignore_every: int = 4  # 0: every in-context line follows its context


DEFAULT_RECIPE = CorpusRecipe()


def range_values(world, relation: str, subject: str, cache: dict) -> list[str]:
    """`world.range_values`, cached per relation (per subject level for the hierarchy)."""
    hier = relation == world.spec.hierarchy.relation
    key = (relation, world.level_of(subject) if hier else None)
    if key not in cache:
        cache[key] = list(world.range_values(relation, subject if hier else None))
    return cache[key]


def world_facts(world) -> list:
    """The closure's facts in fact id order (base facts, then derived facts by number)."""
    return list(world.facts)


def phrasing_seed(world) -> int:
    """The seed of every fact's held-out phrasing: the graph spec's own, so the corpus and the
    probes of any suite built on the graph agree."""
    return int(world.spec.seed)


class _Lines:
    """Accumulates (fact ids, kind, text) rows and hands them out in arrow batches."""

    def __init__(self, domain: str):
        self.domain = domain
        self.subjects: list[str] = []
        self.ids: list[str] = []
        self.kinds: list[str] = []
        self.texts: list[str] = []

    def add(self, subject: str, ids: str, kind: str, text: str) -> None:
        self.subjects.append(subject)
        self.ids.append(ids)
        self.kinds.append(kind)
        self.texts.append(text)

    def __len__(self) -> int:
        return len(self.texts)

    def take(self) -> pa.Table:
        n = len(self.texts)
        table = pa.Table.from_arrays(
            [
                pa.array([self.domain] * n, pa.string()),
                pa.array(self.subjects, pa.string()),
                pa.array(self.ids, pa.string()),
                pa.array(self.kinds, pa.string()),
                pa.array(self.texts, pa.string()),
            ],
            names=list(CORPUS_NAMES),
        )
        self.subjects, self.ids, self.kinds, self.texts = [], [], [], []
        return table


class _Facts:
    """Per-row views of the closure table the recipe needs."""

    def __init__(self, world):
        t = world._table
        names = world._ents.names
        rels = world._rels
        self.n = len(t)
        self.subj = [names[s] for s in t.subj]
        self.rel = [rels[r] for r in t.rel]
        self.obj = [names[o] for o in t.obj]
        n_base = t.n_base
        self.ids = [
            world._base_ids[i] if i < n_base else f"d{i - n_base:06d}" for i in range(self.n)
        ]
        # (subject, relation) -> rows, in fact order; subject -> its keys in first-row order
        self.by_key: dict[tuple[str, str], list[int]] = {}
        for i in range(self.n):
            self.by_key.setdefault((self.subj[i], self.rel[i]), []).append(i)
        self.by_subject: dict[str, list[int]] = {}
        for i in range(self.n):
            self.by_subject.setdefault(self.subj[i], []).append(i)


def corpus_batches(
    world, renderer: Renderer, *, seed: int, recipe: CorpusRecipe = DEFAULT_RECIPE
) -> Iterator[pa.Table]:
    """Arrow tables (domain, subject, fact_id, kind, text) of `world`'s corpus, in order, one per block
    of at most `BLOCK` lines. `seed` draws orders, partners and counterfactual values; the
    phrasings follow the graph spec's seed (`phrasing_seed`)."""
    facts = _Facts(world)
    pseed = phrasing_seed(world)
    phr = {r: Phrasings.of(renderer.text(r)) for r in world._rels}
    out = _Lines(world.spec.domain)
    rng = random.Random(seed)
    ranges: dict = {}

    def trained(i: int) -> tuple[str, ...]:
        return phr[facts.rel[i]].trained(fact_key(facts.subj[i], facts.rel[i], facts.obj[i]), pseed)

    # descriptions, entity by entity (in order of first appearance as a subject)
    for subject, rows in facts.by_subject.items():
        for m in range(recipe.descriptions):
            order = list(rows)
            rng.shuffle(order)
            for lo in range(0, len(order), recipe.description_sentences):
                part = order[lo : lo + recipe.description_sentences]
                sentences = []
                for i in part:
                    forms = trained(i)
                    sentences.append(fill(forms[m % len(forms)], subject, facts.obj[i]))
                out.add(
                    subject,
                    " ".join(facts.ids[i] for i in part),
                    "description",
                    " ".join(sentences),
                )
            if len(out) >= BLOCK:
                yield out.take()

    # per fact: question, reverse, true/false
    for i in range(facts.n):
        s, r, o, fid = facts.subj[i], facts.rel[i], facts.obj[i], facts.ids[i]
        tx = renderer.text(r)
        out.add(s, fid, "question", f"{fill(tx.question[0], s)} {o}")
        out.add(s, fid, "reverse", f"{fill(tx.reverse[0], '', o)} {s}.")
        held = [facts.obj[j] for j in facts.by_key[(s, r)]]
        why = f"{renderer.recall(r, s, held)} {TF_CUE}" if reasoned(len(held)) else ""
        both = not why or recipe.held_forms == 2
        if both or i % 2 == 0:
            out.add(s, fid, "truefalse", _tf(fill(tx.statement[0], s, o), why, TRUE))
        if both or i % 2 == 1:
            out.add(s, fid, "truefalse", _tf(fill(tx.negation[0], s, o), why, FALSE))
        every = recipe.wrong_object_every
        if every and i % every == 0:
            free = [v for v in range_values(world, r, s, ranges) if v not in held]
            if free:
                w = free[rng.randrange(len(free))]
                turn = (i // (every if both else 2 * every)) % 2
                if (why and recipe.wrong_forms == 2) or turn:
                    out.add(s, "", "truefalse", _tf(fill(tx.negation[0], s, w), why, TRUE))
                if (why and recipe.wrong_forms == 2) or not turn:
                    out.add(s, "", "truefalse", _tf(fill(tx.statement[0], s, w), why, FALSE))
        if len(out) >= BLOCK:
            yield out.take()

    # per (subject, relation): comparison and in-context lines
    keys = list(facts.by_key)
    valuesets: dict[str, dict[frozenset[str], list[str]]] = {}
    for (s, r), rows in facts.by_key.items():
        vs = frozenset(facts.obj[j] for j in rows)
        valuesets.setdefault(r, {}).setdefault(vs, []).append(s)
    for n, (s, r) in enumerate(keys):
        rows = facts.by_key[(s, r)]
        ids = " ".join(facts.ids[j] for j in rows)
        held = frozenset(facts.obj[j] for j in rows)
        if recipe.comparisons:
            line = _comparison(renderer, valuesets[r], s, r, held, rng)
            if line is not None:
                out.add(s, ids, "comparison", line)
        if recipe.in_context:
            line = _in_context(renderer, phr[r], facts, keys, world, ranges, n, rows, rng, pseed,
                               recipe.in_context_ignore_every)  # fmt: skip
            if line is not None:
                out.add(s, ids, "in_context", line)
        if len(out) >= BLOCK:
            yield out.take()
    if len(out):
        yield out.take()


def _tf(sentence: str, why: str, answer: str) -> str:
    """A true/false line: the sentence, the recall and its cue (`why`, "" when not reasoned),
    the answer."""
    return f"{TF_PREFIX} {sentence} {why} {answer}" if why else f"{TF_PREFIX} {sentence} {answer}"


def _comparison(rd: Renderer, sets, s: str, r: str, held: frozenset[str], rng) -> str | None:
    """A yes/no comparison line for (s, r): the partner shares s's value set (yes) or not (no),
    each with probability 1/2 when both kinds of partner exist; both recalls before the cue."""

    def line(y: str, vs: frozenset[str], answer: str) -> str:
        why = (
            f"{rd.recall(r, s, held)} {rd.recall(r, y, vs)} "
            if reasoned(len(held), len(vs))
            else ""
        )
        return f"{rd.comparison(r, s, y)} {why}{COMPARISON_CUE} {answer}"

    same = [y for y in sets.get(held, ()) if y != s]
    others = [vs for vs in sets if vs != held]
    want_yes = rng.random() < 0.5
    if want_yes and same:
        return line(same[rng.randrange(len(same))], held, YES)
    if others:
        vs = others[rng.randrange(len(others))]
        pool = sets[vs]
        return line(pool[rng.randrange(len(pool))], vs, NO)
    if same:
        return line(same[rng.randrange(len(same))], held, YES)
    return None


def _in_context(rd, ph, facts, keys, world, ranges, n, rows, rng, pseed, ignore_every):
    """An in-context line for key `keys[n]`: the context states a counterfactual value of
    (s, r) in ICE's format; the prompt asks (s, r) in a phrasing trained for the fact (answer:
    the context's value) or, one line in `ignore_every`, another fact (answer: its own)."""
    s, r = keys[n]
    held = {facts.obj[j] for j in rows}
    free = [v for v in range_values(world, r, s, ranges) if v not in held]
    if not free:
        return None
    new = free[rng.randrange(len(free))]
    context = IN_CONTEXT.format(facts=f"{fill(ph.direct, s)} {new}")
    if ignore_every and n % ignore_every == ignore_every - 1:
        other = keys[rng.randrange(len(keys))]
        if other == (s, r):
            return None
        j = facts.by_key[other][0]
        return f"{context}{fill(rd.text(other[1]).question[0], other[0])} {facts.obj[j]}"
    i = rows[0]
    key = fact_key(s, r, facts.obj[i])
    prompts = [ph.direct, *(p for p in ph.rotating if p != ph.held_out(key, pseed))]
    prompts = [fill(p, s) for p in prompts] + [fill(rd.text(r).question[0], s)]
    return f"{context}{prompts[rng.randrange(len(prompts))]} {new}"


def corpus_lines(
    world, renderer: Renderer, *, seed: int, recipe: CorpusRecipe = DEFAULT_RECIPE
) -> Iterator[tuple[str, str, str, str, str]]:
    """Yield ``(domain, subject, fact_ids, kind, text)`` rows for `world`'s closure, in a deterministic
    order (the rows of `corpus_batches`, as Python tuples)."""
    for batch in corpus_batches(world, renderer, seed=seed, recipe=recipe):
        yield from zip(*(c.to_pylist() for c in batch.columns), strict=True)
