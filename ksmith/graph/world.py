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
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from ksmith.errors import KsmithError
from ksmith.graph.closure import ClosureTable, Rules, base_structure, compute_closure
from ksmith.graph.facts import Fact, FactView, Node, no_gc
from ksmith.graph.incremental import ClosureDelta, WorldIndexes, update_closure
from ksmith.graph.sample import Entities, class_order, sample_base_facts, sample_entities
from ksmith.spec.graph import GraphSpec
from ksmith.spec.graph_checks import relation_classes

if TYPE_CHECKING:
    import networkx as nx

log = logging.getLogger(__name__)


class World:
    """A built world. Construct with `build_world`; derive variants with `with_changes`."""

    def __init__(
        self,
        spec: GraphSpec,
        size: str,
        entities: Entities,
        base: list[tuple[int, int, int]],
        base_ids: list[str],
        table: ClosureTable | None = None,
    ):
        self.spec = spec
        self.size = size
        self._ents = entities
        self._base = base
        self._base_ids = base_ids
        self._rels = spec.relation_names()
        self._rel_ids = {r: i for i, r in enumerate(self._rels)}
        self._structure: tuple[dict[int, list[tuple[int, int]]], set[int]] | None = None
        t0 = time.perf_counter()
        if table is None:
            with no_gc():  # millions of small objects: generational GC would rescan them
                self._structure = base_structure(base, len(self._rels))
                table = compute_closure(spec, base, len(entities.names), self._structure)
        self._table = table
        self._row_of_base = {fid: i for i, fid in enumerate(base_ids)}
        self._cache: list[Fact | None] = [None] * len(self._table)
        self._sup_cache: dict[int, frozenset[str]] = {}
        self._ranges: dict[tuple[str, str | None], frozenset[str]] = {}
        self.facts: Sequence[Fact] = FactView(self, 0, len(self._table))
        self.base_facts: Sequence[Fact] = FactView(self, 0, self._table.n_base)
        names = entities.names
        parent = list(entities.parent)
        for s, r, o in base:  # the parent map follows the (possibly changed) is_a facts
            if r == 0:
                parent[s] = o
        self.nodes: dict[str, Node] = {
            n: Node(
                n, entities.level[e], entities.type[e], names[parent[e]] if parent[e] >= 0 else None
            )
            for e, n in enumerate(names)
        }
        log.debug(
            "world %s/%s: %d base, %d derived facts in %.2fs",
            spec.name,
            size,
            self._table.n_base,
            len(self._table) - self._table.n_base,
            time.perf_counter() - t0,
        )

    def _fact(self, i: int) -> Fact:
        f = self._cache[i]
        if f is None:
            t = self._table
            S = t.support[i]
            sup = self._sup_cache.get(id(S))
            if sup is None:  # inverse/symmetric facts share their premise's support object
                sup = frozenset([self._base_ids[b] for b in S])
                self._sup_cache[id(S)] = sup
            base = i < t.n_base
            names = self._ents.names
            f = Fact(
                self._base_ids[i] if base else f"d{i - t.n_base:06d}",
                names[t.subj[i]],
                self._rels[t.rel[i]],
                names[t.obj[i]],
                base,
                sup,
                t.hops[i],
                t.rule_names[t.rule[i]],
            )
            self._cache[i] = f
        return f

    # -- lookups --------------------------------------------------------------------------
    def fact(self, fact_id: str) -> Fact:
        """The fact with this id (KsmithError if unknown)."""
        row = self._row_of_base.get(fact_id)
        if row is None and fact_id[:1] == "d" and fact_id[1:].isdigit():
            row = self._table.n_base + int(fact_id[1:])
            if row >= len(self._table):
                row = None
        if row is None:
            raise KsmithError(f"unknown fact id '{fact_id}' in world {self.spec.name}/{self.size}")
        return self._fact(row)

    @cached_property
    def _by_subject_relation(self) -> dict[int, list[int]]:
        """(s, r) key (s * n_rel + r) -> rows, in row order."""
        t, n_rel = self._table, len(self._rels)
        idx: dict[int, list[int]] = {}
        with no_gc():
            for i, (s, r) in enumerate(zip(t.subj, t.rel, strict=True)):
                idx.setdefault(s * n_rel + r, []).append(i)
        return idx

    @cached_property
    def _by_object_relation(self) -> dict[int, list[int]]:
        """(o, r) key (o * n_rel + r) -> rows, in row order, for the relations a composition
        joins by object (the first premises: all an incremental update needs)."""
        t, n_rel = self._table, len(self._rels)
        joined = Rules.of(self.spec).joined_second
        idx: dict[int, list[int]] = {}
        with no_gc():
            for i, (o, r) in enumerate(zip(t.obj, t.rel, strict=True)):
                if r in joined:
                    idx.setdefault(o * n_rel + r, []).append(i)
        return idx

    @cached_property
    def _dependents(self) -> dict[int, list[int]]:
        t = self._table
        idx: dict[int, list[int]] = {}
        with no_gc():
            for i in range(t.n_base, len(t)):
                for b in t.support[i]:
                    idx.setdefault(b, []).append(i)
        return idx

    @cached_property
    def _indexes(self) -> WorldIndexes:
        if self._structure is None:
            self._structure = base_structure(self._base, len(self._rels))
        children, declares = self._structure
        return WorldIndexes(
            self._by_subject_relation,
            self._by_object_relation,
            self._dependents,
            children,
            declares,
        )

    def lookup(self, subject: str, relation: str) -> list[Fact]:
        """Base and derived facts with this subject and relation (one per derivation)."""
        s = self._ents.index.get(subject)
        if s is None or relation not in self._rels:
            return []
        key = s * len(self._rels) + self._rel_ids[relation]
        return [self._fact(i) for i in self._by_subject_relation.get(key, ())]

    def _rows(self, subject: str, relation: str) -> list[int]:
        s = self._ents.index.get(subject)
        r = self._rel_ids.get(relation)
        if s is None or r is None:
            return []
        return self._by_subject_relation.get(s * len(self._rels) + r, [])

    def objects(self, subject: str, relation: str) -> list[str]:
        """Distinct objects that hold for (subject, relation), in fact order."""
        obj, names = self._table.obj, self._ents.names
        return list(dict.fromkeys(names[obj[i]] for i in self._rows(subject, relation)))

    def holds(self, subject: str, relation: str, object: str) -> bool:
        """Whether the triple is a base or derived fact of this world."""
        o = self._ents.index.get(object)
        obj = self._table.obj
        return o is not None and any(obj[i] == o for i in self._rows(subject, relation))

    def dependents(self, base_id: str) -> list[Fact]:
        """Derived facts whose support contains `base_id` (they may change with it)."""
        row = self._row_of_base.get(base_id)
        if row is None:
            return []
        return [self._fact(i) for i in self._dependents.get(row, ())]

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
    def _change_rows(self, changes: Mapping[str, str | None]) -> dict[int, int | None]:
        """Validate `changes` and translate them to {base row: new object id or None}."""
        out: dict[int, int | None] = {}
        for fid, new in changes.items():
            i = self._row_of_base.get(fid)
            if i is None:
                raise KsmithError(f"with_changes: '{fid}' is not a base fact of this world")
            if new is None:
                out[i] = None
                continue
            s, r, _ = self._base[i]
            subject, relation = self._ents.names[s], self._rels[r]
            if new not in self._ents.index or new not in self._range_set(relation, subject):
                raise KsmithError(
                    f"with_changes: '{new}' is not a possible object of "
                    f"{relation} for '{subject}' ({fid})"
                )
            out[i] = self._ents.index[new]
        return out

    def _range_set(self, relation: str, subject: str) -> frozenset[str]:
        hier = relation == self.spec.hierarchy.relation
        key = (relation, self.level_of(subject) if hier else None)
        got = self._ranges.get(key)
        if got is None:
            got = self._ranges[key] = frozenset(self.range_values(relation, subject))
        return got

    def closure_delta(self, changes: Mapping[str, str | None]) -> ClosureDelta:
        """What `changes` (base fact id -> new object, None: removed) do to the closure,
        computed incrementally (`ksmith.graph.incremental`) without building a second world."""
        rows = self._change_rows(changes)
        with no_gc():
            return update_closure(
                Rules.of(self.spec), self._table, len(self._ents.names), self._indexes, rows
            )

    def with_changes(self, changes: Mapping[str, str | None]) -> World:
        """A new world where base fact id -> new object (None: the fact is removed).

        New objects must be in `range_values(relation, subject)`. The closure is updated
        incrementally; it equals a full rebuild's as a set of (subject, relation, object,
        support). Base facts keep their ids and order; derived facts are renumbered.
        """
        delta = self.closure_delta(changes)
        t = self._table
        srcs = (t.subj, t.rel, t.obj, t.support, t.hops, t.rule)
        new_srcs = (delta.subj, delta.rel, delta.obj, delta.sup, delta.hops, delta.rule)
        new_obj = {b: delta.obj[k] for k, row in enumerate(delta.rows)
                   if (b := delta.base_of.get(row)) is not None}  # fmt: skip
        keep_base = [b for b in range(t.n_base) if b not in delta.removed]
        cols: tuple[list, ...] = ([], [], [], [], [], [])
        for b in keep_base:
            for col, src in zip(cols, srcs, strict=True):
                col.append(src[b])
            if b in new_obj:
                cols[2][-1] = new_obj[b]
        for j in range(t.n_base, len(t)):
            if j not in delta.dead:
                for col, src in zip(cols, srcs, strict=True):
                    col.append(src[j])
        for k, row in enumerate(delta.rows):
            if row not in delta.base_of:
                for col, src in zip(cols, new_srcs, strict=True):
                    col.append(src[k])
        if delta.removed:  # base rows shift: renumber supports
            remap = {b: i for i, b in enumerate(keep_base)}
            sup = cols[3]
            memo: dict[int, tuple[frozenset[int], frozenset[int]]] = {}  # keeps S alive
            for i, S in enumerate(sup):
                got = memo.get(id(S))
                if got is None:
                    got = memo[id(S)] = (S, frozenset(remap[x] for x in S))
                sup[i] = got[1]
        table = ClosureTable(*cols, list(t.rule_names), len(keep_base))
        base = [(t.subj[b], t.rel[b], new_obj.get(b, t.obj[b])) for b in keep_base]
        ids = [self._base_ids[b] for b in keep_base]
        return World(self.spec, self.size, self._ents, base, ids, table)

    def __repr__(self) -> str:
        return (
            f"World({self.spec.name!r}, size={self.size!r}, nodes={len(self.nodes)}, "
            f"base={len(self.base_facts)}, facts={len(self.facts)})"
        )


def build_world(spec: GraphSpec, size: str = "small") -> World:
    """Sample entities and base facts from `spec` (seeded by spec.seed) and close them."""
    ents = sample_entities(spec, size)
    base = sample_base_facts(spec, ents)
    return World(spec, size, ents, base, [f"b{i:06d}" for i in range(len(base))])
