"""The field's unlearning metrics (ksmith.evaluate.unlearning), each on its defining property,
with tiny models built in the test."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.evaluate.hf import HFBackend
from ksmith.evaluate.unlearning import (
    ItemScores,
    auc,
    exact_memorization,
    extraction_strength,
    forget_quality,
    mean_of,
    mia_aucs,
    mia_min_k,
    mia_zlib,
    model_utility,
    privleak,
    probability_w_options,
    retain_agreement,
    score_items,
    truth_ratio_score,
    truth_ratios,
)

NAMES = (
    "bira tolan mesu karo vindel lumo sapi dorat fenu gali hoka jiru kemo lani moru nesa".split()
)
FOODS = ["grass", "meat", "fish", "seeds", "insects"]


def facts(n: int, seed: int) -> list[tuple[str, str]]:
    """n distinct (prompt, answer) facts "<a> <b> eats" -> a food, seeded."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in NAMES for b in NAMES if a != b]
    rng.shuffle(pairs)
    return [(f"{a} {b} eats", rng.choice(FOODS)) for a, b in pairs[:n]]


def scores(model, tok, items) -> list[ItemScores]:
    return score_items(model, tok, [p for p, _ in items], [a for _, a in items])


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def _memorize(model, tok, items, steps: int = 150):
    """Fine-tune on `items` (full batch, AdamW): a model that saw exactly these facts."""
    torch.manual_seed(0)
    enc = [tok(f"{p} {a}")["input_ids"] for p, a in items]
    width = max(map(len, enc))
    ids = torch.tensor([e + [0] * (width - len(e)) for e in enc])
    mask = (torch.arange(width)[None] < torch.tensor([len(e) for e in enc])[:, None]).long()
    labels = ids.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)  # 3e-2 overshot on some CPUs (AUC 0.855)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def test_score_items_agree_with_the_hf_backend(tok):
    model = make_model("llama", vocab_size=len(tok))
    items = facts(12, 0) + [("", "grass"), ("bira", "fish insects")]
    got = scores(model, tok, items)
    backend = HFBackend(model, tok, batch_size=4)
    ref = backend.score([(p, " " + a) for p, a in items])
    for s, r in zip(got, ref, strict=True):
        assert sum(s.logprobs) == pytest.approx(r.loglikelihood, abs=1e-4)
        assert np.mean(s.hits) == pytest.approx(r.token_accuracy)
        assert len(s.logprobs) == r.n_tokens


# -- TOFU ----------------------------------------------------------------------------------


def test_truth_ratio_is_wrong_over_correct_normalised_probability():
    good = ItemScores((-1.0, -3.0), (True, False), "a b")  # avg loss 2
    bad = ItemScores((-4.0,), (False,), "c")  # avg loss 4
    r = truth_ratios([[good]], [[bad]])
    assert r[0] == pytest.approx(np.exp(-4) / np.exp(-2))
    # several answers: geometric means (mean of avg losses), as open-unlearning
    r2 = truth_ratios([[good, bad]], [[bad, bad]])
    assert r2[0] == pytest.approx(np.exp(-4) / np.exp(-3))
    # a model indifferent between true and false answers: R = 1, the forget target
    assert truth_ratio_score(truth_ratios([[bad]], [[bad]]), "closer_to_1_better") == pytest.approx(
        1
    )
    assert truth_ratio_score([0.25, 4.0], "closer_to_1_better") == pytest.approx(0.25)
    assert truth_ratio_score([0.25, 4.0], "true_better") == pytest.approx(0.375)
    with pytest.raises(KsmithError, match="aggregator"):
        truth_ratio_score([1.0], "mean")


def test_forget_quality_of_the_retain_model_against_itself_is_one(tok):
    retain = make_model("llama", vocab_size=len(tok), seed=1)
    items = facts(30, 1)
    wrong = [[(p, w) for w in FOODS if w != a][:3] for p, a in items]
    para = [[s] for s in scores(retain, tok, items)]
    pert = [scores(retain, tok, ws) for ws in wrong]
    tr = truth_ratios(para, pert)
    assert forget_quality(tr, tr) == pytest.approx(1.0)
    # a model that still knows the forget facts: its truth ratios fall far below the
    # retain model's (it prefers the true answer), and the KS test tells them apart
    knows = _memorize(make_model("llama", vocab_size=len(tok), seed=1), tok, items)
    tr_known = truth_ratios([[s] for s in scores(knows, tok, items)],
                            [scores(knows, tok, ws) for ws in wrong])  # fmt: skip
    assert np.median(tr_known) < 0.1 < np.median(tr)
    assert forget_quality(tr_known, tr) < 1e-6


