"""Requests and probes on the small biology world: consistency with the changed closure."""

from __future__ import annotations

import pytest
from test_data_helpers import BIOLOGY, write_suite

from ksmith.data.schema import PROBE_TYPES
from ksmith.errors import KsmithError
from ksmith.graph import build_world
from ksmith.intervene import CandidatePool, WorldIndex, derive_seed, sample_group
from ksmith.spec import load_spec


@pytest.fixture(scope="module")
def world():
    return build_world(load_spec(BIOLOGY), "small")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from ksmith.data import load_corpus, load_probes, load_requests
    from ksmith.data.generate import generate_dataset

    root = tmp_path_factory.mktemp("iv")
    out = root / "ds"
    generate_dataset(
        write_suite(
            root / "specs",
            scales=[1, 20],
            groups={1: 2, 20: 1},
            levels=["root", "intermediate", "leaf"],
        ),
        out,
        progress=False,
    )
    from ksmith.data import list_configs

    cfgs = list_configs(out)
    return {
        "corpus": load_corpus(out),
        "probes": {c: load_probes(out, c) for c in cfgs},
        "requests": {c: load_requests(out, c) for c in cfgs},
    }


@pytest.mark.parametrize("level", ["root", "intermediate", "leaf"])
def test_groups_never_contradict(world, level):
    pool = CandidatePool(world)
    reqs = sample_group(
        pool, kind="edit", level=level, scale=20, group=0, seed=derive_seed(1), where="test"
    )
    assert len(reqs) == 20
    keys = [r.key for r in reqs]
    assert len(set(keys)) == len(keys)
    ids = {r.fact.id for r in reqs}
    for r in reqs:
        assert r.fact.base and r.fact.relation != "is_a"
        assert world.level_of(r.fact.subject) == level
        deps = world.dependents(r.fact.id)
        assert not ids & {d.id for d in deps}
        other_keys = set(keys) - {r.key}
        assert not other_keys & {(d.subject, d.relation) for d in deps}
        assert r.new_object != r.fact.object
        assert r.new_object in world.range_values(r.fact.relation)
        assert r.new_object not in world.objects(r.fact.subject, r.fact.relation)


def test_groups_are_fresh_samples(world):
    pool = CandidatePool(world)
    a = sample_group(pool, kind="edit", level="leaf", scale=10, group=0, seed=1, where="t")
    b = sample_group(pool, kind="edit", level="leaf", scale=10, group=1, seed=2, where="t")
    assert [r.fact.id for r in a] != [r.fact.id for r in b]
    again = sample_group(pool, kind="edit", level="leaf", scale=10, group=0, seed=1, where="t")
    assert [(r.fact.id, r.new_object) for r in a] == [(r.fact.id, r.new_object) for r in again]


def test_too_small_raises_with_counts(world):
    pool = CandidatePool(world)
    with pytest.raises(KsmithError, match=r"suite 's'.*level 'root' has only 100 .*scale 500"):
        sample_group(
            pool,
            kind="edit",
            level="root",
            scale=500,
            group=0,
            seed=0,
            where="suite 's', graph 'biology'",
        )


def test_multi_hop_answers_follow_the_changed_world(world, generated):
    index = WorldIndex(world)
    n = 0
    for cfg, probes in generated["probes"].items():
        reqs = {r["request_id"]: r for r in generated["requests"][cfg]}
        by_group: dict[int, dict] = {}
        for r in reqs.values():
            fid = next(
                f.id
                for f in world.lookup(r["subject"], r["relation"])
                if f.base and f.object == r["object"]
            )
            by_group.setdefault(r["group"], {})[fid] = r["new_object"] or None
        afters = {g: world.with_changes(ch) for g, ch in by_group.items()}
        for p in probes:
            if p["type"] != "multi_hop":
                continue
            n += 1
            after = afters[p["group"]]
            assert p["hops"] >= 1
            assert world.holds(p["subject"], p["relation"], p["object"])
            assert not after.holds(p["subject"], p["relation"], p["object"])
            if p["kind"] == "edit":
                assert after.holds(p["subject"], p["relation"], p["answer_after"])
                assert p["expect_after"] == "match"
            else:
                assert p["answer_after"] == p["answer_before"] and p["expect_after"] == "avoid"
    assert n > 20
    assert index.facts


def test_unlearn_q_plus_avoid_and_q_minus_match(generated):
    for cfg, probes in generated["probes"].items():
        for p in probes:
            if p["kind"] == "unlearn" and p["qset"] == "Q+":
                assert p["expect_after"] == "avoid" and p["answer_after"] == p["answer_before"]
            else:
                assert p["expect_after"] == "match"
            if p["qset"] == "Q-":
                assert p["answer_after"] == p["answer_before"]
        for r in generated["requests"][cfg]:
            if r["kind"] == "unlearn":
                assert r["new_object"] == "" and set(r["plus_answers"]) == {r["object"]}


