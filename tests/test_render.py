"""Corpus and prompts: direct probes answerable from training, paraphrases held out, retain
sets disjoint from evaluation facts."""

from __future__ import annotations

import pytest
from test_data_helpers import BIOLOGY, write_suite

from ksmith.graph import build_world
from ksmith.render import Renderer, corpus_lines
from ksmith.spec import load_spec


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    from ksmith.data import list_configs, load_corpus, load_probes, load_requests
    from ksmith.data.generate import generate_dataset

    root = tmp_path_factory.mktemp("rd")
    out = root / "ds"
    generate_dataset(write_suite(root / "specs"), out, progress=False)
    cfgs = list_configs(out)
    return (
        load_corpus(out),
        {c: load_probes(out, c) for c in cfgs},
        {c: load_requests(out, c) for c in cfgs},
    )


def test_corpus_is_compact_and_deterministic():
    spec = load_spec(BIOLOGY)
    world = build_world(spec, "small")
    rows = list(corpus_lines(world, Renderer(spec), seed=1))
    assert rows == list(corpus_lines(world, Renderer(spec), seed=1))
    assert 2 * len(world.facts) <= len(rows) <= 6 * len(world.facts)
    stated = {fid for _, fid, _ in rows if fid}
    assert stated == {f.id for f in world.facts}  # every fact, base and derived


def test_direct_probes_are_in_training(generated):
    corpus, probes, _ = generated
    text = "\n".join(corpus)
    lines = set(corpus)
    for cfg_probes in probes.values():
        for p in cfg_probes:
            target = f"{p['prompt']} {p['answer_before']}"
            if p["type"] == "direct":
                assert target in text, target
            if p["type"] == "negation" and p["format"] == "qa":
                assert target in lines, target


def test_paraphrases_never_in_corpus(generated):
    corpus, probes, requests = generated
    text = "\n".join(corpus)
    paras = {p["prompt"] for ps in probes.values() for p in ps if p["type"] == "paraphrase"}
    assert paras
    for prompt in paras:
        assert prompt not in text
    for reqs in requests.values():
        for r in reqs:
            assert not paras & set(r["plus_prompts"]) and not paras & set(r["minus_prompts"])


def test_retain_view_disjoint_from_probe_facts(generated):
    _, probes, requests = generated
    spec = load_spec(BIOLOGY)
    rd = Renderer(spec)
    for cfg, reqs in requests.items():
        for g in {r["group"] for r in reqs}:
            asked = {(p["subject"], p["relation"]) for p in probes[cfg] if p["group"] == g}
            for r in reqs:
                if r["group"] != g:
                    continue
                assert len(r["minus_prompts"]) == len(r["minus_answers"]) > 0
                for prompt in r["minus_prompts"]:
                    for subj, rel in asked:
                        assert prompt not in (rd.cloze(rel, subj), rd.question(rel, subj))
