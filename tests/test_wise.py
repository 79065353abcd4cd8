"""WISE (arXiv 2405.14768): routing between the main and the side memory by activation score.

Defining property: a token whose Δ_act = ‖τa‖ is below ε gets exactly the main memory's output
(the unedited model), a token at or above ε the side memory's; an edit's own tokens route to
the side memory; shards write only their masked entries and merge with TIES.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.methods import Request, TextPair, UpdateProblem
from ksmith.methods.artifacts import applied_update
from ksmith.methods.attach import attached
from ksmith.methods.params import resolve_params
from ksmith.methods.runner import run_update
from ksmith.methods.wise import WISE, SideMemory, ties_merge

EDIT = TextPair("bira eats", "meat", "r0")
IRRELEVANT = TextPair("karo lives in the", "forest")
MARGINS = (0.05, 0.2, 0.1)  # α, β, γ in the units of a random width-32 model's activations


def _problem(pairs=(EDIT,), mode="batch") -> UpdateProblem:
    reqs = tuple(
        Request(p.request_id or f"r{i}", p.prompt.split()[0], "eats", p.prompt, "grass", p.answer)
        for i, p in enumerate(pairs)
    )
    plus = tuple(
        TextPair(p.prompt, p.answer, r.request_id) for p, r in zip(pairs, reqs, strict=True)
    )
    return UpdateProblem(kind="edit", requests=reqs, plus=plus, minus=(IRRELEVANT,), mode=mode)


def _acts(model, module, text, tok):
    seen = []
    handle = module.register_forward_hook(lambda _m, args, _o: seen.append(args[0][0]))
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([tok(text)["input_ids"]]))
    finally:
        handle.remove()
    return seen[0]  # (T, d_in)


def _logits(model, tok, text):
    with torch.no_grad():
        return model(input_ids=torch.tensor([tok(text)["input_ids"]])).logits


def test_hook_routes_each_token_by_its_activation_score():
    model = make_model("llama")
    module = model.model.layers[1].mlp.down_proj
    g = torch.Generator().manual_seed(0)
    tau = torch.randn(32, 64, generator=g)
    mem = SideMemory(model, "model.layers.1.mlp.down_proj", tau, epsilon=1.0)
    a = torch.randn(40, 64, generator=g) * torch.logspace(-3, 0, 40)[:, None]  # scores around ε
    score = (a @ tau.T).norm(dim=-1)
    assert (score < 1.0).any() and (score >= 1.0).any()
    with torch.no_grad():
        got = module(a)
        mem.detach()
        base = module(a)
    below = score < 1.0
    assert torch.equal(got[below], base[below])  # main memory, bit for bit
    torch.testing.assert_close(got[~below], base[~below] + a[~below] @ tau.T)  # side memory


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_edit_routes_to_side_memory_and_irrelevant_input_does_not(arch):
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok))
    before_edit = _logits(model, tok, "bira eats meat")
    before_irr = _logits(model, tok, "karo lives in the forest")
    torch.manual_seed(0)
    res = WISE(WISE.Params(n_iter=20, act_margin=MARGINS)).apply(model, tok, _problem())
    (mem,) = attached(model)
    module = model.get_submodule(mem.module_path)
    eps = mem.epsilon
    assert res.log["epsilon"] == eps and 0 < eps < float("inf")
    _, edit_scores = mem.activation_score(_acts(model, module, "bira eats meat", tok))
    _, irr_scores = mem.activation_score(_acts(model, module, "karo lives in the forest", tok))
    n_prompt = len(tok("bira eats")["input_ids"])
    assert edit_scores[n_prompt - 1] >= eps  # the token that predicts the answer routes
    assert (irr_scores < eps).all()  # the irrelevant (Q-) input never does
    assert torch.equal(_logits(model, tok, "karo lives in the forest"), before_irr)
    after_edit = _logits(model, tok, "bira eats meat")
    assert not torch.equal(after_edit[0, n_prompt - 1], before_edit[0, n_prompt - 1])
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_ties_merge_trims_elects_and_averages():
    t1 = torch.tensor([3.0, -1.0, 0.5, 2.0])
    t2 = torch.tensor([-2.0, -0.9, 1.0, 0.1])
    # trim to 2 of 4: [3, 0, 0, 2] and [-2, 0, 1, 0]; signs of the sum: +, 0, +, +
    assert torch.equal(ties_merge([t1, t2], 0.5), torch.tensor([3.0, 0.0, 1.0, 2.0]))
    t3 = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert torch.equal(ties_merge([t3, 3 * t3], 1.0), 2 * t3)  # agreeing entries: their mean


def test_shards_write_their_masked_entries_and_are_merged():
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    pairs = (EDIT, TextPair("tolan eats", "fish", "r1"), TextPair("mesu eats", "seeds", "r2"))
    params = WISE.Params(n_iter=3, act_margin=MARGINS, shard_size=1, mask_ratio=0.2)
    res = WISE(params).apply(model, tok, _problem(pairs, mode="sequential"))
    (mem,) = attached(model)
    assert res.log["step2"]["shards"] == 3 and len(mem.shards) == 3 and mem.current is None
    masks = [s != 0 for s in mem.shards]
    for m in masks:
        assert 0 < m.float().mean() <= 0.3  # about ρ of the entries per shard
    assert not torch.equal(masks[0], masks[1])  # each shard its own random subspace
    torch.testing.assert_close(mem.tau, ties_merge(mem.shards, params.density))


def test_runner_saves_side_memory_and_applied_update_reattaches_it(tmp_path):
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    problems = {0: _problem()}
    params = WISE.Params(n_iter=5, act_margin=MARGINS)
    info = run_update(model, tok, WISE(params), problems, tmp_path / "u")
    assert attached(model) == []
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters())
    assert info["groups"][0]["artifact"] == "attachment"
    assert info["groups"][0]["changed_parameters"] == 32 * 64 + 1
    meta = json.loads((tmp_path / "u" / "g0" / "attach" / "0" / "attachment.json").read_text())
    assert meta["kind"] == "wise" and meta["edits"] == 1

    fresh = make_model("llama", vocab_size=len(tok))
    torch.manual_seed(0)
    WISE(params).apply(fresh, tok, problems[0])
    want = _logits(fresh, tok, "bira eats meat")
    with applied_update(model, tmp_path / "u", 0) as (updated, _):
        got = _logits(updated, tok, "bira eats meat")
    torch.testing.assert_close(got, want)
    assert not torch.equal(got, _logits(model, tok, "bira eats meat"))


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_spec_file_resolves(model_type):
    params = resolve_params(WISE, model_type=model_type)
    assert params.act_margin == (5.0, 20.0, 10.0) and params.act_ratio == 0.88
