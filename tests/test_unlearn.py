"""Unlearning methods (ksmith.methods.unlearn), each on its defining property.

The fixture is a 2-layer llama that memorises 24 facts in a few seconds (seeded); every test
works on a deep copy of it.
"""

from __future__ import annotations

import copy
import math
import random
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.methods import METHODS
from ksmith.methods.base import Request, TextPair, UpdateProblem
from ksmith.methods.train_utils import answer_logprobs, encode_pairs, pairs_text
from ksmith.methods.unlearn import (
    NPO,
    RMU,
    GradientAscent,
    IdKFineTune,
    SimNPO,
    alternatives,
    layer_output,
    npo_loss,
    simnpo_loss,
)
from ksmith.methods.unlearn.common import encode, select

SUBJECTS = "bira tolan mesu karo vindel lumo sapi dorat fenu gali hoka jiru".split()
RELATIONS = {
    "lives": (("{s} lives in", "where does {s} live ?"), "forest desert ocean river mountain"),
    "eats": (("{s} eats", "what does {s} eat ?"), "meat grass fish seeds insects"),
}
FORGET = (0, 5, 9)  # indices of the facts to unlearn
FAST = {"steps": 20, "lr": 3e-3}  # small budgets: the tests check directions, not convergence
IDK = ("i don't know", "no answer")
UNLEARN = ("ga", "graddiff", "npo", "simnpo", "rmu", "idk", "relearn")


def _facts() -> list[tuple[str, str, str]]:
    rng = random.Random(0)
    return [(s, r, rng.choice(v.split())) for s in SUBJECTS for r, (_, v) in RELATIONS.items()]


def _pairs(fact: tuple[str, str, str], rid: str = "") -> list[TextPair]:
    s, r, o = fact
    return [TextPair(t.format(s=s), o, rid) for t in RELATIONS[r][0]]


def _problem(facts, forget=FORGET, **kw) -> UpdateProblem:
    requests, plus, minus = [], [], []
    for i in forget:
        s, r, o = facts[i]
        ps = _pairs(facts[i], f"r{i}")
        requests.append(Request(f"r{i}", s, r, ps[0].prompt, o, None))
        plus += ps
    for j, f in enumerate(facts):
        if j not in forget:
            minus += _pairs(f, "")
    return UpdateProblem(
        kind="unlearn",
        requests=tuple(requests),
        plus=tuple(plus),
        minus=tuple(minus),
        target=kw.pop("target", "neutral"),
        idk_answers=IDK,
        **kw,
    )


@pytest.fixture(scope="module")
def world():
    """(model, tokenizer, facts): a 2-layer llama that knows all 24 facts, trained here."""
    tok = make_tokenizer()
    model = make_model("llama", seed=0, hidden=64)
    facts = _facts()
    prompts, answers = pairs_text(p for f in facts for p in _pairs(f))
    batch = encode_pairs(tok, prompts, answers)
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = -answer_logprobs(model, batch, reduction="mean").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert _greedy_ok(model, tok, [p for f in facts for p in _pairs(f)]).all()
    return model, tok, facts


def _logp(model, tok, pairs) -> torch.Tensor:
    prompts, answers = pairs_text(pairs)
    with torch.no_grad():
        return answer_logprobs(model, encode_pairs(tok, prompts, answers), reduction="sum")


def _retain_nll(model, tok, problem) -> float:
    prompts, answers = pairs_text(problem.minus)
    with torch.no_grad():
        b = encode_pairs(tok, prompts, answers)
        return float(-answer_logprobs(model, b, reduction="mean").mean())


def _greedy_ok(model, tok, pairs) -> torch.Tensor:
    """(N,) bool: the first answer token is the greedy continuation of the prompt."""
    prompts, answers = pairs_text(pairs)
    b = encode_pairs(tok, prompts, answers)
    with torch.no_grad():
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
    rows = torch.arange(len(pairs))
    pred = logits[rows, b.prompt_lengths - 1].argmax(-1)
    return pred == b.input_ids[rows, b.prompt_lengths]