def test_probe_shapes(generated):
    types = set()
    for probes in generated["probes"].values():
        pairs: dict[str, int] = {}
        for p in probes:
            types.add(p["type"])
            if p["format"] == "mcq":
                assert p["answer_before"] in p["options"] and p["answer_after"] in p["options"]
                if p["type"] == "negation":
                    assert p["options"] == ["true", "false"]
                elif p["type"] != "comparison":
                    assert len(p["options"]) == 4 == len(set(p["options"]))
            else:
                assert p["options"] == []
            assert not p["prompt"].endswith(" ")
            if p["pair_id"]:
                pairs[p["pair_id"]] = pairs.get(p["pair_id"], 0) + 1
        assert set(pairs.values()) <= {2}
    assert types == set(PROBE_TYPES)


def test_comparison_flips_with_the_update(generated):
    seen = 0
    for probes in generated["probes"].values():
        for p in probes:
            if p["type"] == "comparison" and p["kind"] == "edit":
                assert {p["answer_before"], p["answer_after"]} == {"yes", "no"}
                seen += 1
    assert seen


def _after_worlds(world, requests):
    by_group: dict[int, dict] = {}
    for r in requests:
        fid = next(
            f.id
            for f in world.lookup(r["subject"], r["relation"])
            if f.base and f.object == r["object"]
        )
        by_group.setdefault(r["group"], {})[fid] = r["new_object"] or None
    return {g: world.with_changes(ch) for g, ch in by_group.items()}


def test_reverse_probes_have_unique_answers(world, generated):
    """The reverse rule (ksmith.intervene.reverse): answers unique in both worlds."""
    from ksmith.render import Renderer

    rd = Renderer(world.spec)
    inverse = dict(world.spec.inverse_pairs())
    seen = {"inverse": 0, "mcq": 0}
    for cfg, probes in generated["probes"].items():
        afters = _after_worlds(world, generated["requests"][cfg])
        for p in probes:
            if p["type"] != "reverse":
                continue
            after = afters[p["group"]]
            s, r = p["subject"], p["relation"]
            q = inverse.get(r)
            if q is not None and p["prompt"] == rd.reverse(q, s):  # through the inverse
                seen["inverse"] += 1
                assert world.objects(s, r) == [p["answer_before"]]
                if p["kind"] == "edit":
                    assert after.objects(s, r) == [p["answer_after"]]
                else:
                    assert p["answer_before"] not in after.objects(s, r)
                continue
            assert p["format"] == "mcq"
            seen["mcq"] += 1
            asked = [v for v in world.range_values(r) if rd.reverse(r, v) == p["prompt"]]
            assert len(asked) == 1, p["prompt"]
            before_holders = [x for x in p["options"] if world.holds(x, r, asked[0])]
            after_holders = [x for x in p["options"] if after.holds(x, r, asked[0])]
            assert before_holders == [p["answer_before"]]
            if p["kind"] == "edit":
                assert after_holders == [p["answer_after"]] == [s]
            else:
                assert after_holders == [] and p["answer_after"] == s
    assert seen["inverse"] and seen["mcq"]


def test_random_order_is_a_lazy_uniform_permutation():
    import random
    from collections import Counter

    from ksmith.intervene import Draws, random_order

    items = list("abcde")
    assert sorted(random_order(items, Draws(3).below)) == items
    assert list(random_order(items, Draws(3).below)) == list(random_order(items, Draws(3).below))
    below = random.Random(0)._randbelow
    firsts = Counter(next(random_order(items, below)) for _ in range(5000))
    assert set(firsts) == set(items) and min(firsts.values()) > 850  # ~1000 each
    draws = Draws(1)
    pairs = Counter(tuple(list(random_order(items, draws.below))[:2]) for _ in range(20000))
    assert len(pairs) == 20 and min(pairs.values()) > 800  # ~1000 per ordered pair
    x = list(range(6))
    draws.shuffle(x)
    assert sorted(x) == list(range(6))
    it = random_order(list(range(10**6)), draws.below)  # lazy: a few draws, not a million
    assert len({next(it) for _ in range(5)}) == 5


@pytest.mark.parametrize("kind", ["edit", "unlearn"])
@pytest.mark.parametrize("level", ["root", "leaf"])
def test_group_diff_is_the_difference_of_the_two_worlds(world, kind, level):
    from ksmith.intervene import group_diff

    pool = CandidatePool(world)
    reqs = sample_group(pool, kind=kind, level=level, scale=20, group=0, seed=5, where="t")
    changes = {r.fact.id: r.new_object for r in reqs}
    diff = group_diff(WorldIndex(world), changes)
    before = {f.triple for f in world.facts}
    after = {f.triple for f in world.with_changes(changes).facts}
    assert diff.removed_triples == before - after
    added = {(s, r, o) for (s, r), objs in diff.added.items() for o in objs}
    assert added == after - before
    assert diff.keys == {(s, r) for s, r, _ in (before ^ after)}
