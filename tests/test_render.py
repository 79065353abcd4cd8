"""Corpus and prompts: direct probes answerable from training, paraphrases held out, retain
sets disjoint from evaluation facts."""

from __future__ import annotations

import pytest
from test_data_helpers import BIOLOGY, write_suite

from ksmith.graph import build_world
from ksmith.render import Renderer, corpus_lines, fill
from ksmith.render.phrasing import fact_key, sentence_of
from ksmith.render.text import COMPARISON_CUE, FALSE, NO, TF_CUE, TRUE, YES, reasoned
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


def test_corpus_is_deterministic_and_states_every_fact_in_every_trained_phrasing():
    spec = load_spec(BIOLOGY)
    world = build_world(spec, "small")
    rd = Renderer(spec)
    rows = list(corpus_lines(world, rd, seed=1))
    assert rows == list(corpus_lines(world, rd, seed=1))
    assert rows != list(corpus_lines(world, rd, seed=2))
    stated = {fid for _, _, ids, kind, _ in rows if kind == "description" for fid in ids.split()}
    assert stated == {f.id for f in world.facts}  # every fact, base and derived
    sentences = {
        s.strip() + "."
        for _, _, _, kind, text in rows
        if kind == "description"
        for s in text[:-1].split(". ")
    }
    for f in list(world.facts)[::7]:
        forms = rd.phrasings(f.relation).trained(fact_key(f.subject, f.relation, f.object), rd.seed)
        assert len(forms) >= 2
        for form in forms:
            assert fill(form, f.subject, f.object) in sentences, (f, form)


def test_phrasings_hold_out_one_prompt_per_fact_and_one_template_everywhere():
    spec = load_spec(BIOLOGY)
    rd = Renderer(spec)
    ph = rd.phrasings("diet")
    assert ph.direct == "{subject} eats" and ph.unseen == "To survive, {subject} consumes"
    held = {ph.held_out(fact_key(f"s{i}", "diet", "meat"), rd.seed) for i in range(200)}
    assert held == set(ph.rotating)  # every rotating prompt is held out for some facts
    for i in range(50):
        key = fact_key(f"s{i}", "diet", "meat")
        trained = ph.trained(key, rd.seed)
        assert sentence_of(ph.held_out(key, rd.seed)) not in trained
        assert sentence_of(ph.unseen) not in trained and sentence_of(ph.direct) in trained


def test_direct_probes_are_in_training(generated):
    corpus, probes, _ = generated
    rd = Renderer(load_spec(BIOLOGY))
    text = "\n".join(corpus)
    lines = set(corpus)
    for cfg_probes in probes.values():
        for p in cfg_probes:
            target = f"{p['prompt']} {p['answer_before']}"
            if p["type"] == "direct":
                assert target in text, target
            trained = "neg+new" not in p["pair_id"] and "neg-false" not in p["pair_id"]
            if p["type"] == "negation" and p["format"] == "qa" and trained:
                if not p["cue"]:
                    assert target in lines, target  # true facts' statements and negations
                    continue
                # reasoned: the line writes the recall of the fact asked, the cue, the answer
                end = f" {p['cue']} {p['answer_before']}"
                got = [x for x in lines if x.startswith(p["prompt"] + " ") and x.endswith(end)]
                assert len(got) == 1, (target, got)
                recall = got[0][len(p["prompt"]) + 1 : -len(end)]
                assert rd.statement(p["relation"], p["subject"], p["object"]) in recall, got


def test_reasoned_lines_recall_every_value_of_the_fact_asked():
    """True/false and comparison lines (dataset format 5) write the recall of (subject,
    relation) before the cue: one first-template statement per value, sorted; the comparison
    answer is yes exactly when both recalls list the same values. Keys with more than
    RECALL_MAX_VALUES values are asked without it."""
    spec = load_spec(BIOLOGY)
    world = build_world(spec, "small")
    rd = Renderer(spec)
    values: dict[tuple[str, str], set[str]] = {}
    for f in world.facts:
        values.setdefault((f.subject, f.relation), set()).add(f.object)
    by_question = {rd.question(r, s): (s, r) for s, r in values}
    seen = {"truefalse": 0, "comparison": 0, "plain": 0}
    for _, subject, _, kind, text in corpus_lines(world, rd, seed=1):
        if kind == "truefalse":
            head, sep, tail = text.partition(f" {TF_CUE} ")
            if not sep:
                seen["plain"] += 1
                continue
            assert tail in (TRUE, FALSE)
            keys = [k for k in values if k[0] == subject and rd.recall(k[1], subject, values[k])
                    and head.endswith(" " + rd.recall(k[1], subject, values[k]))]  # fmt: skip
            assert keys, text
            assert all(reasoned(len(values[k])) for k in keys)
            seen["truefalse"] += 1
        elif kind == "comparison":
            head, sep, tail = text.partition(f" {COMPARISON_CUE} ")
            assert sep and tail in (YES, NO), text
            qa, qb, written = (head + " ").split("? ", 2)
            a, b = by_question[qa + "?"], by_question[qb + "?"]
            if not written:  # no recall: a key with too many values
                assert not reasoned(len(values[a]), len(values[b]))
                continue
            recall = f"{rd.recall(a[1], a[0], values[a])} {rd.recall(b[1], b[0], values[b])}"
            assert written.strip() == recall, text
            assert (tail == YES) == (values[a] == values[b]), text
            seen["comparison"] += 1
    assert seen["truefalse"] > 1000 and seen["comparison"] > 500 and seen["plain"] > 0, seen


def test_paraphrases_held_out_per_fact_and_unseen_templates_never_trained(generated):
    corpus, probes, requests = generated
    text = "\n".join(corpus)
    spec = load_spec(BIOLOGY)
    asked = {
        (p["type"], p["prompt"], p["answer_before"], p["relation"])
        for ps in probes.values()
        for p in ps
        if p["type"] in ("paraphrase", "paraphrase_unseen")
    }
    assert {t for t, *_ in asked} == {"paraphrase", "paraphrase_unseen"}
    for type_, prompt, answer, relation in asked:
        assert f"{prompt} {answer}" not in text, prompt  # never stated for this fact
        if type_ == "paraphrase_unseen":
            template = spec.templates(relation).paraphrase[-1]
            words = max((x.strip() for x in template.split("{subject}")), key=len)
            assert words not in text, template  # no line of any fact uses the template
    paras = {prompt for _, prompt, _, _ in asked}
    for reqs in requests.values():
        for r in reqs:
            assert not paras & set(r["plus_prompts"]) and not paras & set(r["minus_prompts"])


def test_in_context_lines_follow_the_ice_format(generated):
    corpus, _, _ = generated
    ctx = [line for line in corpus if line.startswith("New Fact: ")]
    assert len(ctx) > 100
    follows = 0
    for line in ctx:
        head, _, tail = line.partition("\nPrompt: ")
        assert tail, line
        new_value = head.rsplit(" ", 1)[1]
        follows += tail.endswith(" " + new_value)
    assert 0.6 < follows / len(ctx) < 0.9  # most follow the context, some must ignore it


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
