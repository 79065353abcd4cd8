"""ROME (arXiv 2202.05262, Eq. 2): a rank-one update that writes v* at the edited key."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.methods.base import Request, UpdateProblem
from ksmith.methods.locate import EditTarget, compute_keys
from ksmith.methods.params import resolve_params
from ksmith.methods.rome import ROME, rank_one_update
from ksmith.methods.values import optimize_values
from ksmith.models.arch import arch_of, get_module, layer_path, linear_weight_out_in


def _random(d_out=6, d_in=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    A = torch.randn(d_in, 3 * d_in, generator=g, dtype=torch.float64)
    C = A @ A.T / A.shape[1]  # a positive definite second moment
    k_star, k = torch.randn(d_in, generator=g), torch.randn(d_in, generator=g)
    return W, C, k_star.double(), k.double(), torch.randn(d_out, generator=g).double()


def test_rank_one_and_writes_value_eq2():
    W, C, k_star, _, v = _random()
    delta = rank_one_update(W, k_star, v, C)
    assert torch.linalg.matrix_rank(delta) == 1
    torch.testing.assert_close((W + delta) @ k_star, v)  # Ŵ k* = v*
    # the update reads keys along C⁻¹k*: a key orthogonal to C⁻¹k* is untouched
    u = torch.linalg.solve(C, k_star)
    x = torch.randn(W.shape[1], dtype=torch.float64)
    x -= (x @ u) / (u @ u) * u
    torch.testing.assert_close(
        delta @ x, torch.zeros(W.shape[0], dtype=torch.float64), atol=1e-10, rtol=0
    )


def test_prompt_key_and_identity_covariance_is_easyedit_form():
    W, _, k_star, k, v = _random(seed=1)
    delta = rank_one_update(W, k_star, v, None, k)
    torch.testing.assert_close((W + delta) @ k, v)
    easyedit = torch.outer((v - W @ k) / (k @ k_star), k_star)  # EasyEdit, mom2_adjustment off
    torch.testing.assert_close(delta, easyedit)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("adjust", [False, True])
def test_rome_in_model_rank_one_and_maps_key_to_value(arch, adjust, tmp_path, monkeypatch):
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the bira eats grass .\nmesu lives in the forest .\nkaro eats fish .\n" * 3)
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok))
    params = ROME.Params(
        layer=0,
        mom2_adjustment=adjust,
        mom2_corpus_path=str(corpus),
        fact_token="subject_last",
        v_num_grad_steps=5,
    )
    target = EditTarget("the bira eats", "bira", "fish")
    module = get_module(model, layer_path(model, 0, "mlp_out"))
    before = copy.deepcopy(model.state_dict())
    k = compute_keys(model, tok, [target], 0, [""], params)[0]
    v_star, _ = optimize_values(model, tok, [target], layer_path(model, 0, "mlp_out"), [""], params)
    problem = UpdateProblem(
        kind="edit", requests=(Request("r0", "bira", "eats", "the bira eats", "grass", "fish"),)
    )
    ROME(params).apply(model, tok, problem)
    changed = [n for n, p in model.state_dict().items() if not torch.equal(p, before[n])]
    weight_name = layer_path(model, 0, "mlp_out") + ".weight"
    assert changed == [weight_name]
    delta = linear_weight_out_in(module, arch_of(model)).detach() - (
        before[weight_name].T if arch == "gpt2" else before[weight_name]
    )
    assert torch.linalg.matrix_rank(delta.double(), rtol=1e-6) == 1
    with torch.no_grad():
        out = module(k[None])[0]
    torch.testing.assert_close(out, v_star[0], rtol=1e-4, atol=1e-4)  # Ŵ k = v*


def test_rome_needs_a_target():
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    problem = UpdateProblem(
        kind="unlearn",
        target="neutral",
        requests=(Request("r0", "bira", "eats", "the bira eats", "grass", None),),
    )
    with pytest.raises(KsmithError, match="idk"):
        ROME(ROME.Params(mom2_adjustment=False)).apply(model, tok, problem)


def test_rome_needs_a_corpus_for_covariance():
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    problem = UpdateProblem(
        kind="edit", requests=(Request("r0", "bira", "eats", "the bira eats", "grass", "fish"),)
    )
    with pytest.raises(KsmithError, match="mom2_corpus_path"):
        ROME().apply(model, tok, problem)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox", "qwen2"])
def test_spec_file_resolves(model_type):
    params = resolve_params(ROME, model_type=model_type)
    assert params == ROME.Params(**params.model_dump())
    if model_type in ("llama", "gpt2"):
        assert params == ROME.Params()  # the YAML's world-model defaults are the code's
