"""MEMIT and AlphaEdit follow the reference code (kmeng01/memit, jianghoucheng/AlphaEdit) where
it differs from a plain reading of the paper:

- ``compute_ks.py`` averages the subject keys within each prefix-length group, then across the
  groups (the bare prompt is a group of its own), not in one flat mean over every prefix;
- ``memit_main.py`` forms λ·C in float64 (``mom2_update_weight * cov.double()``) before the solve.
"""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.methods.alphaedit import AlphaEdit
from ksmith.methods.base import Request, UpdateProblem
from ksmith.methods.locate import ModelState, context_prefix_groups, context_prefixes
from ksmith.methods.memit import MEMIT, memit_delta


def _keys_per_prefix(model, tok, prompts, prefixes, layer=0):
    """Input of layer `layer`'s down-projection at the last token of prefix + prompt, computed
    here with a plain forward hook: (n prompts, n prefixes, d_in)."""
    down = model.model.layers[layer].mlp.down_proj
    seen = []
    handle = down.register_forward_hook(lambda _m, args, _o: seen.append(args[0][0, -1]))
    try:
        with torch.no_grad():
            for prompt in prompts:
                for prefix in prefixes:
                    ids = tok(prefix + prompt)["input_ids"]
                    model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    return torch.stack(seen).view(len(prompts), len(prefixes), -1).float()


def test_prefix_groups_nest_the_flat_prefixes():
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    lengths, starts = ((3, 4), (5, 2)), ("the", "a")
    groups = context_prefix_groups(model, tok, lengths, starts, seed=0)
    assert [len(g) for g in groups] == [1, 4, 2]  # bare prompt; 2 per start; 1 per start
    assert groups[0] == [""]
    assert [p for g in groups for p in g] == context_prefixes(model, tok, lengths, starts, 0)


@pytest.mark.parametrize("method_cls", [MEMIT, AlphaEdit])
def test_keys_are_averaged_per_prefix_group(method_cls, tmp_path, monkeypatch):
    """K₁ = mean over groups of (mean within the group): with one bare prompt and a group of four
    sampled prefixes, the bare prompt weighs 1/2, not 1/5."""
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the bira eats grass .\nmesu lives in the forest .\nkaro eats fish .\n")
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok), layers=2)
    problem = UpdateProblem(
        kind="edit",
        requests=(
            Request("r0", "bira", "eats", "the bira eats", "grass", "fish"),
            Request("r1", "mesu", "lives in", "mesu lives in the", "forest", "desert"),
        ),
    )
    params = method_cls.Params(
        layers=(0,),
        mom2_corpus_path=str(corpus),
        v_num_grad_steps=2,
        context_lengths=((3, 4),),
        context_starts=("the", "a"),
    )
    method = method_cls(params)
    seen: list[torch.Tensor] = []
    original = method._layer_delta

    def spy(state, i, layer, R, K1):
        seen.append(K1.detach().clone())
        return original(state, i, layer, R, K1)

    monkeypatch.setattr(method, "_layer_delta", spy)
    prefixes = context_prefixes(model, tok, params.context_lengths, params.context_starts, 0)
    assert len(prefixes) == 5
    k = _keys_per_prefix(model, tok, [r.prompt for r in problem.requests], prefixes)
    grouped = (k[:, 0] + k[:, 1:].mean(dim=1)) / 2  # (n, d_in)
    flat = k.mean(dim=1)
    assert (grouped - flat).norm() > 1e-2 * grouped.norm()  # the two readings differ here

    method.apply(model, tok, problem)
    assert method._state.prefixes == prefixes
    (K1,) = seen
    torch.testing.assert_close(K1.T, grouped, atol=1e-5, rtol=1e-5)


def test_memit_forms_lambda_c_in_float64():
    """λ·C rounded to float32 moves ∆ by ~cond(C)·6e-8; the reference forms it in float64."""
    g = torch.Generator().manual_seed(0)
    d_in, d_out, k = 24, 6, 3
    Q = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))[0]
    eig = torch.logspace(0, -7, d_in, dtype=torch.float64)  # condition number 1e7
    C = (Q * eig) @ Q.T
    C32 = C.float()  # the statistics are stored in float32
    lam = 15000.3
    R = torch.randn(d_out, k, generator=g, dtype=torch.float64)
    K1 = 1e-3 * torch.randn(d_in, k, generator=g, dtype=torch.float64)
    method = MEMIT(MEMIT.Params(layers=(0,), mom2_update_weight=lam))
    state = ModelState(model=lambda: None, moments={0: C32})
    got = method._layer_delta(state, 0, 0, R, K1)
    want = memit_delta(R, K1, lam * C32.double())
    rounded = memit_delta(R, K1, (lam * C32).double())
    assert (rounded - want).norm() > 1e-6 * want.norm()  # float32 rounding would show
    torch.testing.assert_close(got, want, atol=0, rtol=1e-10)