def _run(world, name, problem=None, **params):
    model, tok, facts = world
    m = copy.deepcopy(model)
    problem = problem or _problem(facts)
    method = METHODS.get(name)(METHODS.get(name).Params(**params))
    result = method.apply(m, tok, problem)
    return m, method, result, problem


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- registry ---------------------------------------------------------------------------------
def test_all_unlearning_methods_registered():
    assert set(UNLEARN) <= set(METHODS.names())
    for name in UNLEARN:
        cls = METHODS.get(name)
        assert cls.kind == "unlearn" and "arXiv" in cls.paper
    assert IdKFineTune().target_kind() == "idk" and NPO().target_kind() == "neutral"


@pytest.mark.parametrize("name", UNLEARN)
def test_yaml_defaults_are_complete_and_valid(name):
    import yaml

    from ksmith.methods.params import resolve_params

    specs = Path(__file__).resolve().parents[1] / "specs"
    cls = METHODS.get(name)
    data = yaml.safe_load((specs / "methods" / f"{name}.yaml").read_text())
    assert data["version"] == 1
    assert set(data["params"]) == set(cls.Params.model_fields)  # every knob stated
    for model_type in ("llama", "gpt2"):
        params = resolve_params(cls, model_type=model_type, specs_dir=specs)
        assert params.model_dump() == cls.Params(**data["params"]).model_dump()


def test_edit_problem_is_rejected(world):
    model, tok, facts = world
    edit = UpdateProblem(
        kind="edit", requests=(Request("r", "bira", "eats", "bira eats", "x", "y"),)
    )
    with pytest.raises(KsmithError, match="unlearn"):
        GradientAscent().apply(copy.deepcopy(model), tok, edit)


# ---- GA / GradDiff / NPO / SimNPO: the forget likelihood goes down ---------------------------
@pytest.mark.parametrize("name", ["ga", "graddiff", "npo", "simnpo"])
def test_forget_likelihood_decreases(world, name):
    model, tok, facts = world
    m, _, result, problem = _run(world, name, **FAST)
    before, after = _logp(model, tok, problem.plus), _logp(m, tok, problem.plus)
    assert (after < before).all(), (before, after)
    assert all(math.isfinite(x) for x in result.log["loss"])


# ---- NPO: closed form at init and GA gradient reweighted by W --------------------------------
def test_npo_loss_at_init_is_2_over_beta_log_2(world):
    model, tok, facts = world
    problem = _problem(facts)
    for beta in (0.1, 1.0, 3.0):
        npo = NPO(NPO.Params(beta=beta))
        forget = encode(tok, list(problem.plus), torch.device("cpu"))
        with torch.no_grad():
            npo.prepare(model, forget, None, torch.Generator())
            idx = torch.arange(len(forget))
            loss = npo.forget_loss(model, select(forget, idx), idx)
        assert float(loss) == pytest.approx(2.0 / beta * math.log(2.0), rel=1e-5)


def test_npo_gradient_is_ga_gradient_times_weight(world):
    model, tok, facts = world
    pair = [_problem(facts).plus[0]]
    beta = 0.5
    logp_ref = _logp(model, tok, pair)  # (1,)
    m = _run(world, "ga", steps=3, lr=3e-3)[0]  # theta moved away from theta_ref: W != 1
    prompts, answers = pairs_text(pair)
    batch = encode_pairs(tok, prompts, answers)
    params = list(m.parameters())

    logp = answer_logprobs(m, batch)  # (1,) log pi_theta
    g_npo = torch.autograd.grad(npo_loss(logp, logp_ref, beta), params)
    logp = answer_logprobs(m, batch)
    g_ga = torch.autograd.grad(logp.sum(), params)  # gradient of L_GA = log pi_theta
    pi_b, ref_b = torch.exp(beta * logp.detach()), torch.exp(beta * logp_ref)
    weight = float((2 * pi_b / (pi_b + ref_b))[0])
    assert weight < 0.9
    for a, b in zip(g_npo, g_ga, strict=True):
        scale = float(b.abs().max()) + 1e-12  # float32 sums: compare relative to the tensor
        torch.testing.assert_close(a / scale, weight * b / scale, rtol=1e-3, atol=1e-5)


