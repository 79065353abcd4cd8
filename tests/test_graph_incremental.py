"""Incremental closure updates equal full rebuilds (the defining property), on random worlds."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ksmith.graph import World, build_world
from ksmith.graph.testing import tiny_spec

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 10_000)
shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4))


def _facts(world: World) -> set[tuple]:
    return {(f.subject, f.relation, f.object, f.support) for f in world.facts}


def _rebuild(world: World, changes: dict[str, str | None]) -> World:
    """The changed world built from scratch: base facts edited, closure recomputed."""
    t = world._table
    base, ids = [], []
    for i, (s, r, o) in enumerate(world._base):
        fid = world._base_ids[i]
        if fid in changes:
            if changes[fid] is None:
                continue
            o = world._ents.index[changes[fid]]
        base.append((s, r, o))
        ids.append(fid)
    assert t.n_base == len(world._base)
    return World(world.spec, world.size, world._ents, base, ids)


@st.composite
def worlds_and_changes(draw):
    world = build_world(tiny_spec(draw(seeds), draw(shapes)))
    n = draw(st.integers(1, 4))
    picks = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    changes: dict[str, str | None] = {}
    for p in picks:
        b = world.base_facts[p % len(world.base_facts)]
        options = [v for v in world.range_values(b.relation, b.subject) if v != b.object]
        remove = draw(st.booleans())
        changes[b.id] = None if remove or not options else options[p % len(options)]
    return world, changes


@SETTINGS
@given(case=worlds_and_changes())
def test_incremental_equals_full_rebuild(case):
    world, changes = case
    after = world.with_changes(changes)
    full = _rebuild(world, changes)
    assert _facts(after) == _facts(full)
    assert [f.id for f in after.base_facts] == [f.id for f in full.base_facts]
    assert [f.triple for f in after.base_facts] == [f.triple for f in full.base_facts]
    # the world after is usable: lookups and further changes agree with a rebuild too
    for f in list(full.facts)[:50]:
        assert after.holds(*f.triple)
    assert {
        (f.subject, f.relation, f.object, f.support)
        for f in after.dependents(next(iter(after.base_facts)).id)
    } == {
        (f.subject, f.relation, f.object, f.support)
        for f in full.dependents(next(iter(full.base_facts)).id)
    }


@SETTINGS
@given(case=worlds_and_changes())
def test_delta_is_the_difference(case):
    world, changes = case
    delta = world.closure_delta(changes)
    full = _rebuild(world, changes)
    before = _facts(world)
    gone = {f for f in before if any(fid in changes for fid in f[3])}
    names, rels = world._ents.names, world._rels
    t = world._table
    dead = {
        (names[t.subj[j]], rels[t.rel[j]], names[t.obj[j]],
         frozenset(world._base_ids[b] for b in t.support[j]))
        for j in delta.dead
    }  # fmt: skip
    new = {
        (names[s], rels[r], names[o], frozenset(world._base_ids[b] for b in S))
        for s, r, o, S in zip(delta.subj, delta.rel, delta.obj, delta.sup, strict=True)
    }
    assert gone <= dead
    assert (before - dead) | new == _facts(full)
