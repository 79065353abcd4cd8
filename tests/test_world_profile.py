"""The capability profile: measured on the dataset's profile configs, scored as evaluation
scores, reduced to one number per ability, compared with thresholds."""

from __future__ import annotations

import pytest
from test_data_helpers import write_suite

from ksmith.evaluate.backend import Backend
from ksmith.render.text import CUES, IN_CONTEXT
from ksmith.world.profile import (
    PROFILE_TYPES,
    capability_profile,
    in_context_prefixes,
    load_profile_set,
    shortfalls,
    summary,
)

RECALL = " (the recall)"  # what this fake writes before a reasoned probe's cue
CONTEXT_HEAD = IN_CONTEXT.split("{facts}")[0]  # "New Fact: "
CONTEXT_TAIL = IN_CONTEXT.split("{facts}")[1]  # "\nPrompt: "


class WorldBackend(Backend):
    """Knows every (prompt, answer_before) of the world; with `follows_context`, a prompt
    stating a new fact in-context answers that fact's value; generation repeats a fixed text
    (`fluent=False`) or a corpus description."""

    def __init__(self, probes, *, follows_context=True, fluent=True, descriptions=()):
        self.known = {(p["prompt"], " " + p["answer_before"]) for p in probes}
        self.answer = {p["prompt"]: p["answer_before"] for p in probes}
        self.follows_context = follows_context
        self.fluent = fluent
        self.descriptions = list(descriptions)

    def _split(self, ctx: str) -> tuple[str | None, str]:
        ctx = ctx.split(RECALL)[0]  # a reasoned probe: its prompt, then the recall and the cue
        if ctx.startswith(CONTEXT_HEAD) and CONTEXT_TAIL in ctx:
            head, prompt = ctx[len(CONTEXT_HEAD) :].split(CONTEXT_TAIL, 1)
            return head.rsplit(" ", 1)[1], prompt
        return None, ctx

    def _right(self, ctx: str, cont: str) -> bool:
        new, prompt = self._split(ctx)
        if new is not None and self.follows_context:
            return cont == " " + new
        return (prompt, cont) in self.known

    def loglikelihood(self, requests):
        return [-1.0 if self._right(c, a) else -5.0 for c, a in requests]

    def token_accuracy(self, requests):
        return [1.0 if self._right(c, a) else 0.0 for c, a in requests]

    def generate(self, prompts, max_new_tokens, stop=("\n",)):
        out = []
        for i, ctx in enumerate(prompts):
            if not stop:  # fluency: a continuation of max_new_tokens words
                text = self.descriptions[i % len(self.descriptions)] if self.fluent else "a a"
                out.append(" " + " ".join((text.split() * 8)[:max_new_tokens]))
                continue
            if any(c in stop for c in CUES.values()):  # a reasoned probe's recall
                out.append(RECALL)
                continue
            new, prompt = self._split(ctx)
            ans = new if new is not None and self.follows_context else self.answer.get(prompt)
            out.append(" " + (ans or "?"))
        return out


@pytest.fixture(scope="module")
def profile_set(tmp_path_factory):
    from ksmith.data.generate import generate_dataset

    root = tmp_path_factory.mktemp("prof")
    generate_dataset(write_suite(root / "specs", profile_per_level=20), root / "ds", progress=False)
    return load_profile_set(root / "ds")


def test_profile_configs_cover_every_probe_type_and_format(profile_set):
    probes, requests, descriptions = profile_set
    assert {p["type"] for p in probes} == set(PROFILE_TYPES)
    assert {p["format"] for p in probes} == {"cloze", "mcq", "qa"}
    assert len({p["id"] for p in probes}) == len(probes)  # ids namespaced per config
    assert len(descriptions) > 10
    prefixes = in_context_prefixes(requests)
    assert len(prefixes) == len(requests)
    some = next(iter(prefixes.values()))
    assert some.startswith(CONTEXT_HEAD) and some.endswith(CONTEXT_TAIL)


def test_a_model_that_knows_the_world_and_follows_context_profiles_at_one(profile_set):
    probes, requests, descriptions = profile_set
    backend = WorldBackend(probes, descriptions=descriptions)
    prof = capability_profile(backend, probes, requests, descriptions, fluency_prompts=16)
    for t in PROFILE_TYPES:
        for mode, acc in prof["accuracy"][t].items():
            assert acc >= 0.97, (t, mode, acc)
    assert any(k.startswith("multi_hop.h") for k in prof["accuracy"])
    assert prof["in_context"]["cloze"] == prof["in_context"]["mcq"] == 1.0
    assert prof["in_context_n"]["cloze"] > 0
    assert prof["fluency"]["ratio"] == pytest.approx(1.0, abs=0.1)
    got = summary(prof)
    assert got["in_context"] == 1.0 and got["direct"] >= 0.97
    assert shortfalls(got, {"direct": 0.9, "in_context": 0.8, "fluency": 0.9}) == []


def test_ignoring_the_context_and_repeating_itself_fall_short(profile_set):
    probes, requests, descriptions = profile_set
    backend = WorldBackend(probes, follows_context=False, fluent=False, descriptions=descriptions)
    prof = capability_profile(backend, probes, requests, descriptions, fluency_prompts=16)
    assert prof["in_context"]["cloze"] == 0.0  # answers the world, not the context
    assert prof["fluency"]["ratio"] < 0.5
    short = shortfalls(summary(prof), {"direct": 0.9, "in_context": 0.8, "fluency": 0.9})
    assert [s.split()[0] for s in short] == ["in_context", "fluency"]
    assert shortfalls({"direct": None}, {"direct": 0.9}) == []  # unmeasured is no shortfall