# ---- SimNPO: its formula, length-normalised -------------------------------------------------
def test_simnpo_matches_formula_and_is_length_normalised(world):
    model, tok, facts = world
    beta, gamma = 2.0, 0.3
    logp = torch.tensor([-1.0, -4.0])
    n = torch.tensor([1.0, 4.0])
    expected = -(2 / beta) * torch.log(torch.sigmoid(-(beta / n) * logp - gamma)).mean()
    assert float(simnpo_loss(logp, n, beta, gamma)) == pytest.approx(float(expected))
    # Same per-token log-prob, different lengths: the same loss for each example.
    one = simnpo_loss(logp[:1], n[:1], beta, gamma)
    four = simnpo_loss(logp[1:], n[1:], beta, gamma)
    assert float(one) == pytest.approx(float(four))
    # On the model: the method's loss is the formula on log pi(y|x) and |y| (multi-token y).
    pairs = [TextPair("bira eats", "i don't know"), TextPair("tolan eats", "fish")]
    batch = encode(tok, pairs, torch.device("cpu"))
    method = SimNPO(SimNPO.Params(beta=beta, gamma=gamma))
    idx = torch.arange(2)
    with torch.no_grad():
        got = method.forget_loss(model, batch, idx)
        lp = answer_logprobs(model, batch)
    lengths = torch.tensor([3.0, 1.0])
    want = (-(2 / beta) * torch.nn.functional.logsigmoid(-(beta / lengths) * lp - gamma)).mean()
    assert float(got) == pytest.approx(float(want), rel=1e-5)


# ---- RMU: activations steered to c*u, only declared layers move ------------------------------
def test_rmu_steers_forget_activations_and_touches_only_declared_layers(world):
    model, tok, facts = world
    problem = _problem(facts)
    before = _state(model)
    m, method, _, _ = _run(
        world, "rmu", problem, layer=1, update_layers=(1,), steps=20, lr=1e-2, steering_coeff=8
    )
    forget = encode(tok, list(problem.plus), torch.device("cpu"))
    mask = forget.attention_mask.bool()

    def cos_u(mod):
        with torch.no_grad():
            h = layer_output(mod, forget, 1, grad=False)[mask]  # (n, d)
        return float(torch.nn.functional.cosine_similarity(h, method.u[None], dim=-1).mean())

    assert cos_u(m) > cos_u(model) + 0.1
    after = _state(m)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"model.layers.1.mlp.down_proj.weight"}


def test_rmu_default_layers_are_l_minus_2_to_l():
    model = make_model("gpt2", layers=4)
    rmu = RMU(RMU.Params(layer=-1))
    assert rmu.update_layers(model) == [1, 2, 3]
    assert [n for n, _ in rmu.trainable(model)] == [
        f"transformer.h.{i}.mlp.c_proj.weight" for i in (1, 2, 3)
    ]
    with pytest.raises(KsmithError, match="out of range"):
        RMU(RMU.Params(layer=7)).update_layers(model)


# ---- IdK and ReLearn: learn a replacement -----------------------------------------------------
def test_idk_raises_the_idk_likelihood(world):
    model, tok, facts = world
    problem = _problem(facts)
    m, method, _, _ = _run(world, "idk", problem, **FAST)
    targets = method.forget_pairs(problem)
    assert {t.answer for t in targets} <= set(IDK)
    assert [t.prompt for t in targets] == [p.prompt for p in problem.plus]
    assert (_logp(m, tok, targets) > _logp(model, tok, targets)).all()


def test_relearn_never_targets_the_old_answer(world):
    model, tok, facts = world
    problem = _problem(facts)
    alts = alternatives(problem, per_prompt=3)
    old = {r.request_id: r.old_object for r in problem.requests}
    assert len(alts) == 3 * len(problem.plus)
    for pair in alts:
        assert pair.answer != old[pair.request_id]
        # same template, other subject -> same relation: the alternative is in its range
        relation = next(r.relation for r in problem.requests if r.request_id == pair.request_id)
        assert pair.answer in RELATIONS[relation][1].split()
    m, method, _, _ = _run(world, "relearn", problem, **FAST)
    assert not _greedy_ok(m, tok, list(problem.plus)).any()


