"""Indexes over a world, and the difference a group's changes make to it.

The probe generator asks many "who else holds this value?" and "what is the answer now?"
questions; these indexes answer them from the world's integer closure table (no `Fact` objects
are built except for the facts a probe asks about). The group's difference comes straight from
`World.closure_delta` (an incremental update): no second world is materialized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from ksmith.render.corpus import range_values

Key = tuple[str, str]


class WorldIndex:
    """Lookups over one (before-update) world's closure. Rows are closure-table rows, in fact
    id order; keys of (subject, relation) pairs are ``s * n_rel + r`` on entity ids."""

    def __init__(self, world):
        self.world = world
        t = world._table
        self.table = t
        self.names: list[str] = world._ents.names
        self.eid: dict[str, int] = world._ents.index
        self.rels: list[str] = world._rels
        self.rid = {r: i for i, r in enumerate(self.rels)}
        self.n_rel = len(self.rels)
        self.sr_rows: dict[int, list[int]] = world._by_subject_relation
        self.n_facts = len(t)
        nodes = world.nodes
        self.level = {name: n.level for name, n in nodes.items()}
        children: dict[str, list[str]] = {}
        for name in sorted(nodes):
            parent = nodes[name].parent
            if parent is not None:
                children.setdefault(parent, []).append(name)
        self.children = children
        self.parent = {name: n.parent for name, n in nodes.items()}
        # relation ids in relation-name order (candidate order of contextual facts)
        present = {k % self.n_rel for k in self.sr_rows}
        self.rel_order = [self.rid[r] for r in sorted(self.rels[i] for i in present)]
        self._valuesets: dict[int, dict] = {}  # relation -> value id or id set -> subjects
        self._ranges: dict[tuple[str, str | None], list[str]] = {}
        self._subject_rows: dict[int, list[int]] = {}
        self._family: dict[str, list[int]] = {}
        self._near: dict[str, list[int]] = {}
        # one pass each over the closure, needed by every group: build them up front
        world._indexes  # noqa: B018  (incremental-update indexes of the world)
        self.subjects_by_rel_level  # noqa: B018
        self.subjects_with_valueset(self.rels[0], frozenset())
        for parent in self.children:
            self._family_rows(parent)

    @property
    def facts(self):
        """The world's facts in fact id order (a lazy sequence: `Fact`s are built on access)."""
        return self.world.facts

    # -- int-level ----------------------------------------------------------------------------
    def key(self, subject: str, relation: str) -> int:
        return self.eid[subject] * self.n_rel + self.rid[relation]

    def rows(self, subject: str, relation: str) -> list[int]:
        """Closure rows of (subject, relation), base and derived, in fact order."""
        s = self.eid.get(subject)
        if s is None:
            return []
        return self.sr_rows.get(s * self.n_rel + self.rid[relation], [])

    def fact(self, row: int):
        """The `Fact` of a closure row (built on demand, cached by the world)."""
        return self.world._fact(row)

    def triple(self, row: int) -> tuple[str, str, str]:
        """(subject, relation, object) names of a closure row."""
        t = self.table
        return (self.names[t.subj[row]], self.rels[t.rel[row]], self.names[t.obj[row]])

    def support_ids(self, row: int) -> set[str]:
        ids = self.world._base_ids
        return {ids[b] for b in self.table.support[row]}

    # -- string-level -------------------------------------------------------------------------
    def values(self, key: Key) -> list[str]:
        """Distinct values of (subject, relation) before the update, in fact order."""
        obj, names = self.table.obj, self.names
        rows = self.rows(*key)
        if len(rows) == 1:
            return [names[obj[rows[0]]]]
        return list(dict.fromkeys(names[obj[j]] for j in rows))

    def holds(self, subject: str, relation: str, value: str) -> bool:
        o = self.eid.get(value)
        obj = self.table.obj
        return o is not None and any(obj[j] == o for j in self.rows(subject, relation))

    def range_of(self, relation: str, subject: str) -> list[str]:
        """Possible objects of (subject, relation); for the hierarchy relation, the nodes one
        level above the subject."""
        return range_values(self.world, relation, subject, self._ranges)

    @cached_property
    def subjects_by_rel_level(self) -> dict[tuple[str, str | None], list[str]]:
        """(relation, level of subject) -> subjects with a fact of that relation, sorted."""
        groups: dict[tuple[int, str | None], list[int]] = {}
        level, n_rel = self.world._ents.level, self.n_rel
        for k in self.sr_rows:  # one key per (subject, relation)
            s, r = divmod(k, n_rel)
            groups.setdefault((r, level[s]), []).append(s)
        names = self.names
        return {(self.rels[r], lv): sorted(names[s] for s in v) for (r, lv), v in groups.items()}

    def subjects_with_valueset(self, relation: str, values: frozenset[str]) -> list[str]:
        """Subjects whose set of `relation` values equals `values` (before the update)."""
        if not self._valuesets:  # one pass over all keys, on first use
            sets: dict[int, dict] = {}
            obj, names, n_rel = self.table.obj, self.names, self.n_rel
            for k, rows in self.sr_rows.items():
                s, r = divmod(k, n_rel)
                # one value: keyed by the value id itself (no frozenset for the common case)
                vals = obj[rows[0]] if len(rows) == 1 else _valueset(obj, rows)
                got = sets.get(r)
                if got is None:
                    got = sets[r] = {}
                lst = got.get(vals)
                if lst is None:
                    got[vals] = [names[s]]
                else:
                    lst.append(names[s])
            self._valuesets = sets
        ids = frozenset(self.eid[v] for v in values)
        key = next(iter(ids)) if len(ids) == 1 else ids
        return self._valuesets.get(self.rid[relation], {}).get(key, [])

    def near_rows(self, subject: str) -> list[int]:
        """Rows of facts about `subject`, its parent, its parent's children (its siblings and
        itself again) and its children, in that order (candidates of contextual probes)."""
        got = self._near.get(subject)
        if got is None:
            eid = self.eid
            parent = self.parent.get(subject)
            got = list(self.subject_rows(eid[subject]))
            if parent is not None:
                got += self._family_rows(parent)
            for x in self.children.get(subject, ()):
                got += self.subject_rows(eid[x])
            if len(self._near) > 4096:  # bounded: a group asks about each subject a few times
                self._near.clear()
            self._near[subject] = got
        return got

    def _family_rows(self, parent: str) -> list[int]:
        """Rows about `parent` and then each of its children."""
        fam = self._family.get(parent)
        if fam is None:
            eid = self.eid
            fam = list(self.subject_rows(eid[parent]))
            for x in self.children.get(parent, ()):
                fam += self.subject_rows(eid[x])
            self._family[parent] = fam
        return fam

    def subject_rows(self, s: int) -> list[int]:
        """Rows with subject entity `s`, relations in name order (then fact order); cached."""
        got = self._subject_rows.get(s)
        if got is None:
            got = []
            base, sr_rows = s * self.n_rel, self.sr_rows
            for r in self.rel_order:
                rows = sr_rows.get(base + r)
                if rows:
                    got += rows
            self._subject_rows[s] = got
        return got


