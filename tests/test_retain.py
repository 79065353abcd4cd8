"""Retain models (ksmith.world.retain): the world without the dataset's forget set, trained by
the world model's recipe; tiny suite, tiny model, seconds each."""

from __future__ import annotations

import json

import pytest
from test_data_helpers import write_suite

from ksmith.cli import main
from ksmith.data import list_configs, load_requests
from ksmith.data.generate import generate_dataset
from ksmith.errors import KsmithError
from ksmith.models import model_fingerprint
from ksmith.world import load_world_spec, read_model_card
from ksmith.world.retain import (
    FORGET_FILE,
    dataset_graphs,
    pretrain_retain,
    probe_overlap,
    retain_corpus,
    retain_worlds,
)

# a 1-layer model, a few steps: enough to test the folder, the card and determinism
TINY = [
    "layers=1",
    "hidden=32",
    "heads=2",
    "intermediate=64",
    "max_position=128",
    "batch_size=8",
    "max_steps=6",
    "curriculum_steps=0",  # the default's curriculum is longer than this budget
    "eval_every=6",
    "eval_sample=20",
    "eval_batch_size=64",
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def suite_and_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("retain")
    suite = write_suite(root / "specs", profile_per_level=10)
    out = root / "ds"
    generate_dataset(suite, out, progress=False, workers=1)
    return suite, out


@pytest.fixture(scope="module")
def worlds(suite_and_dataset):
    suite, ds = suite_and_dataset
    graphs = dataset_graphs(ds, suite)
    return graphs, *retain_worlds(ds, graphs)


def test_forget_set_is_the_union_of_unlearn_requests(suite_and_dataset, worlds):
    _, ds = suite_and_dataset
    graphs, pairs, forget = worlds
    (graph, world, retain) = pairs[0]
    wanted = {
        (r["subject"], r["relation"], r["object"])
        for c in list_configs(ds)
        if ".unlearn." in c
        for r in load_requests(ds, c)
    }
    assert set(forget.triples["biology"]) == wanted
    assert forget.size == len(wanted) == len(forget.ids["biology"])
    for s, r, o in wanted:  # forgotten in the retain world, known in the full one
        assert world.holds(s, r, o) and not retain.holds(s, r, o)
    # the closure is recomputed: every removed triple is gone from the retain world, every
    # other triple of the full world stays, and some entailed facts went with their support
    assert forget.removed["biology"] >= wanted
    assert len(forget.removed["biology"]) > len(wanted)
    for s, r, o in forget.removed["biology"]:
        assert not retain.holds(s, r, o)
    kept = [
        f for f in world.facts if (f.subject, f.relation, f.object) not in forget.removed["biology"]
    ]
    assert all(retain.holds(f.subject, f.relation, f.object) for f in kept[:500])
    # entailed-only facts: a removed derived fact rests on a forgotten base fact
    ids = set(forget.ids["biology"])
    derived = [f for f in world.facts if not f.base
               and (f.subject, f.relation, f.object) in forget.removed["biology"]]  # fmt: skip
    assert derived and all(f.support & ids for f in derived)
    assert len(forget.fingerprint) == 64


def test_retain_corpus_lacks_exactly_the_removed_facts(suite_and_dataset, worlds):
    _, ds = suite_and_dataset
    graphs, pairs, forget = worlds
    rows = retain_corpus(ds, pairs)  # also checks the full world regenerates the dataset's corpus
    texts = [t for k, t, _ in rows if k == "question"]
    from ksmith.render import Renderer, fill

    rd = Renderer(graphs[0].spec)
    asked = {f"{fill(rd.text(r).question[0], s)} {o}" for s, r, o in forget.removed["biology"]}
    assert asked and not asked & set(texts)
    _, world, _ = pairs[0]
    kept = {f"{fill(rd.text(f.relation).question[0], f.subject)} {f.object}" for f in world.facts
            if (f.subject, f.relation, f.object) not in forget.removed["biology"]}  # fmt: skip
    # ... and states every fact of the retain world: the full world's minus the removed, plus
    # what the changed closure newly derives (an entity inheriting where its own value went)
    gained = {f"{fill(rd.text(r).question[0], s)} {o}" for s, r, o in forget.added["biology"]}
    assert kept | gained == set(texts) and not kept & gained


def test_retain_training_data_keeps_the_world_models_curriculum_subjects(suite_and_dataset, worlds):
    """Each retain line keeps its subject, so a curriculum (`curriculum_fraction`) picks the
    same subjects in the retain world as in the world (those still present)."""
    from ksmith.world.pretrain import load_world_data
    from ksmith.world.retain import retain_world_data
    from ksmith.world.training import curriculum

    _, ds = suite_and_dataset
    _, pairs, forget = worlds
    full, retain = load_world_data(ds), retain_world_data(ds, pairs, forget)
    assert len(retain.subjects) == len(retain.lines) and len(full.subjects) == len(full.lines)
    assert all(retain.subjects) and set(retain.subjects) <= set(full.subjects)
    pick = lambda d: {d.subjects[i] for i in curriculum(d.subjects, 0.3, seed=0)}  # noqa: E731
    assert pick(retain) == pick(full) & set(retain.subjects)
    # and its kind, for `curriculum_kinds`
    assert len(retain.kinds) == len(retain.lines) and len(full.kinds) == len(full.lines)
    assert set(retain.kinds) <= set(full.kinds) and "description" in set(retain.kinds)


def test_retain_profile_leaves_out_probes_resting_on_a_forgotten_fact(suite_and_dataset, worlds):
    """The retain model is not measured on what it cannot know: a probe is left out of its
    knowledge check and profile when its own fact is removed or a base fact in its support is
    forgotten, such as a comparison partner's (whose own fact stays)."""
    from ksmith.world.pretrain import load_world_data
    from ksmith.world.retain import asks_forgotten, retain_world_data

    _, ds = suite_and_dataset
    _, pairs, forget = worlds
    probes = load_world_data(ds).profile[0]
    kept = retain_world_data(ds, pairs, forget).profile[0]
    gone = forget.ids["biology"]
    assert kept and all(set(gone).isdisjoint(p["support"]) for p in kept)
    assert all(
        (p["subject"], p["relation"], p["object"]) not in forget.removed["biology"] for p in kept
    )
    # comparisons whose own fact stays but whose partner's is forgotten: left out
    partner_only = [
        p
        for p in probes
        if p["type"] == "comparison"
        and (p["subject"], p["relation"], p["object"]) not in forget.removed["biology"]
        and not set(gone).isdisjoint(p["support"])
    ]
    assert partner_only and all(asks_forgotten(p, forget, "biology") for p in partner_only)
    ids = {p["id"] for p in kept}
    assert not ids & {p["id"] for p in partner_only}
    # and nothing else: every probe resting on no forgotten fact is kept
    assert ids == {p["id"] for p in probes if not asks_forgotten(p, forget, "biology")}


def test_probe_overlap_counts_q_minus_probes_asking_removed_facts(suite_and_dataset, worlds):
    _, ds = suite_and_dataset
    graphs, _, forget = worlds
    overlap = probe_overlap(ds, forget, graphs)
    assert set(overlap) == set(list_configs(ds))
    for counts in overlap.values():
        assert 0 <= counts["minus_removed"] <= counts["minus"] > 0
        assert 0 <= counts["retain_pairs_removed"] <= counts["retain_pairs"]


def test_a_glob_chooses_the_configs_of_the_forget_set(suite_and_dataset, worlds):
    suite, ds = suite_and_dataset
    graphs, _, union = worlds
    _, leaf = retain_worlds(ds, graphs, "*.unlearn.leaf.*")
    _, root = retain_worlds(ds, graphs, "*.unlearn.root.*")
    assert set(leaf.ids["biology"]) | set(root.ids["biology"]) == set(union.ids["biology"])
    assert 0 < leaf.size < union.size and leaf.removed["biology"] <= union.removed["biology"]
    _, none = retain_worlds(ds, graphs, "*.edit.*")
    assert none.size == 0


def test_the_datasets_own_spec_rebuilds_the_same_worlds(suite_and_dataset, worlds):
    """Without --suite, spec.yaml (declared order of relations kept) gives the same forget set
    and a corpus that regenerates the dataset's."""
    _, ds = suite_and_dataset
    pairs, forget = retain_worlds(ds)
    assert forget == worlds[2]
    assert retain_corpus(ds, pairs) == retain_corpus(ds, worlds[1])


def test_wrong_suite_is_refused(suite_and_dataset, tmp_path):
    _, ds = suite_and_dataset
    other = write_suite(tmp_path / "specs", seed=8)
    with pytest.raises(KsmithError, match="not the suite it was generated from"):
        dataset_graphs(ds, other)


def _cli(suite, ds, out, *extra):
    sets = [x for s in TINY for x in ("--set", s)]
    return main(["retain", str(ds), "--suite", str(suite), "--out", str(out), "--no-progress",
                 "--device", "cpu", *sets, *extra])  # fmt: skip


def test_retain_model_folder_card_and_determinism(suite_and_dataset, worlds, tmp_path):
    """Two trainings (the function and the CLI) give byte-identical folders; the card names
    what the model lacks."""
    suite, ds = suite_and_dataset
    _, pairs, forget = worlds
    a, b = tmp_path / "a", tmp_path / "b"
    meta = pretrain_retain(ds, a, load_world_spec(None, TINY), suite=suite, device="cpu",
                           progress=False)  # fmt: skip
    assert _cli(suite, ds, b) == 0
    assert model_fingerprint(a) == model_fingerprint(b)
    for name in ("tokenizer.json", FORGET_FILE, "README.md"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    card = read_model_card(a)
    block = card["retain"]
    assert block == meta["retain"]
    assert block["forget_facts"] == forget.size
    assert block["configs"] == [c for c in list_configs(ds) if ".unlearn." in c]
    assert block["forget_fingerprint"] == forget.fingerprint
    assert block["forget_ids"] == {"biology": list(forget.ids["biology"])}
    listed = json.loads((a / FORGET_FILE).read_text())
    assert listed["fingerprint"] == forget.fingerprint
    assert len(listed["domains"]["biology"]["removed"]) == forget.removed_count
    assert "retain-model" in (a / "README.md").read_text()
    assert card["corpus_lines"] == len(retain_corpus(ds, pairs))
    # the world model's tokenizer: one token id per word in both models, so their per-token
    # log-likelihoods are comparable
    from ksmith.world.pretrain import pretrain

    spec = load_world_spec(None, [*TINY, "max_steps=1", "allow_below_threshold=true"])
    pretrain(ds, tmp_path / "w", spec, device="cpu", progress=False)
    assert (tmp_path / "w" / "tokenizer.json").read_bytes() == (a / "tokenizer.json").read_bytes()


def test_a_dataset_without_unlearning_is_refused(tmp_path):
    suite = write_suite(tmp_path / "specs", kinds=["edit"])
    generate_dataset(suite, tmp_path / "ds", progress=False, workers=1)
    with pytest.raises(KsmithError, match="no unlearn requests"):
        pretrain_retain(tmp_path / "ds", tmp_path / "m", load_world_spec(None, TINY), suite=suite)
    assert not (tmp_path / "m").exists()
