"""Sampling a world's entities and base facts from a graph spec (pure, seeded).

Every random stream is seeded by ``f"{spec.seed}:<component>"``, so adding a relation to a spec
does not change the names or the facts of the others.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ksmith.errors import KsmithError
from ksmith.graph.names import NAME_GENERATORS
from ksmith.spec.graph import GraphSpec
from ksmith.spec.graph_checks import relation_classes

Class = tuple[str, str]  # ("level", name) or ("value", value type)


@dataclass
class Entities:
    """All entities of a world as parallel lists indexed by entity id (int)."""

    names: list[str] = field(default_factory=list)
    level: list[str | None] = field(default_factory=list)
    type: list[str] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)  # -1: none
    by_class: dict[Class, list[int]] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, cls: Class, type_: str, parent: int = -1) -> int:
        if name in self.index:
            raise KsmithError(f"entity name '{name}' is used twice (explicit names collide)")
        i = len(self.names)
        self.names.append(name)
        self.level.append(cls[1] if cls[0] == "level" else None)
        self.type.append(type_)
        self.parent.append(parent)
        self.by_class.setdefault(cls, []).append(i)
        self.index[name] = i
        return i

    def of(self, classes: set[Class], order: list[Class]) -> list[int]:
        """Entities of the given classes, in the world's class order."""
        return [e for c in order if c in classes for e in self.by_class.get(c, [])]


def class_order(spec: GraphSpec) -> list[Class]:
    """Hierarchy levels general -> specific, then value types in spec order."""
    return [("level", lv) for lv in spec.levels] + [("value", v) for v in spec.value_types]


def _namer(spec: GraphSpec, taken: set[str]):
    gen = NAME_GENERATORS.get(spec.names.generator)
    rng = random.Random(f"{spec.seed}:names")

    def names(key: str, n: int, suffix: str, given: list[str] | None = None) -> list[str]:
        explicit = [*(given or []), *spec.names.explicit.get(key, [])][:n]
        params = dict(spec.names.params)
        if suffix:
            params["suffix"] = suffix
        more = gen(rng, n - len(explicit), taken, **params) if n > len(explicit) else []
        return [*explicit, *more]

    return names


def sample_entities(spec: GraphSpec, size: str) -> Entities:
    """Hierarchy nodes (level by level) and value entities (closed values, pools)."""
    if size not in spec.sizes:
        raise KsmithError(
            f"graph spec '{spec.name}' has no size '{size}'; sizes: {sorted(spec.sizes)}"
        )
    preset = spec.sizes[size]
    ents = Entities()
    explicit = {v for vs in spec.names.explicit.values() for v in vs}
    closed = {v for vt in spec.value_types.values() for v in (vt.values or [])}
    taken = set(explicit) | closed
    if spec.hierarchy.nodes is not None:
        taken |= {n.name for n in spec.hierarchy.nodes}
    names = _namer(spec, taken)
    h = spec.hierarchy
    if h.nodes is not None:
        for lv in spec.levels:
            for n in h.nodes:
                if n.level == lv:
                    parent = ents.index[n.parent] if n.parent else -1
                    ents.add(n.name, ("level", lv), spec.node_type(lv), parent)
    else:
        parents = [-1]
        for lv in spec.levels:
            b = preset.branching[lv]
            new = names(lv, b * len(parents), h.suffixes.get(lv, ""))
            it = iter(new)
            parents = [
                ents.add(next(it), ("level", lv), spec.node_type(lv), p)
                for p in parents
                for _ in range(b)
            ]
    for vname, vt in spec.value_types.items():
        if vt.kind == "closed":
            for v in vt.values or []:
                ents.add(v, ("value", vname), vname)
        else:
            count = preset.pools.get(vname, vt.count or len(vt.values or []))
            for v in names(vname, count, vt.suffix, vt.values):
                ents.add(v, ("value", vname), vname)
    return ents


def _coverage(spec: GraphSpec, rel: str, ents: Entities, e: int) -> float:
    cov = spec.relations[rel].coverage
    lv = ents.level[e]
    for key in (lv, ents.type[e]):
        if key is not None and key in cov:
            return cov[key]
    return 1.0


def sample_base_facts(spec: GraphSpec, ents: Entities) -> list[tuple[int, int, int]]:
    """Base facts as (subject, relation, object) entity/relation ids, deterministic order.

    Order: the hierarchy relation (child -> parent) first, then each sampled relation in spec
    order, subjects in entity order. For an inheriting relation a node below the top declares
    an override with probability `coverage[level]`, and the override differs from what it
    would inherit. Symmetric relations never get both directions as base facts.
    """
    rel_ids = {r: i for i, r in enumerate(spec.relation_names())}
    order = class_order(spec)
    facts: list[tuple[int, int, int]] = []
    for e, p in enumerate(ents.parent):
        if p >= 0:
            facts.append((e, 0, p))
    inherited = set(spec.inherited())
    symmetric = set(spec.symmetric())
    for rname, rel in spec.relations.items():
        if rel.derived:
            continue
        r = rel_ids[rname]
        rng = random.Random(f"{spec.seed}:relation:{rname}")
        dom, rng_classes = relation_classes(spec, rname)
        subjects = ents.of(dom, order)
        cands = ents.of(rng_classes, order)
        own: dict[int, list[int]] = {}
        pairs: set[tuple[int, int]] = set()
        lo, hi = rel.values_per_subject

        def effective(e: int, own=own) -> list[int]:
            while e >= 0 and e not in own:
                e = ents.parent[e]
            return own.get(e, []) if e >= 0 else []

        coverage: dict[tuple[str | None, str], float] = {}  # per (level, type): same values
        for s in subjects:
            ck = (ents.level[s], ents.type[s])
            cov = coverage.get(ck)
            if cov is None:
                cov = coverage[ck] = _coverage(spec, rname, ents, s)
            if rng.random() >= cov:
                continue
            avoid = {s}
            if rname in inherited and ents.parent[s] >= 0:
                avoid |= set(effective(ents.parent[s]))
            k = rng.randint(lo, hi)
            chosen: list[int] = []
            tries = 0
            while len(chosen) < k and tries < 20 * k + 50:  # bounded: small ranges may run out
                tries += 1
                o = cands[rng.randrange(len(cands))]
                if o in avoid or o in chosen or (rname in symmetric and (o, s) in pairs):
                    continue
                chosen.append(o)
            if not chosen:
                continue
            own[s] = chosen
            for o in chosen:
                pairs.add((s, o))
                facts.append((s, r, o))
    return facts
