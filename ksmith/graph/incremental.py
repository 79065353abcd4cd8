"""Incremental closure updates: change some base facts, re-derive only what they touch.

Given a closed world and changes {base row: new object entity, or None to remove}:

1. every fact whose support meets the changed rows is dropped (the changed base facts
   included): these and only these may differ (see `ksmith.graph.closure`);
2. the changed base facts with their new objects are added, and so are the inheritance steps a
   removal unblocks (a node that no longer declares r inherits r from its parent again);
3. forward chaining continues from these facts, joined against the surviving facts of the old
   closure (all of them count as processed) and the new facts processed before, through every
   rule: inheritance down the (changed) hierarchy with overrides, inverse, symmetry and
   composition, up to the hop caps. Dominated derivations are dropped on both sides.

Because the closure keeps the Pareto frontier of derivations (order independent), the result is
exactly the closure a full rebuild gives, as a set of (subject, relation, object, support): the
property `tests/test_graph_incremental.py` checks on random worlds. The cost is proportional to
the facts touched, not to the world.
"""

from __future__ import annotations

from dataclasses import dataclass

from ksmith.graph.closure import BASE, INHERIT, Chain, ClosureTable, Rules


@dataclass(frozen=True)
class WorldIndexes:
    """Lookups over a closed world's rows, built once per world (see `World._indexes`)."""

    sr_rows: dict[int, list[int]]  # (s, r) key -> rows, row order
    or_rows: dict[int, list[int]]  # (o, r) key -> rows of `Rules.joined_second`, row order
    dependents: dict[int, list[int]]  # base row -> derived rows whose support holds it
    children: dict[int, list[tuple[int, int]]]  # parent -> (child, is_a base row)
    declares: set[int]  # (s, r) keys of base facts


@dataclass
class ClosureDelta:
    """What changes do to a closure. Rows >= `start` are new; supports are old base rows."""

    dead: set[int]  # old rows that are gone (support meets the changes, or now dominated)
    start: int  # row number of the first new row (= old table length)
    rows: list[int]  # new rows, in derivation order
    subj: list[int]
    rel: list[int]
    obj: list[int]
    sup: list[frozenset[int]]
    hops: list[int]
    rule: list[int]
    base_of: dict[int, int]  # new row -> the base row it replaces (changed base facts)
    removed: set[int]  # base rows removed


class _Overlay:
    """An old (key -> rows) index without dead rows, plus the rows new facts add."""

    def __init__(self, old: dict[int, list[int]], dead: set[int]):
        self.old, self.dead, self.new = old, dead, {}

    def get(self, key: int, default=None):
        old, new = self.old.get(key), self.new.get(key)
        if old is None and new is None:
            return default
        dead = self.dead
        rows = [j for j in old if j not in dead] if old else []
        return rows + new if new else rows

    def setdefault(self, key: int, default: list[int]) -> list[int]:
        return self.new.setdefault(key, default)

    def discard(self, key: int, row: int) -> None:
        rows = self.new.get(key)
        if rows is not None and row in rows:
            rows.remove(row)


class _TripleOverlay(_Overlay):
    """Triple key -> live rows: old rows found through the (s, r) index, plus new rows."""

    def __init__(self, sr_rows: dict[int, list[int]], dead: set[int], obj: list[int], E: int):
        super().__init__(sr_rows, dead)
        self.obj, self.E = obj, E

    def get(self, key: int, default=None):
        sr, o = divmod(key, self.E)
        obj, dead = self.obj, self.dead
        rows = [j for j in self.old.get(sr, ()) if obj[j] == o and j not in dead]
        new = self.new.get(key)
        if new:
            rows += new
        return rows or default

    def note(self, key: int, row: int, prev) -> None:
        self.new.setdefault(key, []).append(row)


def update_closure(
    rules: Rules,
    table: ClosureTable,
    n_entities: int,
    ix: WorldIndexes,
    changes: dict[int, int | None],
) -> ClosureDelta:
    """The delta `changes` ({base row: new object id or None}) make to `table`.

    The table's columns are appended to while chaining and restored before returning.
    """
    n_rel, n_base, start = rules.n_rel, table.n_base, len(table)
    subj, rel, obj = table.subj, table.rel, table.obj
    removed = {b for b, o in changes.items() if o is None}
    dead: set[int] = set()
    for b in changes:
        dead.add(b)
        dead.update(ix.dependents.get(b, ()))

    # the changed hierarchy and overrides
    children = ix.children
    for b in sorted(changes):
        if rel[b] == 0:
            children = dict(children) if children is ix.children else children
            old_p, new_p = obj[b], changes[b]
            children[old_p] = [x for x in children.get(old_p, ()) if x[1] != b]
            if new_p is not None:
                children[new_p] = sorted([*children.get(new_p, ()), (subj[b], b)], key=_row)
    declares = ix.declares
    undeclared = []
    for b in sorted(removed):
        key = subj[b] * n_rel + rel[b]
        if all(j >= n_base or j in removed for j in ix.sr_rows.get(key, ())):
            undeclared.append(key)
    if undeclared:
        declares = declares - set(undeclared)

    def old_sr(key: int) -> list[int]:
        return [j for j in ix.sr_rows.get(key, ()) if j not in dead]

    chain = Chain(
        rules, n_entities, subj, rel, obj, table.support, table.hops, table.rule,
        _TripleOverlay(ix.sr_rows, dead, obj, n_entities),  # type: ignore[arg-type]
        _Overlay(ix.sr_rows, dead),  # type: ignore[arg-type]
        _Overlay(ix.or_rows, dead),  # type: ignore[arg-type]
        children, declares, dead, old_sr=old_sr,
    )  # fmt: skip
    try:
        base_of: dict[int, int] = {}
        for b in sorted(changes):
            new = changes[b]
            if new is None:
                continue
            row = len(subj)
            chain.add(subj[b], rel[b], new, frozenset((b,)), 0, BASE)
            base_of[row] = b
            if rel[b] == 0:
                chain.new_isa.add(row)
        moved = {subj[b] for b in changes if rel[b] == 0}
        for key in undeclared:  # inheritance a removal unblocks
            s, r = divmod(key, n_rel)
            if r not in rules.inherit or s in moved:  # a moved node inherits via new_isa
                continue
            for isa in old_sr(s * n_rel):
                if isa >= n_base:
                    break
                p = obj[isa]
                for j in old_sr(p * n_rel + r):
                    if table.hops[j] < rules.cap and obj[j] != s:
                        chain.add(
                            s, r, obj[j], table.support[j] | {isa}, table.hops[j] + 1, INHERIT
                        )
        chain.run()
        rows = [j for j in range(start, len(subj)) if j not in dead]
        cols = [
            [col[j] for j in rows]
            for col in (subj, rel, obj, table.support, table.hops, table.rule)
        ]
    finally:
        for col in (subj, rel, obj, table.support, table.hops, table.rule):
            del col[start:]
    return ClosureDelta(
        {j for j in dead if j < start},
        start,
        rows,
        *cols,
        {r: b for r, b in base_of.items() if r not in dead},
        removed,
    )


def _row(x: tuple[int, int]) -> int:
    return x[1]
