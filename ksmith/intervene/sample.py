"""Sampling update requests: stratified per level, non-contradicting within a group.

A request targets one base fact (never a hierarchy edge) whose subject sits at the requested
level. Within one group no two requests touch the same (subject, relation), and no request's
fact, dependents or new-object implications overlap another's ("footprints" are disjoint), so
every probe's expected answer after the update is determined by the group's changed world.
Candidates are stratified by relation (round-robin over per-relation shuffles), so every relation
of the level is represented at small scales.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ksmith.errors import KsmithError
from ksmith.intervene.columns import random_order

Key = tuple[str, str]  # (subject, relation)


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes (no Python hash randomization)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class PlannedRequest:
    """One request of a group: the base fact it changes and (edit) the new object."""

    group: int
    index: int
    kind: str
    level: str
    fact: object  # ksmith.graph.Fact
    new_object: str | None
    request_id: str = ""  # "g<group>.r<index>", filled in by __post_init__

    def __post_init__(self):
        object.__setattr__(self, "request_id", f"g{self.group}.r{self.index}")

    @property
    def key(self) -> Key:
        return (self.fact.subject, self.fact.relation)


class CandidatePool:
    """The base facts of one world that may be targeted, per level, stratified by relation."""

    def __init__(self, world):
        self.world = world
        spec = world.spec
        hier = spec.hierarchy.relation
        self._inverse = dict(spec.inverse_pairs())
        self._symmetric = set(spec.symmetric())
        self._ranges: dict[str, list[str]] = {}
        # base rows (fact id order) per level and relation; `Fact`s are built when drawn
        t, ents, rels = world._table, world._ents, world._rels
        targetable = [r != hier and not spec.relations[r].derived for r in rels]
        by_level: dict[str | None, dict[str, _Rows]] = {}
        for i in range(t.n_base):
            r = t.rel[i]
            if targetable[r]:
                level = ents.level[t.subj[i]]
                by_level.setdefault(level, {}).setdefault(rels[r], _Rows(world)).rows.append(i)
        self._by_level = by_level

    def count(self, level: str) -> int:
        return sum(len(v) for v in self._by_level.get(level, {}).values())

    def range_of(self, relation: str) -> list[str]:
        if relation not in self._ranges:
            self._ranges[relation] = list(self.world.range_values(relation))
        return self._ranges[relation]

    def stratified_order(self, level: str, rng: random.Random) -> Iterator:
        """All candidates of `level`: each relation in a random order, the relations in a random
        order, interleaved round-robin. Drawn lazily (`random_order`), so a group pays for the
        candidates it looks at, not for shuffling the whole level."""
        per_rel = self._by_level.get(level, {})
        streams = [random_order(per_rel[rel], rng._randbelow) for rel in sorted(per_rel)]
        rng.shuffle(streams)
        while streams:
            alive = []
            for it in streams:
                fact = next(it, None)
                if fact is not None:
                    yield fact
                    alive.append(it)
            streams = alive

    def new_object(self, fact, rng: random.Random) -> str | None:
        """A value from the relation's range that `fact.subject` does not hold (None if none).

        For cardinality-one relations only the old object is excluded; for cardinality-many
        relations every value the subject already holds is.
        """
        held = set(self.world.objects(fact.subject, fact.relation))
        held.add(fact.object)
        values = self.range_of(fact.relation)
        for _ in range(8):  # rejection sampling: ranges are usually much larger than `held`
            v = values[rng.randrange(len(values))] if values else None
            if v is None:
                return None
            if v not in held:
                return v
        free = [v for v in values if v not in held]
        return free[rng.randrange(len(free))] if free else None

    def key(self, subject: str, relation: str) -> int:
        """The integer key of (subject, relation) (``entity * n_rel + relation``)."""
        w = self.world
        return w._ents.index[subject] * len(w._rels) + w._rel_ids[relation]

    def footprint(self, fact, new_object: str | None) -> tuple[set[int], set[int]]:
        """Keys (`key`) and closure rows a request on `fact` may change: its own key, its
        dependents' keys, and the keys its new object will gain through inverse or symmetric
        rules."""
        w = self.world
        t, n_rel = w._table, len(w._rels)
        row = w._row_of_base[fact.id]
        deps = w._dependents.get(row, ())
        keys = {t.subj[row] * n_rel + t.rel[row]}
        keys.update([t.subj[d] * n_rel + t.rel[d] for d in deps])
        ids = {row, *deps}
        inv = self._inverse.get(fact.relation)
        for obj in (fact.object, new_object):
            if obj is None:
                continue
            if inv is not None:
                keys.add(self.key(obj, inv))
            if fact.relation in self._symmetric:
                keys.add(self.key(obj, fact.relation))
        return keys, ids


class _Rows(Sequence):
    """Closure rows of a world, seen as their `Fact`s (built on access)."""

    def __init__(self, world):
        self.world, self.rows = world, []

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):  # type: ignore[override]
        return self.world._fact(self.rows[i])


def sample_group(
    pool: CandidatePool,
    *,
    kind: str,
    level: str,
    scale: int,
    group: int,
    seed: int,
    where: str,
) -> list[PlannedRequest]:
    """`scale` mutually compatible requests at `level`, or a KsmithError saying how many exist.

    `where` names the suite and graph for the error message.
    """
    available = pool.count(level)
    if available < scale:
        raise KsmithError(
            f"{where}: level '{level}' has only {available} targetable base facts, fewer than "
            f"scale {scale}; lower the scale for this level (intervention spec `level_scales`) "
            "or use a larger size"
        )
    rng = random.Random(seed)
    taken_keys: set[int] = set()
    taken_rows: set[int] = set()
    out: list[PlannedRequest] = []
    for fact in pool.stratified_order(level, rng):
        if len(out) == scale:
            break
        if (
            pool.key(fact.subject, fact.relation) in taken_keys
            or pool.world._row_of_base[fact.id] in taken_rows
        ):
            continue
        new = pool.new_object(fact, rng) if kind == "edit" else None
        if kind == "edit" and new is None:
            continue
        keys, rows = pool.footprint(fact, new)
        if not keys.isdisjoint(taken_keys) or not rows.isdisjoint(taken_rows):
            continue
        taken_keys |= keys
        taken_rows |= rows
        out.append(PlannedRequest(group, len(out), kind, level, fact, new))
    if len(out) < scale:
        raise KsmithError(
            f"{where}: level '{level}' scale {scale} group {group}: only {len(out)} mutually "
            f"compatible requests could be sampled from {available} base facts (requests in a "
            "group must not share a subject and relation or each other's dependents); lower "
            "the scale for this level (`level_scales`) or use a larger size"
        )
    return out
