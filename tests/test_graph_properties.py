"""Property tests of the world closure: soundness, exact supports, agreement, determinism."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ksmith.graph import Fact, World, build_world
from ksmith.graph.testing import tiny_spec

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 10_000)
shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4))


def _key(f: Fact) -> tuple:
    return (f.subject, f.relation, f.object, f.support)


def rederivable(world: World, f: Fact) -> bool:
    """Re-derive `f` from other facts of the world by its recorded rule (independent check)."""
    spec = world.spec
    facts = list(world.facts)
    by_triple: dict[tuple[str, str, str], list[Fact]] = {}
    for g in facts:
        by_triple.setdefault(g.triple, []).append(g)
    if f.base:
        return f.support == {f.id} and f.hops == 0
    if f.rule == "inverse":
        invs = [b for a, b in spec.inverse_pairs() if a == f.relation]
        return any(
            g.support == f.support and g.hops == f.hops - 1
            for q in invs
            for g in by_triple.get((f.object, q, f.subject), [])
        )
    if f.rule == "symmetric":
        return f.relation in spec.symmetric() and any(
            g.support == f.support and g.hops == f.hops - 1
            for g in by_triple.get((f.object, f.relation, f.subject), [])
        )
    if f.rule == "inherit":
        if f.relation not in spec.inherited():
            return False
        if any(g.base and g.relation == f.relation for g in world.lookup(f.subject, f.relation)):
            return False  # an own base value overrides inheritance
        h = spec.hierarchy.relation
        for isa in (g for g in world.base_facts if g.subject == f.subject and g.relation == h):
            if isa.id not in f.support:
                continue
            for g in by_triple.get((isa.object, f.relation, f.object), []):
                if (
                    g.support | {isa.id} == f.support
                    and isa.id not in g.support
                    and g.hops == f.hops - 1
                ):
                    return True
        return False
    if f.rule.startswith("compose:"):
        rule = next(r for r in spec.compose_rules() if r.name == f.rule.split(":", 1)[1])
        r1, r2 = rule.premises
        if f.relation != rule.conclusion or f.hops > rule.max_hops:
            return False
        for g1 in world.lookup(f.subject, r1):
            for g2 in world.lookup(g1.object, r2):
                if (
                    g2.object == f.object
                    and g1.support | g2.support == f.support
                    and g1.hops + g2.hops + 1 == f.hops
                ):
                    return True
        return False
    return False


@SETTINGS
@given(seed=seeds, shape=shapes)
def test_every_derived_fact_follows_from_its_support(seed, shape):
    world = build_world(tiny_spec(seed, shape))
    assert len(world.facts) > len(world.base_facts)
    for f in world.facts:
        assert f.hops <= world.spec.max_hops
        assert rederivable(world, f), f
        assert f.support <= {b.id for b in world.base_facts}


@SETTINGS
@given(seed=seeds, shape=shapes)
def test_inverse_symmetric_and_inheritance_agree(seed, shape):
    world = build_world(tiny_spec(seed, shape))
    spec = world.spec
    cap = spec.max_hops
    triples = {f.triple for f in world.facts}
    for f in world.facts:
        if f.hops >= cap or f.subject == f.object:
            continue
        for a, b in spec.inverse_pairs():
            if f.relation == a:
                assert (f.object, b, f.subject) in triples, f
        if f.relation in spec.symmetric():
            assert (f.object, f.relation, f.subject) in triples, f
    # inheritance: a node without its own value has all of its parent's values
    for rel in spec.inherited():
        for name, node in world.nodes.items():
            if node.parent is None or any(f.base for f in world.lookup(name, rel)):
                continue
            parent_vals = {f.object for f in world.lookup(node.parent, rel) if f.hops < cap}
            assert parent_vals <= set(world.objects(name, rel)), (name, rel)


@SETTINGS
@given(seed=seeds, shape=shapes, pick=st.integers(0, 10**6), remove=st.booleans())
def test_with_changes_changes_exactly_the_dependents(seed, shape, pick, remove):
    world = build_world(tiny_spec(seed, shape))
    b = world.base_facts[pick % len(world.base_facts)]
    options = [v for v in world.range_values(b.relation, b.subject) if v != b.object]
    new = None if remove or not options else options[pick % len(options)]
    after = world.with_changes({b.id: new})

    deps = {_key(f) for f in world.dependents(b.id)}
    assert deps == {_key(f) for f in world.facts if not f.base and b.id in f.support}
    untouched_before = {_key(f) for f in world.facts if not f.base and b.id not in f.support}
    untouched_after = {_key(f) for f in after.facts if not f.base and b.id not in f.support}
    after_keys = {_key(f) for f in after.facts}
    assert not deps & after_keys  # every dependent changed
    if new is None:
        # removing a fact can only unblock inheritance: nothing else may disappear
        assert {k[:3] for k in untouched_before} <= {f.triple for f in after.facts}
        assert all(f.id != b.id for f in after.facts)
    else:
        assert untouched_before == untouched_after  # and nothing else did
        assert after.fact(b.id).object == new
        assert after.lookup(b.subject, b.relation)[0].object in {
            new,
            *world.objects(b.subject, b.relation),
        }
    assert {f.id for f in after.base_facts} == {f.id for f in world.base_facts} - (
        {b.id} if new is None else set()
    )


@settings(max_examples=10, deadline=None)
@given(seed=seeds, shape=shapes)
def test_same_spec_same_world(seed, shape):
    a, b = build_world(tiny_spec(seed, shape)), build_world(tiny_spec(seed, shape))
    assert list(a.facts) == list(b.facts)
    assert a.nodes == b.nodes


def _digest(world: World) -> str:
    h = hashlib.sha256()
    for f in world.facts:
        h.update(repr((f.id, f.triple, sorted(f.support), f.hops, f.rule)).encode())
    return h.hexdigest()


def test_determinism_across_processes_and_hash_seeds():
    code = (
        "from ksmith.graph import build_world; from ksmith.graph.testing import tiny_spec;"
        "import hashlib;"
        "w = build_world(tiny_spec(7, (3, 2, 4)), 'large');"
        "h = hashlib.sha256();"
        "[h.update(repr((f.id, f.triple, sorted(f.support), f.hops, f.rule)).encode())"
        " for f in w.facts];"
        "print(h.hexdigest())"
    )
    outs = set()
    for hs in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        outs.add(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout.strip()
        )
    assert outs == {_digest(build_world(tiny_spec(7, (3, 2, 4)), "large"))}


def test_different_seeds_give_different_worlds():
    assert _digest(build_world(tiny_spec(1))) != _digest(build_world(tiny_spec(2)))
