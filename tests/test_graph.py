"""World builder: the four domain worlds and the World API used by the probe generator."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from ksmith.errors import KsmithError
from ksmith.graph import NAME_GENERATORS, build_world
from ksmith.graph.testing import tiny_spec
from ksmith.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ["biology", "economics", "history", "physics"]


@pytest.fixture(scope="module", params=DOMAINS)
def small_world(request):
    return build_world(load_spec(ROOT / "specs" / "graphs" / f"{request.param}.yaml"), "small")


def test_domain_small_counts(small_world):
    w = small_world
    spec = w.spec
    n_base, n_all = len(w.base_facts), len(w.facts)
    print(f"{spec.name}: base {n_base}, derived {n_all - n_base}, nodes {len(w.nodes)}")
    assert 1_500 <= n_base <= 2_500
    assert n_all - n_base >= n_base  # the closure adds at least as many facts again
    rules = Counter(f.rule.split(":")[0] for f in w.facts if not f.base)
    assert {"inherit", "inverse", "compose"} <= set(rules), rules
    # >= 4 relations; >= 1 inherits, >= 1 has an inverse, >= 1 composition besides is_a
    assert len(spec.relations) >= 4 and spec.inherited() and spec.inverse_pairs()
    assert [r for r in spec.compose_rules() if r.premises[0] != spec.hierarchy.relation]
    # enough distinct (subject, relation) base facts at every level for 100 requests
    for level in spec.levels:
        pairs = {(f.subject, f.relation) for f in w.base_facts if w.level_of(f.subject) == level}
        assert len(pairs) >= 100, (level, len(pairs))
    assert 15 <= len(w.nodes_at(spec.levels[0])) <= 25


def test_domain_small_names_are_synthetic_and_unique(small_world):
    names = list(small_world.nodes)
    assert len(names) == len(set(names))
    generated = [n for n in small_world.nodes_at("leaf")]
    assert all(n[0].isupper() and n.isalpha() for n in generated)


def test_templates_render(small_world):
    w = small_world
    f = next(f for f in w.base_facts if f.relation != w.spec.hierarchy.relation)
    t = w.spec.templates(f.relation)
    stmt = t.statement[0].format(subject=f.subject, object=f.object)
    assert f.subject in stmt and f.object in stmt
    cloze = t.cloze[0].format(subject=f.subject)
    assert not cloze.endswith(" ") and f.object not in cloze
    assert set(t.paraphrase).isdisjoint(t.cloze)
    assert w.spec.templates(w.spec.hierarchy.relation).statement


def test_world_api_on_tiny_world():
    w = build_world(tiny_spec(3))
    f = w.base_facts[0]
    assert f.id == "b000000" and f.base and f.support == {f.id} and f.hops == 0 and f.rule == ""
    assert w.fact(f.id) is f
    derived = [g for g in w.facts if not g.base]
    assert derived[0].id == "d000000" and w.fact("d000000") == derived[0]
    with pytest.raises(KsmithError):
        w.fact("d999999")
    # lookup returns base and derived facts
    leaf = w.nodes_at("leaf")[0]
    eats = w.lookup(leaf, "eats")
    assert eats and all(g.subject == leaf and g.relation == "eats" for g in eats)
    assert w.holds(leaf, "eats", eats[0].object)
    assert w.lookup("nobody", "eats") == [] and w.lookup(leaf, "nope") == []
    # levels, hierarchy
    root = w.nodes_at("root")[0]
    assert w.level_of(root) == "root" and w.level_of("meat") is None
    assert w.nodes["meat"].type == "food" and w.nodes[leaf].type == "kind"
    desc = w.descendants(root)
    assert desc and all(w.level_of(d) in ("mid", "leaf") for d in desc)
    assert set(w.children(root)) <= set(desc)
    # ranges
    assert w.range_values("eats") == ["meat", "grass", "seeds", "fish"]
    assert set(w.range_values("lives_in")) == {n for n, v in w.nodes.items() if v.type == "place"}
    assert set(w.range_values("is_a", leaf)) == set(w.nodes_at("mid"))
    with pytest.raises(KsmithError):
        w.range_values("flies_to")
    # dependents of a root's inherited value: its descendants without overrides
    root_eats = next(g for g in w.base_facts if g.subject == root and g.relation == "eats")
    deps = w.dependents(root_eats.id)
    assert deps and all(root_eats.id in d.support for d in deps)
    assert {d.subject for d in deps if d.relation == "eats"} <= set(desc)
    # graph: base facts as edges
    g = w.graph
    assert isinstance(g, nx.MultiDiGraph)
    assert g.number_of_edges() == len(w.base_facts)
    assert g.nodes[root]["level"] == "root"
    assert g.edges[f.subject, f.object, f.relation]["fact_id"] == f.id


def test_with_changes_edits_the_hierarchy_and_values():
    w = build_world(tiny_spec(3, (2, 2, 2)))
    leaf = w.nodes_at("leaf")[0]
    isa = next(f for f in w.base_facts if f.subject == leaf and f.relation == "is_a")
    other = next(m for m in w.nodes_at("mid") if m != isa.object)
    after = w.with_changes({isa.id: other})
    assert after.nodes[leaf].parent == other and w.nodes[leaf].parent == isa.object
    assert leaf in after.descendants(other) and leaf not in after.descendants(isa.object)
    # the leaf's transitive is_a follows the move
    assert after.objects(leaf, "is_a") == [other, after.nodes[other].parent]
    with pytest.raises(KsmithError, match="not a possible object"):
        w.with_changes({isa.id: w.nodes_at("root")[0]})  # not one level up
    with pytest.raises(KsmithError, match="not a base fact"):
        w.with_changes({"d000000": None})
    with pytest.raises(KsmithError, match="not a possible object"):
        w.with_changes({isa.id: "Nowhere"})
    assert w.with_changes({}).facts[:] == w.facts[:]


def test_override_beats_inheritance():
    w = build_world(tiny_spec(11, (2, 3, 3)))
    for f in w.base_facts:
        if f.relation != "eats" or w.level_of(f.subject) == "root":
            continue
        # the node's own value is the only one it has; inherited ones are blocked
        assert w.objects(f.subject, "eats") == [f.object]
        parent_vals = w.objects(w.nodes[f.subject].parent, "eats")
        assert f.object not in parent_vals  # sampling makes overrides differ
        return
    pytest.fail("no override sampled")


def test_name_generators_registry():
    import random

    assert {"syllables", "numbered"} <= set(NAME_GENERATORS.names())
    taken: set[str] = set()
    gen = NAME_GENERATORS.get("syllables")
    names = gen(random.Random(0), 5000, taken, min_syllables=1, max_syllables=1)
    assert len(set(names)) == 5000 and taken == set(names)  # grows past the 1-syllable space
    again = gen(random.Random(0), 5000, set(), min_syllables=1, max_syllables=1)
    assert names == again
    with pytest.raises(KsmithError, match="already registered|registered twice"):
        NAME_GENERATORS.register("syllables")(lambda *a, **k: [])


def test_unknown_size():
    with pytest.raises(KsmithError, match="no size 'huge'"):
        build_world(tiny_spec(), "huge")


@pytest.mark.slow
def test_large_world_has_a_million_facts():
    spec = load_spec(ROOT / "specs" / "graphs" / "biology.yaml")
    t0 = time.perf_counter()
    w = build_world(spec, "large")
    seconds = time.perf_counter() - t0
    print(f"biology large: base {len(w.base_facts)}, total {len(w.facts)}, {seconds:.1f}s")
    assert len(w.facts) >= 1_000_000
    assert seconds < 180  # ~15-40 s on one shared core
    leaf = w.nodes_at("leaf")[-1]
    assert w.lookup(leaf, "diet")
