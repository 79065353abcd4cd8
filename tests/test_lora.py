"""LoRA editor: merged low-rank delta on the declared modules only."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.methods import Request, TextPair, UpdateProblem, get_method
from ksmith.methods.train_utils import pair_logprobs


def problem():
    reqs = tuple(
        Request(f"g0.r{i}", s, "eats", f"{s} eats", "grass", "meat")
        for i, s in enumerate(["bira", "tolan", "mesu"])
    )
    plus = tuple(
        TextPair(p, "meat", r.request_id)
        for r in reqs
        for p in (r.prompt, f"what does {r.subject} eat ? answer :")
    )
    minus = (TextPair("karo lives in", "forest"),)
    return UpdateProblem(kind="edit", requests=reqs, plus=plus, minus=minus)


ADAPTED = {
    "gpt2": {"transformer.h.0.mlp.c_proj.weight", "transformer.h.0.attn.c_proj.weight"},
    "llama": {"model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.o_proj.weight"},
}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_lora_merged_delta_is_low_rank_on_target_modules_only(arch):
    model, tok = make_model(arch), make_tokenizer()
    names = [n for n, _ in model.named_parameters()]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prob = problem()
    with torch.no_grad():
        lp0 = pair_logprobs(
            model, tok, *zip(*[(p.prompt, p.answer) for p in prob.plus], strict=True)
        )
    cls = get_method("lora")
    rank = 2
    params = cls.Params(layers=(0,), modules=("mlp_out", "attn_out"), rank=rank, lr=1e-2,
                        steps=10, retain_weight=0.5)  # fmt: skip
    torch.manual_seed(0)
    res = cls(params).apply(model, tok, prob)
    # The adapters are merged away: same class, same parameter names, flags restored.
    assert not type(model).__module__.startswith("peft")
    assert [n for n, _ in model.named_parameters()] == names
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == ADAPTED[arch]
    for n in changed:
        delta = (dict(model.named_parameters())[n] - before[n]).double()
        assert 1 <= torch.linalg.matrix_rank(delta, rtol=1e-6).item() <= rank
    assert res.log["loss"][-1] < res.log["loss"][0]
    with torch.no_grad():
        lp1 = pair_logprobs(
            model, tok, *zip(*[(p.prompt, p.answer) for p in prob.plus], strict=True)
        )
    assert lp1.mean() > lp0.mean()


def test_lora_default_adapts_every_layer_and_failure_unloads(monkeypatch):
    model, tok = make_model("llama", layers=3), make_tokenizer()
    cls = get_method("lora")
    method = cls(cls.Params(steps=1))
    assert method.target_modules(model) == [f"model.layers.{i}.mlp.down_proj" for i in range(3)]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def boom(*a, **k):
        raise RuntimeError("optimiser failed")

    monkeypatch.setattr(torch.optim, "Adam", boom)
    with pytest.raises(RuntimeError, match="optimiser failed"):
        method.apply(model, tok, problem())
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()  # adapters removed
    assert all(torch.equal(after[n], before[n]) for n in before)
