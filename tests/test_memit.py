"""MEMIT (arXiv 2210.07229, Eq. 14): the batch update solves its least-squares problem."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.methods.base import Request, UpdateProblem
from ksmith.methods.memit import MEMIT, memit_delta
from ksmith.methods.params import resolve_params


def _objective(delta, R, K1, C0):
    """‖∆K₁ − R‖² + tr(∆ C₀ ∆ᵀ): fit the new keys, keep the preserved ones (K₀K₀ᵀ = C₀)."""
    return ((delta @ K1 - R) ** 2).sum() + torch.trace(delta @ C0 @ delta.T)


def test_solves_normal_equations_and_minimises():
    g = torch.Generator().manual_seed(0)
    d_out, d_in, k = 5, 12, 4
    R = torch.randn(d_out, k, generator=g, dtype=torch.float64)
    K1 = torch.randn(d_in, k, generator=g, dtype=torch.float64)
    K0 = torch.randn(d_in, 30, generator=g, dtype=torch.float64)
    C0 = 3.0 * K0 @ K0.T / 30
    delta = memit_delta(R, K1, C0)
    # normal equations: (∆K₁ − R)K₁ᵀ + ∆C₀ = 0
    grad = (delta @ K1 - R) @ K1.T + delta @ C0
    assert grad.abs().max() < 1e-10
    best = _objective(delta, R, K1, C0)
    for _ in range(20):
        bump = 1e-3 * torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
        assert _objective(delta + bump, R, K1, C0) > best


def test_weak_preservation_fits_the_residual_exactly():
    g = torch.Generator().manual_seed(1)
    R = torch.randn(4, 3, generator=g, dtype=torch.float64)
    K1 = torch.randn(10, 3, generator=g, dtype=torch.float64)
    delta = memit_delta(R, K1, 1e-9 * torch.eye(10, dtype=torch.float64))
    torch.testing.assert_close(delta @ K1, R, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_memit_changes_only_edited_down_projections(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the bira eats grass .\nmesu lives in the forest .\nkaro eats fish .\n")
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok), layers=3)
    before = copy.deepcopy(model.state_dict())
    problem = UpdateProblem(
        kind="edit",
        requests=(
            Request("r0", "bira", "eats", "the bira eats", "grass", "fish"),
            Request("r1", "mesu", "lives in", "mesu lives in the", "forest", "desert"),
        ),
    )
    params = MEMIT.Params(layers=(0, 1), mom2_corpus_path=str(corpus), v_num_grad_steps=3)
    res = MEMIT(params).apply(model, tok, problem)
    changed = sorted(n for n, p in model.state_dict().items() if not torch.equal(p, before[n]))
    down = "mlp.c_proj" if arch == "gpt2" else "mlp.down_proj"
    prefix = "transformer.h" if arch == "gpt2" else "model.layers"
    assert changed == [f"{prefix}.0.{down}.weight", f"{prefix}.1.{down}.weight"]
    assert res.log["layers"] == [0, 1]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox", "qwen2"])
def test_spec_file_resolves(model_type):
    params = resolve_params(MEMIT, model_type=model_type)
    if model_type in ("llama", "gpt2"):
        assert params == MEMIT.Params()
    else:
        assert params.fact_token == "subject_last"


def test_value_optimization_does_not_depend_on_batching():
    """v* of each request is the same whether requests share a batch or not (own δ_i each)."""
    from ksmith.methods.locate import EditTarget, LocateParams
    from ksmith.methods.values import optimize_values

    tok = make_tokenizer()
    torch.manual_seed(0)
    model = make_model("llama", vocab_size=len(tok), layers=2)
    targets = [
        EditTarget("the bira eats", "bira", "fish"),
        EditTarget("mesu lives in the", "mesu", "desert"),
        EditTarget("karo eats", "karo", "grass"),
    ]
    path = "model.layers.0"
    one = LocateParams(v_num_grad_steps=6, v_batch_rows=2)  # one request (+ essence) per batch
    together = LocateParams(v_num_grad_steps=6, v_batch_rows=256)
    z_one, _ = optimize_values(model, tok, targets, path, [""], one)
    z_all, _ = optimize_values(model, tok, targets, path, [""], together)
    torch.testing.assert_close(z_one, z_all, atol=1e-4, rtol=1e-4)
