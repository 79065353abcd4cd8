"""Second-moment statistics: exact, bounded, cached (ksmith.methods.stats)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.methods.stats import (
    MomentSettings,
    StatsSource,
    compute_second_moments,
    default_cache_dir,
    second_moments,
    select_tokens,
    weights_fingerprint,
)
from ksmith.models.arch import get_module, layer_path

TEXTS = [
    "the bira eats grass .",
    "a tolan lives in the forest .",
    "mesu eats fish and seeds .",
    "karo lives in the ocean and eats meat .",
    "what does vindel eat ? insects",
]


def _direct(model, tok, layer, texts):
    """Σ k kᵀ / N with one unpadded forward pass per text."""
    keys = []
    mod = get_module(model, layer_path(model, layer, "mlp_out"))
    h = mod.register_forward_pre_hook(lambda _m, a: keys.append(a[0][0].double()))
    with torch.no_grad():
        for t in texts:
            model(input_ids=torch.tensor([tok(t)["input_ids"]]))
    h.remove()
    K = torch.cat(keys)  # (N, d_in)
    return (K.T @ K / K.shape[0]).float()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_matches_direct_computation(arch):
    tok = make_tokenizer()
    model = make_model(arch, vocab_size=len(tok))
    source = StatsSource.from_texts(TEXTS)
    got = compute_second_moments(model, tok, [0, 1], source, n_tokens=10_000, batch_tokens=16)
    for layer in (0, 1):
        torch.testing.assert_close(
            got[layer], _direct(model, tok, layer, TEXTS), rtol=1e-4, atol=1e-5
        )


def test_token_and_batch_bounds():
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    source = StatsSource.from_texts(TEXTS)
    seqs = select_tokens(tok, source, n_tokens=13, max_length=64, seed=0)
    assert sum(map(len, seqs)) == 13
    shapes = []
    model.register_forward_pre_hook(
        lambda _m, args, kw: shapes.append(kw["input_ids"].shape), with_kwargs=True
    )
    compute_second_moments(model, tok, [0], source, n_tokens=13, batch_tokens=8)
    assert shapes and all(b * t <= 8 for b, t in shapes)
    # the sampled tokens are exactly those of select_tokens (cut to the batch budget)
    want = select_tokens(tok, source, n_tokens=13, max_length=8, seed=0)
    assert sum(b * t for b, t in shapes) >= sum(map(len, want)) == 13


def test_cached_second_call_does_no_forward(tmp_path):
    tok = make_tokenizer()
    model = make_model("gpt2", vocab_size=len(tok))
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    source = StatsSource.from_texts(TEXTS)
    settings = MomentSettings(n_tokens=20, batch_tokens=32, cache_dir=str(tmp_path))
    fp = weights_fingerprint(model)
    first = second_moments(model, tok, [0, 1], source, settings, model_fingerprint=fp)
    n_first = len(calls)
    assert n_first > 0
    second = second_moments(model, tok, [0, 1], source, settings, model_fingerprint=fp)
    assert len(calls) == n_first  # nothing recomputed
    for layer in (0, 1):
        torch.testing.assert_close(first[layer], second[layer])
    assert not list(tmp_path.rglob(".*"))  # no temporary files left behind
    # a different sample size is a different statistic
    second_moments(
        model,
        tok,
        [0],
        source,
        MomentSettings(21, 32, cache_dir=str(tmp_path)),
        model_fingerprint=fp,
    )
    assert len(calls) > n_first


def test_fingerprint_tracks_weights_and_cache_env(monkeypatch, tmp_path):
    model = make_model("llama")
    fp = weights_fingerprint(model)
    assert fp == weights_fingerprint(model)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0
    assert weights_fingerprint(model) != fp
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "stats"


def test_sources_from_files(tmp_path):
    (tmp_path / "c.txt").write_text("\n".join(TEXTS) + "\n\n")
    a = StatsSource.from_path(tmp_path / "c.txt")
    assert a.texts == tuple(TEXTS)
    assert a.fingerprint == StatsSource.from_texts(TEXTS).fingerprint
    from ksmith.errors import KsmithError

    with pytest.raises(KsmithError):
        StatsSource.from_path(tmp_path / "missing.csv")
