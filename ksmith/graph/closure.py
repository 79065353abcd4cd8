"""The closure of a world under its rules, with exact supports, on integer ids.

A fact is (subject, relation, object, support, hops, rule). `support` is the set of base facts a
derivation rests on (the union of its premises' supports, plus the is_a facts an inheritance step
walks through), `hops` the number of rule applications. A triple derived in several ways keeps
the derivations on its *Pareto frontier*: a derivation is dominated when the same triple has
another whose support is a subset and whose hop count is no larger; dominated derivations are
dropped (on arrival, or later when a dominating one arrives). The frontier does not depend on
the order facts are derived in, which is what lets `ksmith.graph.incremental` update a closure
and get exactly what a full rebuild gives. The facts that may change when base fact b changes
are exactly those whose support holds b: a fact without b can only be dominated by facts
without b, so it is derived identically in a world where b's object changed.

Rules (semi-naive forward chaining; each fact is joined once with the facts processed before it):

- inherit:   r(p, o), is_a(c, p), c declares no base r        =>  r(c, o)
- inverse:   r(s, o), inverse(r) = q                           =>  q(o, s)
- symmetric: r(s, o), r symmetric                              =>  r(o, s)
- compose:   r1(a, b), r2(b, c), rule r1 then r2 implies r3    =>  r3(a, c)

Derived self-loops (s == o) are not kept. No derived fact exceeds the spec's `max_hops`, and a
composition's conclusion never exceeds its rule's `max_hops`.

Keys: a (subject, relation) pair is ``s * n_rel + r``, an (object, relation) pair
``o * n_rel + r`` and a triple ``(s * n_rel + r) * n_entities + o``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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


class Index(dict):
    """key -> list of rows; `discard` removes one row (dominated derivations)."""

    def discard(self, key: int, row: int) -> None:
        rows = self.get(key)
        if rows is not None and row in rows:
            rows.remove(row)


class TripleIndex(dict):
    """triple key -> row, or list of rows when a triple has several derivations."""

    def note(self, key: int, row: int, prev) -> None:
        if prev is None:
            self[key] = row
        elif type(prev) is list:
            prev.append(row)
        else:
            self[key] = [prev, row]

    def discard(self, key: int, row: int) -> None:
        prev = self.get(key)
        if prev == row:
            del self[key]
        elif type(prev) is list and row in prev:
            prev.remove(row)


@dataclass(frozen=True)
class Rules:
    """The spec's rules on relation ids."""

    n_rel: int
    cap: int
    rule_names: tuple[str, ...]
    inherit: frozenset[int]
    symmetric: frozenset[int]
    inverse: dict[int, tuple[int, ...]]
    as_first: dict[int, tuple[tuple[int, int, int, int], ...]]  # r1 -> (code, r2, r3, max hops)
    as_second: dict[int, tuple[tuple[int, int, int, int], ...]]  # r2 -> (code, r1, r3, max hops)
    joined_first: frozenset[int]  # relations joined by subject: need the (s, r) index
    joined_second: frozenset[int]  # relations joined by object: need the (o, r) index

    @classmethod
    def of(cls, spec: GraphSpec) -> Rules:
        rel_ids = {r: i for i, r in enumerate(spec.relation_names())}
        names = ["", "inherit", "inverse", "symmetric"]
        inverse: dict[int, list[int]] = {}
        for a, b in spec.inverse_pairs():
            inverse.setdefault(rel_ids[a], []).append(rel_ids[b])
        first: dict[int, list[tuple[int, int, int, int]]] = {}
        second: dict[int, list[tuple[int, int, int, int]]] = {}
        for rule in spec.compose_rules():
            code = len(names)
            names.append(f"compose:{rule.name}")
            r1, r2 = rel_ids[rule.premises[0]], rel_ids[rule.premises[1]]
            r3 = rel_ids[rule.conclusion]
            mh = min(rule.max_hops, spec.max_hops)
            first.setdefault(r1, []).append((code, r2, r3, mh))
            second.setdefault(r2, []).append((code, r1, r3, mh))
        return cls(
            n_rel=len(rel_ids),
            cap=spec.max_hops,
            rule_names=tuple(names),
            inherit=frozenset(rel_ids[r] for r in spec.inherited()),
            symmetric=frozenset(rel_ids[r] for r in spec.symmetric()),
            inverse={k: tuple(v) for k, v in inverse.items()},
            as_first={k: tuple(v) for k, v in first.items()},
            as_second={k: tuple(v) for k, v in second.items()},
            joined_first=frozenset(r2 for v in first.values() for _, r2, _, _ in v),
            joined_second=frozenset(r1 for v in second.values() for _, r1, _, _ in v),
        )