def _valueset(obj: list[int], rows: list[int]) -> int | frozenset[int]:
    vals = frozenset(obj[j] for j in rows)
    return next(iter(vals)) if len(vals) == 1 else vals


@dataclass
class GroupDiff:
    """The closure's change under one group's requests: triples added and removed, by key.

    Derived fact ids are renumbered in a changed world, so facts are compared as triples.
    """

    added: dict[Key, list[str]] = field(default_factory=dict)  # key -> objects gained
    removed: dict[Key, list[str]] = field(default_factory=dict)  # key -> objects lost
    removed_triples: set[tuple[str, str, str]] = field(default_factory=set)
    added_rv: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    removed_rv: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    key_ids: set[int] = field(default_factory=set)  # `keys` as integer (s, r) keys

    @property
    def keys(self) -> set[Key]:
        """Every (subject, relation) whose values differ between the two worlds."""
        return set(self.added) | set(self.removed)


def group_diff(index: WorldIndex, changes: dict[str, str | None]) -> GroupDiff:
    """The triples `changes` ({base fact id: new object or None}) add and remove, from the
    incremental closure delta (`World.closure_delta`)."""
    delta = index.world.closure_delta(changes)
    t, n_rel, names, rels = index.table, index.n_rel, index.names, index.rels
    subj, rel, obj = t.subj, t.rel, t.obj
    sr_rows, dead, E = index.sr_rows, delta.dead, len(names)
    new: dict[int, tuple[int, int, int]] = {}
    for s, r, o in zip(delta.subj, delta.rel, delta.obj, strict=True):
        new[(s * n_rel + r) * E + o] = (s, r, o)
    removed: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    for j in dead:  # gone unless another derivation survives or comes back
        sr, o = subj[j] * n_rel + rel[j], obj[j]
        key = sr * E + o
        if key in new or key in seen:
            continue
        seen.add(key)
        for i in sr_rows[sr]:
            if obj[i] == o and i not in dead:
                break
        else:
            removed.append((subj[j], rel[j], o))
    added: list[tuple[int, int, int]] = []
    for s, r, o in new.values():  # new unless the triple held before
        for i in sr_rows.get(s * n_rel + r, ()):
            if obj[i] == o:
                break
        else:
            added.append((s, r, o))
    diff = GroupDiff()
    diff.key_ids = {s * n_rel + r for s, r, _ in removed} | {s * n_rel + r for s, r, _ in added}
    diff.removed_triples = {(names[s], rels[r], names[o]) for s, r, o in removed}
    for s, r, o in sorted(diff.removed_triples):
        diff.removed.setdefault((s, r), []).append(o)
        diff.removed_rv.setdefault((r, o), set()).add(s)
    for s, r, o in sorted((names[s], rels[r], names[o]) for s, r, o in added):
        diff.added.setdefault((s, r), []).append(o)
        diff.added_rv.setdefault((r, o), set()).add(s)
    return diff


def values_after(index: WorldIndex, diff: GroupDiff, key: Key) -> list[str]:
    """The distinct values of `key` in the changed world."""
    before = index.values(key)
    if key not in diff.added and key not in diff.removed:
        return before
    gone = set(diff.removed.get(key, ()))
    return [v for v in before if v not in gone] + diff.added.get(key, [])


def holds_before(index: WorldIndex, relation: str, value: str, subject: str) -> bool:
    return index.holds(subject, relation, value)


def holds_after(
    index: WorldIndex, diff: GroupDiff, relation: str, value: str, subject: str
) -> bool:
    if subject in diff.added_rv.get((relation, value), ()):
        return True
    if subject in diff.removed_rv.get((relation, value), ()):
        return False
    return holds_before(index, relation, value, subject)