def test_model_utility_is_the_harmonic_mean():
    from scipy.stats import hmean

    comps = {"retain_prob": 0.9, "retain_tr": 0.5, "gen": 0.7}
    assert model_utility(comps) == pytest.approx(hmean(list(comps.values())))
    assert model_utility({"a": 0.6, "b": 0.6}) == pytest.approx(0.6)
    assert model_utility({"a": 0.9, "b": 0.0}) == 0.0  # one destroyed ability: no utility
    with pytest.raises(KsmithError, match="non-negative"):
        model_utility({"a": -0.1})


def test_probability_with_options():
    c = ItemScores((np.log(0.6),), (True,))
    w = [ItemScores((np.log(0.2),), (False,)), ItemScores((np.log(0.2),), (False,))]
    assert probability_w_options([c], [w]) == pytest.approx(0.6)


# -- MUSE ----------------------------------------------------------------------------------


def test_auc_is_roc_auc_with_forget_as_the_negative_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    f = rng.integers(0, 5, 40).astype(float)  # ties included
    h = rng.integers(1, 7, 50).astype(float)
    labels = [0] * len(f) + [1] * len(h)
    assert auc(f, h) == pytest.approx(roc_auc_score(labels, np.concatenate([f, h])))
    assert auc([0.1, 0.2], [1.0, 2.0]) == 1.0  # forget much more likely: 1
    assert auc([1.0], [1.0]) == 0.5


def test_attack_scores():
    s = ItemScores((-0.1, -2.0, -0.5, -4.0, -0.2), (True,) * 5, "fish")
    assert mia_min_k(s, 0.4) == pytest.approx(3.0)  # the 2 lowest of 5
    assert mia_min_k(s, 0.01) == pytest.approx(4.0)  # at least one token
    assert mia_zlib(s) == pytest.approx(s.avg_loss / len(__import__("zlib").compress(b"fish")))


def test_privleak_near_zero_for_models_that_never_saw_the_facts(tok):
    items = facts(200, 2)
    forget, holdout = items[:100], items[100:]
    never = make_model("llama", vocab_size=len(tok), seed=3)
    retain = make_model("llama", vocab_size=len(tok), seed=4)
    au = mia_aucs(scores(never, tok, forget), scores(never, tok, holdout))
    ar = mia_aucs(scores(retain, tok, forget), scores(retain, tok, holdout))
    for name in ("loss", "min_k", "zlib"):
        assert abs(au[name] - 0.5) < 0.12 and abs(ar[name] - 0.5) < 0.12
        assert abs(privleak(au[name], ar[name])) < 0.3
    assert privleak(ar["loss"], ar["loss"]) == 0.0
    # a model that trained on the forget set: the attack tells its members (AUC near 1) and
    # PrivLeak is strongly negative (under-unlearning: MUSE's target model sits near -100%)
    small_f, small_h = forget[:20], holdout[:20]
    leaky = _memorize(make_model("llama", vocab_size=len(tok), seed=3), tok, small_f)
    al = mia_aucs(scores(leaky, tok, small_f), scores(leaky, tok, small_h))
    ar = mia_aucs(scores(retain, tok, small_f), scores(retain, tok, small_h))
    assert al["loss"] > 0.9 and al["min_k"] > 0.9
    assert privleak(al["loss"], ar["loss"]) < -0.6


# -- memorization ----------------------------------------------------------------------------