@dataclass
class Chain:
    """The state forward chaining reads and grows. Columns are appended to; the indexes are
    `Index`/`TripleIndex` dicts in a full build and overlays over an old world's indexes in an
    incremental update (anything with the same `get`, `setdefault` and `discard`)."""

    rules: Rules
    n_entities: int
    subj: list[int]
    rel: list[int]
    obj: list[int]
    sup: list[frozenset[int]]
    hops: list[int]
    rule: list[int]
    by_triple: TripleIndex  # every live row
    by_sr: Index  # processed rows of `joined_first` relations
    by_or: Index  # processed rows of `joined_second` relations
    children: dict[int, list[tuple[int, int]]]  # parent -> (child, is_a base row)
    declares: set[int]  # (s, r) keys with a base fact: they override inheritance
    dead: set[int] = field(default_factory=set)  # dominated rows (dropped at the end)
    queue: deque[int] = field(default_factory=deque)
    new_isa: set[int] = field(default_factory=set)  # incremental: new base is_a rows
    old_sr: Callable[[int], Iterable[int]] | None = None  # incremental: live old rows by (s, r)

    def __post_init__(self) -> None:
        self.add = self._adder()

    def _adder(self):
        """`add(s, r, o, S, h, code)`: add a derivation unless dominated, and drop the
        derivations it dominates. A closure over the columns: it runs once per derived fact."""
        n_rel, E = self.rules.n_rel, self.n_entities
        subj, rel, obj, sup, hops, rule = (
            self.subj,
            self.rel,
            self.obj,
            self.sup,
            self.hops,
            self.rule,
        )
        by_triple, queue, dead = self.by_triple, self.queue, self.dead
        by_sr, by_or = self.by_sr, self.by_or
        get, note = by_triple.get, by_triple.note
        plain = type(by_triple) is TripleIndex  # a dict: new triples are set directly

        # closures over the state, not over `self`: no reference cycle through the chain
        def kill(j: int, key: int) -> None:
            dead.add(j)
            by_triple.discard(key, j)
            by_sr.discard(subj[j] * n_rel + rel[j], j)
            by_or.discard(obj[j] * n_rel + rel[j], j)

        def add(s: int, r: int, o: int, S: frozenset[int], h: int, code: int) -> None:
            key = (s * n_rel + r) * E + o
            prev = get(key)
            if prev is not None:
                rows = prev if type(prev) is list else (prev,)
                for j in rows:
                    if hops[j] <= h and sup[j] <= S:
                        return
                for j in [j for j in rows if h <= hops[j] and S <= sup[j]]:
                    kill(j, key)
                prev = get(key)
            row = len(subj)
            subj.append(s)
            rel.append(r)
            obj.append(o)
            sup.append(S)
            hops.append(h)
            rule.append(code)
            if plain and prev is None:
                by_triple[key] = row
            else:
                note(key, row, prev)
            queue.append(row)

        return add

    def run(self) -> None:
        """Process the queue to a fixpoint."""
        R = self.rules
        n_rel, cap = R.n_rel, R.cap
        subj, rel, obj, sup, hops = self.subj, self.rel, self.obj, self.sup, self.hops
        inherit, symmetric, inverse = R.inherit, R.symmetric, R.inverse
        as_first, as_second = R.as_first, R.as_second
        jf, js = R.joined_first, R.joined_second
        by_sr, by_or = self.by_sr, self.by_or
        children, declares, dead, queue = self.children, self.declares, self.dead, self.queue
        new_isa = self.new_isa
        add = self.add
        empty: tuple = ()
        while queue:
            i = queue.popleft()
            if i in dead:
                continue
            s, r, o, S, h = subj[i], rel[i], obj[i], sup[i], hops[i]
            if r in jf:
                by_sr.setdefault(s * n_rel + r, []).append(i)
            if r in js:
                by_or.setdefault(o * n_rel + r, []).append(i)
            if h + 1 > cap:
                continue
            if r in inherit:
                for c, isa in children.get(s, empty):
                    if c * n_rel + r not in declares and c != o:
                        add(c, r, o, S | {isa}, h + 1, INHERIT)
            if new_isa and i in new_isa:
                self._inherit_through(i)
            for q in inverse.get(r, empty):
                if o != s:
                    add(o, q, s, S, h + 1, INVERSE)
            if r in symmetric and o != s:
                add(o, r, s, S, h + 1, SYMMETRIC)
            for code, r2, r3, mh in as_first.get(r, empty):
                for j in by_sr.get(o * n_rel + r2, empty):
                    hj = h + hops[j] + 1
                    if hj <= mh and obj[j] != s:
                        add(s, r3, obj[j], S | sup[j], hj, code)
            for code, r1, r3, mh in as_second.get(r, empty):
                for j in by_or.get(s * n_rel + r1, empty):
                    hj = h + hops[j] + 1
                    if hj <= mh and subj[j] != o and j != i:
                        add(subj[j], r3, o, sup[j] | S, hj, code)

    def _inherit_through(self, i: int) -> None:
        """New base row i = is_a(c, p) in an incremental update: c inherits the values p has in
        the old world. (New values of p reach c from p's side, through `children`; a full build
        reaches everything from p's side.)"""
        assert self.old_sr is not None
        R = self.rules
        c, p, S = self.subj[i], self.obj[i], self.sup[i]
        hops, obj, sup = self.hops, self.obj, self.sup
        for r in sorted(R.inherit):
            if c * R.n_rel + r in self.declares:
                continue
            for j in self.old_sr(p * R.n_rel + r):
                if hops[j] < R.cap and obj[j] != c:
                    self.add(c, r, obj[j], sup[j] | S, hops[j] + 1, INHERIT)


