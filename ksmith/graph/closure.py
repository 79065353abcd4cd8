"""The closure of a world under its rules, with exact supports, on integer ids.

A fact is (subject, relation, object, support, hops, rule). `support` is the set of base facts a
derivation rests on (the union of its premises' supports, plus the is_a facts an inheritance step
walks through), `hops` the number of rule applications. A triple derived in several ways keeps
one fact per derivation that is not *dominated*: a derivation is dropped when the same triple
already has one with a support that is a subset and no more hops. So the facts that may change
when base fact b changes are exactly those whose support holds b, and facts whose support does
not hold b are derived identically in a world where b's object changed.

Rules (semi-naive forward chaining; each fact is joined once with the facts processed before it):

- inherit:   r(p, o), is_a(c, p), c declares no base r        =>  r(c, o)
- inverse:   r(s, o), inverse(r) = q                           =>  q(o, s)
- symmetric: r(s, o), r symmetric                              =>  r(o, s)
- compose:   r1(a, b), r2(b, c), rule r1 then r2 implies r3    =>  r3(a, c)

Derived self-loops (s == o) are not kept. No derived fact exceeds the spec's `max_hops`, and a
composition's conclusion never exceeds its rule's `max_hops`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ksmith.spec.graph import GraphSpec

BASE, INHERIT, INVERSE, SYMMETRIC = 0, 1, 2, 3  # rule codes; compose rules follow


@dataclass
class ClosureTable:
    """Parallel columns of the closure; rows [0, n_base) are the base facts, in order."""

    subj: list[int]
    rel: list[int]
    obj: list[int]
    support: list[frozenset[int]]  # base-row numbers
    hops: list[int]
    rule: list[int]  # index into `rule_names`
    rule_names: list[str]
    n_base: int

    def __len__(self) -> int:
        return len(self.subj)


def compute_closure(
    spec: GraphSpec,
    base: list[tuple[int, int, int]],
    n_entities: int,
) -> ClosureTable:
    """Close `base` (entity/relation ids; relation 0 is the hierarchy) under the spec's rules."""
    rel_ids = {r: i for i, r in enumerate(spec.relation_names())}
    n_rel = len(rel_ids)
    E = n_entities
    cap = spec.max_hops

    rule_names = ["", "inherit", "inverse", "symmetric"]
    inherit = {rel_ids[r] for r in spec.inherited()}
    symmetric = {rel_ids[r] for r in spec.symmetric()}
    inverse: dict[int, list[int]] = {}
    for a, b in spec.inverse_pairs():
        inverse.setdefault(rel_ids[a], []).append(rel_ids[b])
    as_first: dict[int, list[tuple[int, int, int, int]]] = {}
    as_second: dict[int, list[tuple[int, int, int, int]]] = {}
    for rule in spec.compose_rules():
        code = len(rule_names)
        rule_names.append(f"compose:{rule.name}")
        r1, r2, r3 = rel_ids[rule.premises[0]], rel_ids[rule.premises[1]], rel_ids[rule.conclusion]
        mh = min(rule.max_hops, cap)
        as_first.setdefault(r1, []).append((code, r2, r3, mh))
        as_second.setdefault(r2, []).append((code, r1, r3, mh))
    joined_first = {r2 for v in as_first.values() for _, r2, _, _ in v}  # need index by (r, s)
    joined_second = {r1 for v in as_second.values() for _, r1, _, _ in v}  # need index by (r, o)

    subj: list[int] = []
    rel: list[int] = []
    obj: list[int] = []
    sup: list[frozenset[int]] = []
    hops: list[int] = []
    rule_col: list[int] = []
    by_triple: dict[int, int | list[int]] = {}  # (s, r, o) key -> row or rows

    # hierarchy: children of each node through base is_a facts, and who overrides what
    children: dict[int, list[tuple[int, int]]] = {}
    declares: set[int] = set()  # s * n_rel + r for every base fact
    for i, (s, r, o) in enumerate(base):
        declares.add(s * n_rel + r)
        if r == 0:
            children.setdefault(o, []).append((s, i))

    queue: deque[int] = deque()

    def add(s: int, r: int, o: int, S: frozenset[int], h: int, code: int) -> None:
        key = (s * n_rel + r) * E + o
        prev = by_triple.get(key)
        if prev is not None:
            rows = prev if isinstance(prev, list) else [prev]
            for j in rows:
                if hops[j] <= h and sup[j] <= S:
                    return  # dominated by an existing derivation
        row = len(subj)
        subj.append(s)
        rel.append(r)
        obj.append(o)
        sup.append(S)
        hops.append(h)
        rule_col.append(code)
        if prev is None:
            by_triple[key] = row
        elif isinstance(prev, list):
            prev.append(row)
        else:
            by_triple[key] = [prev, row]
        queue.append(row)

    for i, (s, r, o) in enumerate(base):
        add(s, r, o, frozenset((i,)), 0, BASE)
    n_base = len(subj)

    by_rs: dict[int, list[int]] = {}  # processed rows by r * E + subject
    by_ro: dict[int, list[int]] = {}  # processed rows by r * E + object
    while queue:
        i = queue.popleft()
        s, r, o, S, h = subj[i], rel[i], obj[i], sup[i], hops[i]
        if r in joined_first:
            by_rs.setdefault(r * E + s, []).append(i)
        if r in joined_second:
            by_ro.setdefault(r * E + o, []).append(i)
        if h + 1 > cap:
            continue
        if r in inherit:
            for c, isa in children.get(s, ()):
                if c * n_rel + r not in declares and c != o:
                    add(c, r, o, S | {isa}, h + 1, INHERIT)
        for q in inverse.get(r, ()):
            if o != s:
                add(o, q, s, S, h + 1, INVERSE)
        if r in symmetric and o != s:
            add(o, r, s, S, h + 1, SYMMETRIC)
        for code, r2, r3, mh in as_first.get(r, ()):
            for j in by_rs.get(r2 * E + o, ()):
                hj = h + hops[j] + 1
                if hj <= mh and obj[j] != s:
                    add(s, r3, obj[j], S | sup[j], hj, code)
        for code, r1, r3, mh in as_second.get(r, ()):
            for j in by_ro.get(r1 * E + s, ()):
                hj = h + hops[j] + 1
                if hj <= mh and subj[j] != o and j != i:
                    add(subj[j], r3, o, sup[j] | S, hj, code)
    return ClosureTable(subj, rel, obj, sup, hops, rule_col, rule_names, n_base)
