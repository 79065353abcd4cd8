"""End-to-end: ROME, MEMIT and AlphaEdit make a tiny trained model say the new object.

A 2-layer model memorises ~36 facts in a few seconds (trained here); each editor then rewrites
k = 1..5 of them (ROME: one at a time). On a 2-layer model the subject's own token has little leverage on the
prediction (the first attention moves the subject to the last token), so these runs use the
``fact_token: last`` lookup and no sampled prefixes, as the world-model defaults do.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.methods.alphaedit import AlphaEdit
from ksmith.methods.base import Request, UpdateProblem
from ksmith.methods.memit import MEMIT
from ksmith.methods.rome import ROME

pytestmark = pytest.mark.slow

NAMES = (
    "bira tolan mesu karo vindel lumo sapi dorat fenu gali hoka jiru kemo lani moru nesa".split()
)
FOODS = "meat grass fish seeds insects".split()
PLACES = "forest desert ocean river mountain".split()


def _facts():
    rng = random.Random(0)
    out = []
    for n in NAMES:
        out.append((n, "eats", f"{n} eats", rng.choice(FOODS), FOODS))
        out.append((n, "lives in", f"{n} lives in", rng.choice(PLACES), PLACES))
    return out


FACTS = _facts()
CORPUS = [f"{p} {o} ." for _, _, p, o, _ in FACTS]
PRESERVED = CORPUS[10:]  # statistics corpus: facts that are never edited here


def _greedy(model, tok, prompt: str) -> str:
    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        return tok.decode([int(model(input_ids=ids).logits[0, -1].argmax())])


def _train(arch: str):
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok), seed=0, layers=2, hidden=64)
    enc = [tok(t)["input_ids"] for t in CORPUS]
    ids = torch.zeros(len(enc), max(map(len, enc)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(400):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 19:
            model.eval()
            if all(_greedy(model, tok, p) == o for _, _, p, o, _ in FACTS):
                break
            model.train()
    model.eval()
    assert all(_greedy(model, tok, p) == o for _, _, p, o, _ in FACTS), "training failed"
    return model, tok


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    model, tok = _train("llama")
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    corpus.write_text("\n".join(PRESERVED))
    return model, tok, str(corpus)


def _problem(facts, mode: str = "batch") -> UpdateProblem:
    reqs = []
    for i, (subj, rel, prompt, old, rng) in enumerate(facts):
        reqs.append(Request(f"r{i}", subj, rel, prompt, old, rng[(rng.index(old) + 1) % len(rng)]))
    return UpdateProblem(kind="edit", requests=tuple(reqs), mode=mode)


def _hits(model, tok, problem):
    return [_greedy(model, tok, r.prompt) == r.new_object for r in problem.requests]


@pytest.mark.parametrize("cls", [MEMIT, AlphaEdit], ids=["memit", "alphaedit"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_batch_edit_reaches_new_objects(trained, cls, k, tmp_path, monkeypatch):
    """Default (world-model) parameters; k requests in one batch."""
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    model, tok, corpus = trained
    edited = copy.deepcopy(model)
    problem = _problem(FACTS[:k])
    cls(cls.Params(mom2_corpus_path=corpus)).apply(edited, tok, problem)
    assert all(_hits(edited, tok, problem))


def test_rome_single_edits_reach_new_object(trained, tmp_path, monkeypatch):
    """ROME writes one fact at a time: of five facts, each edited alone, at least four are
    rewritten (measured: the v* search does not converge for one of them on this tiny model)."""
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    model, tok, corpus = trained
    method = ROME(ROME.Params(mom2_corpus_path=corpus))
    hits = []
    for fact in FACTS[:5]:
        edited = copy.deepcopy(model)
        problem = _problem([fact])
        method.apply(edited, tok, problem)
        hits += _hits(edited, tok, problem)
    assert sum(hits) >= 4, hits