def base_structure(base: list[tuple[int, int, int]], n_rel: int):
    """(children, declares) of a base: parent -> [(child, is_a row)] and base (s, r) keys."""
    children: dict[int, list[tuple[int, int]]] = {}
    declares: set[int] = set()
    for i, (s, r, o) in enumerate(base):
        declares.add(s * n_rel + r)
        if r == 0:
            children.setdefault(o, []).append((s, i))
    return children, declares


def compute_closure(
    spec: GraphSpec,
    base: list[tuple[int, int, int]],
    n_entities: int,
    structure: tuple[dict[int, list[tuple[int, int]]], set[int]] | None = None,
) -> ClosureTable:
    """Close `base` (entity/relation ids; relation 0 is the hierarchy) under the spec's rules.

    `structure`: `base_structure(base, n_rel)` if the caller has it already (it is not changed).
    """
    rules = Rules.of(spec)
    children, declares = structure or base_structure(base, rules.n_rel)
    chain = Chain(
        rules, n_entities, [], [], [], [], [], [], TripleIndex(), Index(), Index(),
        children, declares,
    )  # fmt: skip
    for i, (s, r, o) in enumerate(base):
        chain.add(s, r, o, frozenset((i,)), 0, BASE)
    n_base = len(chain.subj)
    chain.run()
    keep = _alive(len(chain.subj), chain.dead)
    return ClosureTable(
        *(_pick(col, keep) for col in (chain.subj, chain.rel, chain.obj, chain.sup)),
        _pick(chain.hops, keep),
        _pick(chain.rule, keep),
        list(rules.rule_names),
        n_base,  # a base row is never dominated: its support {i} is no other row's subset
    )


def _alive(n: int, dead: set[int]) -> list[int] | None:
    return None if not dead else [i for i in range(n) if i not in dead]


def _pick(col: list, keep: Iterable[int] | None) -> list:
    return col if keep is None else [col[i] for i in keep]
