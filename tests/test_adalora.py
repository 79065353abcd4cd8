"""AdaLoRA (arXiv 2303.10512): the rank budget follows the paper's cubic schedule as peft
allocates it, and the merged update is a low-rank change of the target modules only."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.methods import Request, TextPair, UpdateProblem, get_method
from ksmith.methods.adalora import AdaLoRA, orthogonal_penalty
from ksmith.methods.params import resolve_params


def problem() -> UpdateProblem:
    reqs = tuple(
        Request(f"g0.r{i}", s, "eats", f"{s} eats", "grass", "meat")
        for i, s in enumerate(["bira", "tolan", "mesu"])
    )
    plus = tuple(
        TextPair(p, "meat", r.request_id)
        for r in reqs
        for p in (r.prompt, f"what does {r.subject} eat ? answer :")
    )
    return UpdateProblem(kind="edit", requests=reqs, plus=plus)


def cubic_budget(t: int, b0: int, bT: int, total: int, ti: int, tf: int) -> int:
    """AdaLoRA's budget: b(0) during warm-up, b(T) in the last t_f steps, cubic in between."""
    if t <= ti:
        return b0
    if t > total - tf:
        return bT
    return int((b0 - bT) * (1 - (t - ti) / (total - tf - ti)) ** 3 + bT)


ADAPTED = {
    "gpt2": ["transformer.h.0.mlp.c_proj", "transformer.h.0.attn.c_proj"],
    "llama": ["model.layers.0.mlp.down_proj", "model.layers.0.self_attn.o_proj"],
}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_budget_follows_the_schedule_and_update_stays_on_targets(arch):
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = list(before)
    params = AdaLoRA.Params(layers=(0,), modules=("mlp_out", "attn_out"), init_r=6, target_r=2,
                            steps=8, batch_size=2, lr=1e-2, early_stop_loss=0.0)  # fmt: skip
    torch.manual_seed(0)
    res = AdaLoRA(params).apply(model, tok, problem())
    log = res.log
    total, ti, tf = (log["schedule"][k] for k in ("total_step", "tinit", "tfinal"))
    assert total == 8 * 3 and log["steps"] == total  # 6 pairs in batches of 2, 8 epochs
    n = len(ADAPTED[arch])
    b0, bT = 6 * n, 2 * n
    for t, kept in enumerate(log["kept_rank"], start=1):
        budget = cubic_budget(t, b0, bT, total, ti, tf)
        if t > ti:  # masked to the budget at every step (ΔT = 1) once warm-up is over
            assert kept <= budget, (t, kept, budget)
            assert kept >= budget - 1  # ties in the importance scores aside
        else:
            assert kept == b0
    assert sum(log["ranks"].values()) == bT  # the final budget: target_r per matrix
    # merged: same class and parameter names, only the target modules' weights changed
    assert not type(model).__module__.startswith("peft")
    assert [n for n, _ in model.named_parameters()] == names
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    # A matrix whose whole budget was reallocated elsewhere (rank 0) is left unchanged.
    kept = {m: log["ranks"][f"{m}.lora_E.ksmith"] for m in ADAPTED[arch]}
    assert changed == {f"{m}.weight" for m in ADAPTED[arch] if kept[m] > 0}
    for m in ADAPTED[arch]:
        delta = (dict(model.named_parameters())[f"{m}.weight"] - before[f"{m}.weight"]).double()
        assert torch.linalg.matrix_rank(delta, rtol=1e-6).item() <= kept[m]


def test_orthogonal_penalty_is_zero_for_orthonormal_factors():
    class Fake(torch.nn.Module):
        def __init__(self, A, B):
            super().__init__()
            self.lora_A = torch.nn.ParameterDict({"ksmith": torch.nn.Parameter(A)})
            self.lora_B = torch.nn.ParameterDict({"ksmith": torch.nn.Parameter(B)})

    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(10, 10, generator=g))[0]
    ortho = Fake(Q[:3], Q[:, :3])  # A (r, k) with orthonormal rows, B (d, r) orthonormal columns
    assert float(orthogonal_penalty(ortho)) == pytest.approx(0.0, abs=1e-5)
    off = Fake(2 * Q[:3], Q[:, :3])  # AAᵀ = 4I: ‖3I‖_F = 3√3 for A, 0 for B
    assert float(orthogonal_penalty(off)) == pytest.approx(3 * 3**0.5 / 2, rel=1e-5)


def test_schedule_leaves_a_budgeting_phase():
    method = AdaLoRA(AdaLoRA.Params(steps=2, batch_size=4, tinit_frac=0.5, tfinal_frac=0.5))
    total, ti, tf = method.schedule(4)
    assert total == 2 and ti + tf < total


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_spec_file_resolves(model_type):
    cls = get_method("adalora")
    params = resolve_params(cls, model_type=model_type)
    assert isinstance(params, cls.Params) and params.init_r >= params.target_r
