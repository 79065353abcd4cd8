"""Indexes over a world, and the difference a group's changes make to it.

The probe generator asks many "who else holds this value?" and "what is the answer now?"
questions; these indexes answer them in O(1) after one pass over the closure, and the group's
difference is computed once from the two closures, never per probe.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from ksmith.render.corpus import range_values, world_facts

Key = tuple[str, str]


class WorldIndex:
    """Lookups over one (before-update) world's closure."""

    def __init__(self, world):
        self.world = world
        self.facts = world_facts(world)
        self.by_id = {f.id: f for f in self.facts}
        by_key: dict[Key, list] = defaultdict(list)
        holders: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
        for f in self.facts:
            by_key[(f.subject, f.relation)].append(f)
            holders[(f.relation, f.object)][f.subject] = None
        self.by_key = dict(by_key)
        self.triples = {f.triple for f in self.facts}
        self.holders = {k: list(v) for k, v in holders.items()}
        nodes = world.nodes
        self.level = {name: n.level for name, n in nodes.items()}
        children: dict[str, list[str]] = defaultdict(list)
        for name in sorted(nodes):
            parent = nodes[name].parent
            if parent is not None:
                children[parent].append(name)
        self.children = dict(children)
        self.parent = {name: n.parent for name, n in nodes.items()}
        subj: dict[tuple[str, str], set[str]] = defaultdict(set)
        for s, r in self.by_key:
            subj[(r, self.level.get(s, ""))].add(s)
        self.subjects_by_rel_level = {k: sorted(v) for k, v in subj.items()}
        self.relations = sorted({r for _, r in self.by_key})
        self._valuesets: dict[str, dict[frozenset[str], list[str]]] = {}
        self._ranges: dict[tuple[str, str | None], list[str]] = {}

    def values(self, key: Key) -> list[str]:
        """Distinct values of (subject, relation) before the update, in fact order."""
        return list(dict.fromkeys(f.object for f in self.by_key.get(key, ())))

    def range_of(self, relation: str, subject: str) -> list[str]:
        """Possible objects of (subject, relation); for the hierarchy relation, the nodes one
        level above the subject."""
        return range_values(self.world, relation, subject, self._ranges)

    def subjects_with_valueset(self, relation: str, values: frozenset[str]) -> list[str]:
        """Subjects whose set of `relation` values equals `values` (before the update)."""
        if not self._valuesets:  # one pass over all keys, on first use
            sets: dict[str, dict[frozenset[str], list[str]]] = defaultdict(dict)
            for (s, r), fs in self.by_key.items():
                sets[r].setdefault(frozenset(f.object for f in fs), []).append(s)
            self._valuesets = dict(sets)
        return self._valuesets.get(relation, {}).get(values, [])


@dataclass
class GroupDiff:
    """The closure's change under one group's requests: triples added and removed, by key.

    Derived fact ids are renumbered in a changed world, so facts are compared as triples.
    """

    after: object  # the changed World
    added: dict[Key, list[str]] = field(default_factory=dict)  # key -> objects gained
    removed: dict[Key, list[str]] = field(default_factory=dict)  # key -> objects lost
    removed_triples: set[tuple[str, str, str]] = field(default_factory=set)
    added_rv: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    removed_rv: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    @property
    def keys(self) -> set[Key]:
        """Every (subject, relation) whose values differ between the two worlds."""
        return set(self.added) | set(self.removed)


def group_diff(index: WorldIndex, changes: dict[str, str | None]) -> GroupDiff:
    """Apply `changes` ({base fact id: new object or None}) and diff the two closures."""
    after = index.world.with_changes(changes)
    after_triples = {f.triple for f in after.facts}
    diff = GroupDiff(after)
    diff.removed_triples = index.triples - after_triples
    for s, r, o in sorted(diff.removed_triples):
        diff.removed.setdefault((s, r), []).append(o)
        diff.removed_rv.setdefault((r, o), set()).add(s)
    for s, r, o in sorted(after_triples - index.triples):
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
    return (subject, relation, value) in index.triples


def holds_after(
    index: WorldIndex, diff: GroupDiff, relation: str, value: str, subject: str
) -> bool:
    if subject in diff.added_rv.get((relation, value), ()):
        return True
    if subject in diff.removed_rv.get((relation, value), ()):
        return False
    return holds_before(index, relation, value, subject)