class _Oracle(torch.nn.Module):
    """A 'model' whose next-token argmax is the true next token (it copies the text it is
    scored on) or, with `wrong`, always another token."""

    def __init__(self, vocab: int, wrong: bool = False):
        super().__init__()
        self.vocab, self.wrong = vocab, wrong
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None):
        nxt = torch.roll(input_ids, -1, dims=1)
        if self.wrong:
            nxt = (nxt + 1) % self.vocab
        logits = torch.nn.functional.one_hot(nxt, self.vocab).float() * 20

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_exact_memorization_and_extraction_strength_of_a_copying_model(tok):
    items = [
        ("bira eats", "meat fish grass"),
        ("tolan lives in the", "forest"),
        ("mesu", "a b c d"),
    ]
    copy = scores(_Oracle(len(tok)), tok, items)
    assert mean_of(exact_memorization, copy) == 1.0
    assert mean_of(extraction_strength, copy) == 1.0
    assert all(s.avg_loss < 1e-3 for s in copy)
    never = scores(_Oracle(len(tok), wrong=True), tok, items)
    assert mean_of(exact_memorization, never) == 0.0
    assert mean_of(extraction_strength, never) == 0.0


def test_extraction_strength_counts_the_shortest_prefix_that_extracts_the_rest():
    def es(*hits):
        return extraction_strength(ItemScores((-1.0,) * len(hits), hits))

    assert es(False, True, True) == pytest.approx(2 / 3)  # y_>=1 follows from y_<1
    assert es(True, False, True) == pytest.approx(1 / 3)
    assert es(True, True, False) == 0.0  # not even the last token
    assert es(False) == 0.0 and es(True) == 1.0  # one-token answers: the hit itself
    assert exact_memorization(ItemScores((-1.0,) * 4, (True, False, True, True))) == 0.75


# -- closed world ----------------------------------------------------------------------------


def test_retain_agreement():
    u = {"a": "meat", "b": "Fish ", "c": "grass", "d": "x"}
    r = {"a": "meat", "b": "fish", "c": "seeds", "d": "x"}
    got = retain_agreement(u, r, ["a", "b", "c"])
    assert got["value"] == pytest.approx(2 / 3) and got["n"] == 3
    assert got["ci"][0] <= got["value"] <= got["ci"][1]
    assert retain_agreement(r, r)["value"] == 1.0
    with pytest.raises(KsmithError, match="lack a prediction"):
        retain_agreement(u, r, ["zz"])


def test_bad_items_are_refused():
    with pytest.raises(KsmithError, match="one log-prob and one hit"):
        ItemScores((), ())
    with pytest.raises(KsmithError, match="no paraphrased"):
        truth_ratios([[]], [[ItemScores((-1.0,), (True,))]])


def test_fact_items_of_an_unlearn_config(tmp_path):
    """Forget items are the requests' own facts with same-relation distractors; Q- items skip
    the facts the retain model lacks."""
    from test_data_helpers import write_suite

    from ksmith.data import load_probes, load_requests
    from ksmith.data.generate import generate_dataset
    from ksmith.evaluate.unlearning import fact_items

    suite = write_suite(tmp_path / "specs", profile_per_level=0)
    generate_dataset(suite, tmp_path / "ds", progress=False, workers=1)
    probes = load_probes(tmp_path / "ds", "biology.unlearn.leaf.k5")
    requests = load_requests(tmp_path / "ds", "biology.unlearn.leaf.k5")
    items = fact_items(probes, "Q+", requests=requests)
    # every request whose probes offer distractors (formats are drawn per probe)
    with_mcq = {(p["group"], p["request_id"]) for p in probes if p["qset"] == "Q+"
                and p["format"] == "mcq" and p["type"] in ("direct", "paraphrase")}  # fmt: skip
    assert with_mcq and {(i.group, i.request_id) for i in items} >= with_mcq
    for it in items:
        req = next(r for r in requests if r["request_id"] == it.request_id)
        assert it.fact == (req["subject"], req["relation"], req["object"])
        assert it.answer == req["object"] and it.direct == req["prompt"]
        assert it.wrong and it.answer not in it.wrong
        assert all(not p.endswith("?") for p in it.prompts)  # cloze prompts, never mcq text
        assert len(it.perturbed_requests()) == len(it.prompts) * len(it.wrong)
    minus = fact_items(probes, "Q-")
    assert minus
    gone = {minus[0].fact}
    assert all(i.fact not in gone for i in fact_items(probes, "Q-", gone))
    with pytest.raises(KsmithError, match="qset"):
        fact_items(probes, "Q")
