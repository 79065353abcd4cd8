"""The training split of the world: edits on subjects no evaluated config touches.

A trained editor (MEND, SERAC) learns from edit requests. ksmith's world is closed, so those
need not come from another data set: the dataset folder carries its resolved suite spec
(``spec.yaml``), from which every graph's world is rebuilt exactly (`build_world` is a pure
function of the graph spec and size), with the renderer that wrote the corpus. The split draws
base facts whose SUBJECT is none of the names any evaluated config mentions as a subject or an
object (its requests, its Q+ and Q- probes), so evaluated entities and their facts stay unseen
by the editor; a drawn fact's locality prompts come from the same allowed subjects.

Each split edit carries what an editor trains on, in the dataset's own request form
(docs/contracts.md section 2): the training cloze prompt, the fact's training-template prompts
(its in-corpus paraphrases: the in-scope inputs), the held-out paraphrase of the fact (a wording
the corpus never states it in; ``paraphrase_unseen``'s template is NOT used, so that template
stays unseen by editors too), and locality prompts with the world's answers (hard out-of-scope
inputs): half the same subject under other relations, half the same relation asked of other
subjects.
Draws are seeded; the split's fingerprint hashes every drawn text.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ksmith.errors import KsmithError


@dataclass(frozen=True)
class SplitEdit:
    """One training edit (s, r, o -> o') with its in-scope and locality prompts."""

    domain: str
    subject: str
    relation: str
    object: str
    new_object: str
    prompt: str  # the training cloze prompt, ending before the object
    plus_prompts: tuple[str, ...]  # training-template prompts of the fact (in scope)
    paraphrase: str | None  # the held-out paraphrase cloze (in scope), None if the relation has one
    minus_prompts: tuple[str, ...]  # locality prompts (out of scope)
    minus_answers: tuple[str, ...]  # their answers in the world (the base model's targets)

    def in_scope(self) -> tuple[str, ...]:
        """Every input the edit should change, the cloze prompt first (deduplicated)."""
        extra = (self.paraphrase,) if self.paraphrase else ()
        return tuple(dict.fromkeys((self.prompt, *self.plus_prompts, *extra)))


@dataclass(frozen=True)
class TrainingSplit:
    """Train and held-out edits drawn from the world apart from every evaluated subject."""

    train: tuple[SplitEdit, ...]
    heldout: tuple[SplitEdit, ...]
    seed: int
    dataset_fingerprint: str | None
    excluded_subjects: int  # names kept out (the evaluated configs' subjects and objects)

    @property
    def fingerprint(self) -> str:
        """sha256 of the split's canonical JSON (every text drawn, the seed, the dataset)."""
        blob = json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "dataset_fingerprint": self.dataset_fingerprint,
            "excluded_subjects": self.excluded_subjects,
            "train": [asdict(e) for e in self.train],
            "heldout": [asdict(e) for e in self.heldout],
        }


def evaluated_subjects(dataset_dir: str | Path) -> frozenset[str]:
    """Every subject an evaluated config asks about: its requests' subjects and its probes'
    (Q+ and Q-: direct, paraphrase, reverse, multi-hop, comparison, contextual, negation)."""
    from ksmith.data import list_configs, load_probes, load_requests

    names: set[str] = set()
    for config in list_configs(dataset_dir):
        names.update(r["subject"] for r in load_requests(dataset_dir, config))
        names.update(p["subject"] for p in load_probes(dataset_dir, config))
    names.discard("")
    return frozenset(names)


