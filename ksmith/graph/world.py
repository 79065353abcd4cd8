"""A world: the entities and base facts sampled from a graph spec, and their closure.

    world = build_world(spec, "small")
    world.lookup("Toravin", "diet")            # facts (base or derived) with this subject+relation
    world.dependents("b000123")                # derived facts resting on that base fact
    after = world.with_changes({"b000123": "Meluran"})   # closure recomputed

Fact ids are stable within one world: base facts are "b%06d" in sampling order and keep their
id in `with_changes`; derived facts are "d%06d" in derivation order and are renumbered by
`with_changes` (compare derived facts across worlds by (subject, relation, object, support)).
A triple derived in several ways has one `Fact` per (non-dominated) derivation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from ksmith.errors import KsmithError
from ksmith.graph.closure import ClosureTable, compute_closure
from ksmith.graph.sample import Entities, class_order, sample_base_facts, sample_entities
from ksmith.spec.graph import GraphSpec
from ksmith.spec.graph_checks import relation_classes

if TYPE_CHECKING:
    import networkx as nx

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Node:
    """An entity: a hierarchy node (level, node type, parent) or a value (level None)."""

    name: str
    level: str | None  # None for values of a value type
    type: str  # node type for hierarchy nodes, value-type name for values
    parent: str | None


@dataclass(frozen=True, slots=True)
class Fact:
    """(subject, relation, object) with its derivation: support, hop count and rule."""

    id: str
    subject: str
    relation: str
    object: str
    base: bool
    support: frozenset[str]  # base fact ids it rests on ({id} for a base fact)
    hops: int  # 0 for base; number of rule applications otherwise
    rule: str  # "" | "inherit" | "inverse" | "symmetric" | "compose:<rule name>"

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.subject, self.relation, self.object)


class World:
    """A built world. Construct with `build_world`; derive variants with `with_changes`."""

    def __init__(
        self,
        spec: GraphSpec,
        size: str,
        entities: Entities,
        base: list[tuple[int, int, int]],
        base_ids: list[str],
    ):
        self.spec = spec
        self.size = size
        self._ents = entities
        self._base = base
        self._base_ids = base_ids
        self._rels = spec.relation_names()
        t0 = time.perf_counter()
        table = compute_closure(spec, base, len(entities.names))
        self._table = table
        names, rels, ids = entities.names, self._rels, base_ids
        facts: list[Fact] = []
        for i in range(len(table)):
            base_row = i < table.n_base
            facts.append(
                Fact(
                    ids[i] if base_row else f"d{i - table.n_base:06d}",
                    names[table.subj[i]],
                    rels[table.rel[i]],
                    names[table.obj[i]],
                    base_row,
                    frozenset([ids[b] for b in table.support[i]]),
                    table.hops[i],
                    table.rule_names[table.rule[i]],
                )
            )
        self.facts: tuple[Fact, ...] = tuple(facts)
        self.base_facts: tuple[Fact, ...] = self.facts[: table.n_base]
        self._by_id = {f.id: i for i, f in enumerate(self.facts)}
        parent = {e: entities.parent[e] for e in range(len(names))}
        for s, r, o in base:  # the parent map follows the (possibly changed) is_a facts
            if r == 0:
                parent[s] = o
        self.nodes: dict[str, Node] = {
            n: Node(n, entities.level[e], entities.type[e], names[parent[e]] if parent[e] >= 0 else None)
            for e, n in enumerate(names)
        }
        log.debug("world %s/%s: %d base, %d derived facts in %.2fs", spec.name, size,
                  table.n_base, len(table) - table.n_base, time.perf_counter() - t0)

    # -- lookups --------------------------------------------------------------------------
    def fact(self, fact_id: str) -> Fact:
        """The fact with this id (KsmithError if unknown)."""
        try:
            return self.facts[self._by_id[fact_id]]
        except KeyError:
            raise KsmithError(f"unknown fact id '{fact_id}' in world {self.spec.name}/{self.size}") from None

    @cached_property
    def _by_subject_relation(self) -> dict[tuple[str, str], list[int]]:
        idx: dict[tuple[str, str], list[int]] = {}
        for i, f in enumerate(self.facts):
            idx.setdefault((f.subject, f.relation), []).append(i)
        return idx

    @cached_property
    def _dependents(self) -> dict[str, list[int]]:
        idx: dict[str, list[int]] = {}
        for i in range(self._table.n_base, len(self.facts)):
            for b in self.facts[i].support:
                idx.setdefault(b, []).append(i)
        return idx

    def lookup(self, subject: str, relation: str) -> list[Fact]:
        """Base and derived facts with this subject and relation (one per derivation)."""
        return [self.facts[i] for i in self._by_subject_relation.get((subject, relation), ())]

    def objects(self, subject: str, relation: str) -> list[str]:
        """Distinct objects that hold for (subject, relation), in fact order."""
        return list(dict.fromkeys(f.object for f in self.lookup(subject, relation)))

    def holds(self, subject: str, relation: str, object: str) -> bool:
        """Whether the triple is a base or derived fact of this world."""
        return any(f.object == object for f in self.lookup(subject, relation))

    def dependents(self, base_id: str) -> list[Fact]:
        """Derived facts whose support contains `base_id` (they may change with it)."""
        return [self.facts[i] for i in self._dependents.get(base_id, ())]

    # -- schema-level queries -------------------------------------------------------------
    @property
    def relations(self) -> list[str]:
        """All relation names, the hierarchy relation first."""
        return list(self._rels)

    def range_values(self, relation: str, subject: str | None = None) -> list[str]:
        """All possible objects of `relation` (new objects, MCQ distractors), in entity order.

        For the hierarchy relation with a `subject`, only nodes one level above the subject.
        """
        if relation not in self._rels:
            raise KsmithError(f"unknown relation '{relation}'; known: {self._rels}")
        if relation == self.spec.hierarchy.relation and subject is not None:
            lv = self.level_of(subject)
            levels = self.spec.levels
            if lv is None or levels.index(lv) == 0:
                return []
            classes = {("level", levels[levels.index(lv) - 1])}
        else:
            classes = relation_classes(self.spec, relation)[1]
        return [self._ents.names[e] for e in self._ents.of(classes, class_order(self.spec))]

    def domain_values(self, relation: str) -> list[str]:
        """All possible subjects of `relation`, in entity order."""
        classes = relation_classes(self.spec, relation)[0]
        return [self._ents.names[e] for e in self._ents.of(classes, class_order(self.spec))]

    def level_of(self, name: str) -> str | None:
        """The hierarchy level of a node, None for values and unknown names."""
        node = self.nodes.get(name)
        return node.level if node else None

    def nodes_at(self, level: str) -> list[str]:
        """Hierarchy nodes of one level, in entity order."""
        return [self._ents.names[e] for e in self._ents.by_class.get(("level", level), [])]

    @cached_property
    def _children(self) -> dict[str, list[str]]:
        kids: dict[str, list[str]] = {}
        for n in self.nodes.values():
            if n.parent is not None:
                kids.setdefault(n.parent, []).append(n.name)
        return kids

    def children(self, name: str) -> list[str]:
        """Direct children of a hierarchy node."""
        return list(self._children.get(name, ()))

    def descendants(self, name: str) -> list[str]:
        """All hierarchy descendants of a node, breadth first."""
        out: list[str] = []
        frontier = [name]
        while frontier:
            nxt = [c for n in frontier for c in self._children.get(n, ())]
            out.extend(nxt)
            frontier = nxt
        return out

    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        """Base facts as edges (key = relation, attr fact_id); nodes carry level and type."""
        import networkx as nx

        g = nx.MultiDiGraph(name=f"{self.spec.name}/{self.size}")
        for n in self.nodes.values():
            g.add_node(n.name, level=n.level, type=n.type)
        for f in self.base_facts:
            g.add_edge(f.subject, f.object, key=f.relation, fact_id=f.id)
        return g

    # -- counterfactual worlds ------------------------------------------------------------
    def with_changes(self, changes: Mapping[str, str | None]) -> World:
        """A new world where base fact id -> new object (None: the fact is removed).

        New objects must be in `range_values(relation, subject)`; the closure is recomputed.
        """
        rows = {fid: i for i, fid in enumerate(self._base_ids)}
        base = list(self._base)
        keep = [True] * len(base)
        for fid, new in changes.items():
            if fid not in rows:
                raise KsmithError(f"with_changes: '{fid}' is not a base fact of this world")
            i = rows[fid]
            if new is None:
                keep[i] = False
                continue
            s, r, _ = base[i]
            subject, relation = self._ents.names[s], self._rels[r]
            if new not in self._ents.index or new not in self.range_values(relation, subject):
                raise KsmithError(f"with_changes: '{new}' is not a possible object of "
                                  f"{relation} for '{subject}' ({fid})")
            base[i] = (s, r, self._ents.index[new])
        new_base = [t for t, k in zip(base, keep, strict=True) if k]
        new_ids = [fid for fid, k in zip(self._base_ids, keep, strict=True) if k]
        return World(self.spec, self.size, self._ents, new_base, new_ids)

    def __repr__(self) -> str:
        return (f"World({self.spec.name!r}, size={self.size!r}, nodes={len(self.nodes)}, "
                f"base={len(self.base_facts)}, facts={len(self.facts)})")


def build_world(spec: GraphSpec, size: str = "small") -> World:
    """Sample entities and base facts from `spec` (seeded by spec.seed) and close them."""
    ents = sample_entities(spec, size)
    base = sample_base_facts(spec, ents)
    return World(spec, size, ents, base, [f"b{i:06d}" for i in range(len(base))])
