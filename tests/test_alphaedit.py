"""AlphaEdit (arXiv 2410.02355, Eq. 14): updates vanish on preserved and earlier edited keys."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.methods.alphaedit import AlphaEdit, alphaedit_delta, null_space_projection
from ksmith.methods.base import Request, UpdateProblem
from ksmith.methods.params import resolve_params


def _keys(d_in=16, rank=6, n0=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))[0]
    K0 = basis[:, :rank] @ torch.randn(rank, n0, generator=g, dtype=torch.float64)  # preserved
    return g, basis, K0


def test_projection_is_onto_the_null_space():
    _, _, K0 = _keys()
    C0 = K0 @ K0.T / K0.shape[1]
    P = null_space_projection(C0, 1e-8)
    torch.testing.assert_close(P @ P, P)
    torch.testing.assert_close(P, P.T)
    assert round(float(P.trace())) == 16 - 6
    assert (P @ K0).abs().max() < 1e-10


def test_update_leaves_preserved_keys_unchanged():
    g, _, K0 = _keys()
    P = null_space_projection(K0 @ K0.T / K0.shape[1], 1e-8)
    R = torch.randn(5, 3, generator=g, dtype=torch.float64)
    K1 = torch.randn(16, 3, generator=g, dtype=torch.float64)
    delta = alphaedit_delta(R, K1, P, torch.zeros(16, 16, dtype=torch.float64), alpha=1e-6)
    assert (delta @ K0).norm() < 1e-8 * (delta @ K1).norm()  # ∆K₀ = 0
    torch.testing.assert_close(delta @ (P @ K1), R, atol=1e-4, rtol=1e-4)  # fits new keys


def test_sequential_cache_protects_earlier_edits():
    g, basis, K0 = _keys()
    P = null_space_projection(K0 @ K0.T / K0.shape[1], 1e-8)
    null = basis[:, 6:]  # keys living in the null space
    Kp = null @ torch.randn(10, 3, generator=g, dtype=torch.float64)  # earlier edits
    K1 = null @ torch.randn(10, 3, generator=g, dtype=torch.float64)  # this edit
    R = torch.randn(5, 3, generator=g, dtype=torch.float64)
    free = alphaedit_delta(R, K1, P, torch.zeros(16, 16, dtype=torch.float64), alpha=1e-6)
    kept = alphaedit_delta(R, K1, P, Kp @ Kp.T, alpha=1e-6)
    assert (free @ Kp).norm() > 0.1 * (free @ K1).norm()  # without the cache they move
    assert (kept @ Kp).norm() < 1e-4 * (kept @ K1).norm()  # with it they stay
    torch.testing.assert_close(kept @ K1, R, atol=1e-4, rtol=1e-4)


def test_sequential_mode_grows_cache_per_model(tmp_path, monkeypatch):
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the bira eats grass .\nmesu lives in the forest .\n")
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    problem = UpdateProblem(
        kind="edit",
        mode="sequential",
        requests=(
            Request("r0", "bira", "eats", "the bira eats", "grass", "fish"),
            Request("r1", "karo", "eats", "karo eats", "meat", "seeds"),
        ),
    )
    method = AlphaEdit(AlphaEdit.Params(mom2_corpus_path=str(corpus), v_num_grad_steps=2))
    res = method.apply(model, tok, problem)
    assert set(res.log) == {"step0", "step1"}
    cache = method._state.extra["Kp_Kp"][0]
    assert torch.linalg.matrix_rank(cache) == 2  # one key per sequential edit
    method.apply(make_model("llama", vocab_size=len(tok)), tok, problem)  # a new model
    assert torch.linalg.matrix_rank(method._state.extra["Kp_Kp"][0]) == 2  # started afresh


def test_empty_null_space_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    corpus = tmp_path / "corpus.txt"
    tok = make_tokenizer()
    words = list(tok.get_vocab())[4:]
    g = torch.Generator().manual_seed(0)
    lines = [
        " ".join(words[i] for i in torch.randint(len(words), (12,), generator=g).tolist())
        for _ in range(60)
    ]  # enough varied tokens for a full-rank E[kkᵀ]
    corpus.write_text("\n".join(lines))
    model = make_model("llama", vocab_size=len(tok))
    problem = UpdateProblem(
        kind="edit", requests=(Request("r0", "bira", "eats", "the bira eats", "grass", "fish"),)
    )
    params = AlphaEdit.Params(
        mom2_corpus_path=str(corpus), nullspace_scale="absolute", nullspace_threshold=1e-30
    )
    with pytest.raises(KsmithError, match="null space"):
        AlphaEdit(params).apply(model, tok, problem)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
def test_spec_file_resolves(model_type):
    params = resolve_params(AlphaEdit, model_type=model_type)
    if model_type != "qwen2":
        assert params == AlphaEdit.Params()
    else:
        assert params.nullspace_scale == "absolute" and params.L2 == 10.0


def test_groups_are_independent_on_one_model(tmp_path, monkeypatch):
    """The runner applies groups one after another to the same model object, restoring the
    base weights between them: a group's update must not depend on the groups before it (the
    key cache K_p starts empty for each group)."""
    from ksmith.methods import artifacts as art

    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the bira eats grass .\nmesu lives in the forest .\n")
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    # Subjects absent from the statistics corpus: their keys reach the null space, so an
    # earlier group's cached key would change a later group's update.
    first = UpdateProblem(
        kind="edit", requests=(Request("r0", "tolan", "eats", "tolan eats", "grass", "fish"),)
    )
    second = UpdateProblem(
        kind="edit", requests=(Request("r1", "karo", "eats", "karo eats", "meat", "seeds"),)
    )
    params = AlphaEdit.Params(mom2_corpus_path=str(corpus), v_num_grad_steps=2)

    def delta(method, problem):
        base = art.snapshot(model)
        torch.manual_seed(0)
        method.apply(model, tok, problem)
        out = {n: p.detach().clone() - base[n] for n, p in model.named_parameters()}
        art.restore_(model, base)
        return out

    after_first = AlphaEdit(params)
    delta(after_first, first)
    chained = delta(after_first, second)
    alone = delta(AlphaEdit(params), second)
    assert any(d.abs().max() > 0 for d in alone.values())
    for n in alone:
        assert torch.equal(chained[n], alone[n]), n