def build_split(
    dataset_dir: str | Path,
    *,
    n_train: int,
    n_heldout: int,
    seed: int = 0,
    locality: int = 4,
    heldout_fraction: float = 0.25,
) -> TrainingSplit:
    """Draw `n_train` + `n_heldout` edits from the dataset's worlds, on subjects outside
    `evaluated_subjects`, each with `locality` out-of-scope prompts.

    The allowed subjects are shuffled and a `heldout_fraction` of them set aside: held-out edits
    are on subjects no training edit has, so held-out accuracy measures an editor on new
    entities. The default world's evaluated configs ask about most of its subjects (scale 100 at
    every level, with contextual and multi-hop probes around each request), which leaves few
    facts; the world is closed, so one fact yields several edits, one per new object drawn
    from its relation's range (an edit is a (fact, new object) pair, never repeated). Raises a
    KsmithError when the worlds cannot supply the edits asked for.
    """
    from ksmith.data import read_card
    from ksmith.graph import build_world
    from ksmith.intervene import CandidatePool, derive_seed
    from ksmith.render import Renderer

    if n_train < 1 or n_heldout < 0 or locality < 0 or not 0 < heldout_fraction < 1:
        raise KsmithError(
            "build_split: n_train >= 1, n_heldout >= 0, locality >= 0 and 0 < heldout_fraction "
            "< 1 needed"
        )
    dataset_dir = Path(dataset_dir)
    from ksmith.data.graphs import dataset_graphs

    fingerprint = read_card(dataset_dir).get("fingerprint")
    excluded = evaluated_subjects(dataset_dir)
    rng = random.Random(derive_seed("trained-editor-split", fingerprint, seed))
    graphs = []  # per graph: (world, renderer, pool, subject -> its allowed base facts)
    for g in dataset_graphs(dataset_dir):
        gspec = g.spec
        world = build_world(gspec, g.size)
        by_subject: dict[str, list[Any]] = {}
        hier = gspec.hierarchy.relation
        for f in world.base_facts:
            if f.subject in excluded or f.relation == hier or gspec.relations[f.relation].derived:
                continue
            by_subject.setdefault(f.subject, []).append(f)
        graphs.append((world, Renderer(gspec), CandidatePool(world), by_subject))
    subjects = [(gi, s) for gi, (*_, subs) in enumerate(graphs) for s in sorted(subs)]
    rng.shuffle(subjects)
    cut = max(1, round(len(subjects) * heldout_fraction)) if n_heldout else 0
    if len(subjects) - cut < 1:
        raise KsmithError(
            f"{dataset_dir}: {len(subjects)} subject(s) outside the evaluated configs, too few "
            "for a training split (a larger world size leaves more)"
        )
    heldout = _draw(graphs, subjects[:cut], n_heldout, locality, rng, dataset_dir)
    train = _draw(graphs, subjects[cut:], n_train, locality, rng, dataset_dir)
    return TrainingSplit(
        train=tuple(train),
        heldout=tuple(heldout),
        seed=seed,
        dataset_fingerprint=str(fingerprint) if fingerprint is not None else None,
        excluded_subjects=len(excluded),
    )


def _draw(graphs, subjects, n: int, locality: int, rng: random.Random, where) -> list[SplitEdit]:
    """`n` distinct (fact, new object) edits on `subjects`: round-robin over their facts in a
    seeded order, each time a new object the subject does not hold and no earlier edit of the
    fact used; locality prompts drawn from the same subjects."""
    facts = [(gi, f) for gi, s in subjects for f in graphs[gi][3][s]]
    pool_of = {gi: [f for g2, f in facts if g2 == gi] for gi, _ in subjects}
    rng.shuffle(facts)
    free = []  # per fact: the new objects still to draw
    for gi, f in facts:
        world, _, pool, _ = graphs[gi]
        held = {*world.objects(f.subject, f.relation), f.object}
        free.append([v for v in pool.range_of(f.relation) if v not in held])
    if n > sum(len(v) for v in free):
        raise KsmithError(
            f"{where}: the subjects outside the evaluated configs yield "
            f"{sum(len(v) for v in free)} distinct edits, fewer than the {n} asked for; lower "
            "the split sizes"
        )
    edits: list[SplitEdit] = []
    while len(edits) < n:
        for (gi, f), values in zip(facts, free, strict=True):
            if len(edits) == n:
                break
            if not values:
                continue
            new = values.pop(rng.randrange(len(values)))
            world, renderer, _, by_subject = graphs[gi]
            edits.append(_edit(world, renderer, f, new, by_subject, pool_of[gi], locality, rng))
    return edits


def _edit(world, renderer, f, new: str, by_subject, pool, locality: int, rng) -> SplitEdit:
    near = [h for h in by_subject[f.subject] if h.relation != f.relation]
    rng.shuffle(near)
    minus = near[: locality // 2]  # hard negatives: the same subject, another relation
    # and the same relation asked of other subjects (what contextual probes ask), else any fact
    alike = [h for h in pool if h.subject != f.subject and h.relation == f.relation]
    others = alike or [h for h in pool if h.subject != f.subject]
    while len(minus) < locality and others:
        minus.append(others[rng.randrange(len(others))])
    return SplitEdit(
        domain=str(world.spec.domain),
        subject=f.subject,
        relation=f.relation,
        object=f.object,
        new_object=new,
        prompt=renderer.cloze(f.relation, f.subject),
        plus_prompts=tuple(renderer.training_prompts(f.relation, f.subject, f.object)),
        paraphrase=renderer.paraphrase(f.relation, f.subject, f.object),
        minus_prompts=tuple(renderer.cloze(h.relation, h.subject) for h in minus),
        minus_answers=tuple(h.object for h in minus),
    )