def test_relearn_without_a_candidate_fails_clearly(world):
    model, tok, facts = world
    lone = UpdateProblem(
        kind="unlearn",
        requests=(Request("r0", "bira", "eats", "bira eats", "fish", None),),
        plus=(TextPair("bira eats", "fish", "r0"),),
    )
    with pytest.raises(KsmithError, match="no alternative"):
        alternatives(lone)


# ---- the retain term --------------------------------------------------------------------------
RETAIN_TOL = 0.5  # nats per answer token: how far the retain NLL may rise with the retain term


@pytest.mark.parametrize(
    ("name", "extra"),
    [("graddiff", {"alpha": 5.0}), ("npo", {}), ("simnpo", {}), ("idk", {}), ("relearn", {})],
)
def test_retain_term_keeps_retain_loss(world, name, extra):
    model, tok, facts = world
    problem = _problem(facts)
    before = _retain_nll(model, tok, problem)
    with_rt = _retain_nll(_run(world, name, problem, **FAST, **extra)[0], tok, problem)
    no_rt = {**FAST, **extra, "alpha": 0.0}
    without = _retain_nll(_run(world, name, problem, **no_rt)[0], tok, problem)
    assert with_rt <= before + RETAIN_TOL
    assert with_rt < without


def test_relearn_kl_term_runs_and_is_logged(world):
    _, _, result, _ = _run(world, "relearn", kl_weight=1.0, steps=5)
    assert len(result.log["regularizer"]) == 5
    assert all(x >= -1e-6 for x in result.log["regularizer"])  # a KL divergence


# ---- determinism and sequential mode --------------------------------------------------------
@pytest.mark.parametrize("name", UNLEARN)
def test_same_seed_same_weights(world, name):
    params = {"steps": 6, "batch_size": 2}
    a = _state(_run(world, name, **params)[0])
    b = _state(_run(world, name, **params)[0])
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seed_changes_the_sampled_batches(world):
    model, tok, facts = world
    params = {"steps": 4, "batch_size": 2}
    a = _state(_run(world, "ga", _problem(facts, seed=0), **params)[0])
    b = _state(_run(world, "ga", _problem(facts, seed=1), **params)[0])
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_sequential_mode_applies_requests_in_order(world):
    model, tok, facts = world
    params = NPO.Params(steps=5, lr=3e-3)
    problem = _problem(facts, mode="sequential")
    seq = copy.deepcopy(model)
    result = NPO(params).apply(seq, tok, problem)
    assert sorted(result.log) == [f"step{i}" for i in range(len(FORGET))]
    manual = copy.deepcopy(model)
    method = NPO(params)
    for sub in problem.subproblems():
        assert len(sub.requests) == 1 and len(sub.plus) == 2
        method.apply_batch(manual, tok, sub)
    a, b = _state(seq), _state(manual)
    assert all(torch.equal(a[k], b[k]) for k in a)
    batch = copy.deepcopy(model)
    NPO(params).apply(batch, tok, _problem(facts))
    assert any(not torch.equal(a[k], v) for k, v in _state(batch).items())


def test_requires_grad_and_mode_restored(world):
    model, tok, facts = world
    m = copy.deepcopy(model)
    m.model.embed_tokens.weight.requires_grad_(False)
    m.train()
    RMU(RMU.Params(steps=2, layer=1)).apply(m, tok, _problem(facts))
    assert m.training
    assert not m.model.embed_tokens.weight.requires_grad
    assert all(q.grad is None for q in m.parameters())
    assert all(q.requires_grad for n, q in m.named_parameters() if "embed" not in n)


@pytest.mark.parametrize("name", UNLEARN)
def test_runs_on_gpt2(name):
    """The same code path on GPT-2 (Conv1D weights, other module paths), untrained, 2 steps."""
    tok = make_tokenizer()
    model = make_model("gpt2", seed=0)
    before = _state(model)
    params = METHODS.get(name).Params(steps=2, lr=1e-2)
    result = METHODS.get(name)(params).apply(model, tok, _problem(_facts()))
    after = _state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(math.isfinite(x) for x in result.log["loss"])
