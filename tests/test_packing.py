"""Prefix sharing: the trie, its packing under a tree mask, and exact scores through it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_model, make_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from ksmith.evaluate.hf import HFBackend
from ksmith.evaluate.packing import build_trie, continuation_nodes, pack_trie, tree_inputs

rows_strategy = st.lists(
    st.lists(st.integers(0, 3), min_size=1, max_size=7), min_size=1, max_size=25
)


def ancestors_or_self(trie, v):
    out = set()
    while v >= 0:
        out.add(v)
        v = trie.parents[v]
    return out


@settings(max_examples=60, deadline=None)
@given(rows_strategy)
def test_trie_nodes_are_the_distinct_prefixes_in_preorder(rows):
    trie = build_trie(rows)
    prefixes = {tuple(r[: d + 1]) for r in rows for d in range(len(r))}
    assert len(trie) == len(prefixes)
    for row, path in zip(rows, trie.paths, strict=True):
        assert [trie.tokens[v] for v in path] == row
        assert [trie.depths[v] for v in path] == list(range(len(row)))
        assert [trie.parents[v] for v in path] == [-1, *path[:-1]]
    # Preorder: every subtree is a contiguous run of node ids starting at its root, ending
    # before `ends`.
    for v in range(len(trie)):
        subtree = sorted(u for u in range(len(trie)) if v in ancestors_or_self(trie, u))
        assert subtree == list(range(v, trie.ends[v]))


@settings(max_examples=60, deadline=None)
@given(rows_strategy, st.integers(1, 12))
def test_packing_gives_each_node_one_home_in_a_sequence_closed_under_parents(rows, budget):
    trie = build_trie(rows)
    seqs = pack_trie(trie, budget)
    homes = [v for s in seqs for v in range(s.first, s.stop)]
    assert homes == list(range(len(trie)))  # every node computed once, in order
    for s in seqs:
        nodes = s.nodes
        assert len(nodes) <= max(budget, max(trie.depths) + 1)
        assert s.ancestors == sorted(ancestors_or_self(trie, s.first) - {s.first})
        for i, v in enumerate(nodes):
            p = trie.parents[v]
            assert p == -1 or p in nodes[:i]  # ancestors come first


@settings(max_examples=40, deadline=None)
@given(rows_strategy, st.integers(1, 12))
def test_tree_mask_is_ancestors_or_self_and_pads_attend_to_themselves(rows, budget):
    trie = build_trie(rows)
    seqs = pack_trie(trie, budget)
    ids, pos, mask, homes = tree_inputs(trie, seqs, pad_id=99)
    L = ids.shape[1]
    for b, s in enumerate(seqs):
        nodes = s.nodes
        assert homes[b].tolist() == [-1] * len(s.ancestors) + list(range(s.first, s.stop)) + [
            -1
        ] * (L - len(nodes))
        for i in range(L):
            if i >= len(nodes):
                assert ids[b, i] == 99 and pos[b, i] == 0
                assert mask[b, i].tolist() == [j == i for j in range(L)]
                continue
            allowed = ancestors_or_self(trie, nodes[i])
            assert ids[b, i] == trie.tokens[nodes[i]] and pos[b, i] == trie.depths[nodes[i]]
            assert mask[b, i].tolist() == [j < len(nodes) and nodes[j] in allowed for j in range(L)]


# Shared templates, a row that is a prefix of another row (" grass" after "bira eats" is read
# from "bira eats" + nothing; "bira eats grass" + " and" extends it), multi-token answers, a
# one-token context, options of one question, and a long context for truncation.
REQUESTS = [
    ("bira eats", " grass"),
    ("bira eats grass", " and fish"),
    ("bira eats grass and", " fish"),
    ("what does bira eat ? answer :", " grass"),
    ("what does bira eat ? answer :", " meat"),
    ("what does bira eat ? answer :", " fish seeds"),
    ("what does tolan eat ? answer :", " fish"),
    ("what does tolan eat ? answer : fish", " ."),
    ("where does tolan live ? answer :", " in the ocean ."),
    ("true or false : bira eats grass . answer :", " true"),
    ("true or false : bira eats meat . answer :", " false"),
    ("mesu", " red blue green"),
    ("", " the"),
    ("a", " b"),
    (" ".join(["karo lives in the forest and"] * 4), " eats grass"),
]


def reference(model, tok, requests, max_length):
    """One unbatched forward per request on ctx + cont[:-1], cut from the left to the window."""
    out = []
    with torch.inference_mode():
        for ctx, cont in requests:
            c = tok(ctx)["input_ids"] or [tok.bos_token_id]
            x = tok(cont, add_special_tokens=False)["input_ids"]
            row = (c + x)[:-1][-max_length:]
            logp = torch.log_softmax(model(input_ids=torch.tensor([row])).logits[0].float(), -1)
            at = range(len(row) - len(x), len(row))
            ll = sum(logp[p, t].item() for p, t in zip(at, x, strict=True))
            out.append((ll, tuple(int(logp[p].argmax()) for p in at)))
    return out


def small_model(arch: str, seed: int, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM, MistralConfig, Qwen2Config, Qwen3Config

    if arch in ("gpt2", "llama"):
        model = make_model(arch, seed=seed)
    else:
        torch.manual_seed(seed)
        config_class = {"qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}[arch]
        cfg = config_class(
            vocab_size=128,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,  # grouped-query attention
            max_position_embeddings=64,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        )
        model = AutoModelForCausalLM.from_config(cfg).eval()
    model.config._attn_implementation = attn
    return model


@pytest.mark.parametrize(
    ("arch", "attn"),
    [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa"), ("llama", "eager")]
    + [("qwen2", "sdpa"), ("qwen3", "sdpa"), ("mistral", "sdpa")],
)
@pytest.mark.parametrize(("batch_size", "pack_length", "max_length"), [(1, 1, 64), (64, 16, 9)])
def test_packed_scores_match_direct_forward_and_the_padded_path(
    arch, attn, batch_size, pack_length, max_length
):
    tok = make_tokenizer()
    model = small_model(arch, seed=11, attn=attn)
    kwargs = {"batch_size": batch_size, "max_length": max_length}
    packed = HFBackend(model, tok, pack_length=pack_length, **kwargs)
    padded = HFBackend(model, tok, pack_length=None, **kwargs)
    assert packed.tree_attention_supported() and not padded.tree_attention_supported()
    want = reference(model, tok, REQUESTS, max_length)
    got, base = packed.score(REQUESTS), padded.score(REQUESTS)
    for (ll, greedy), p, q, (_, cont) in zip(want, got, base, REQUESTS, strict=True):
        assert p.loglikelihood == pytest.approx(ll, abs=1e-4)
        assert p.loglikelihood == pytest.approx(q.loglikelihood, abs=1e-4)
        assert p.greedy_ids == q.greedy_ids == greedy
        assert p.token_accuracy == q.token_accuracy
        assert p.n_tokens == len(tok(cont, add_special_tokens=False)["input_ids"])


def test_each_prefix_is_computed_once():
    tok = make_tokenizer()
    backend = HFBackend(make_model("llama", seed=12), tok, batch_size=2, pack_length=8)
    cont, rows, members = backend.scoring_inputs(list(dict.fromkeys(REQUESTS)))
    trie = build_trie(rows)
    _, node, _, keep = continuation_nodes(trie, members, cont)
    forwards = list(backend.packed_forwards(trie, keep))
    assert len(forwards) > 1  # small batches: several forwards
    kept = np.concatenate([k for _, k in forwards])
    assert sorted(kept.tolist()) == sorted(set(node.tolist()))  # each predicting node once
    assert len(trie) < sum(len(r) for r in rows)  # the templates are shared
    # Projected rows are the kept nodes: one logit row per node, in order.
    with torch.inference_mode():
        for kwargs, nodes in forwards:
            logits = backend.model(**kwargs).logits
            assert logits.shape == (len(nodes), backend.model.config.vocab_size)


def test_models_without_tree_attention_use_the_padded_path():
    tok = make_tokenizer()
    assert not HFBackend(make_model("llama"), tok, pack_length=None).tree_attention_supported()
    model = small_model("mistral", seed=0)
    model.config.sliding_window = 4  # shorter than the window: a custom mask would ignore it
    backend = HFBackend(model, tok)
    assert not backend.tree_attention_supported()
    with torch.inference_mode():
        [got] = backend.score([("what does bira eat ? answer :", " grass")])
    [(ll, _)] = reference(model, tok, [("what does bira eat ? answer :", " grass")], 64)
    assert got.loglikelihood == pytest.approx(ll, abs=1e-4)


def test_every_tree_attention_model_has_an_architecture_entry():
    from ksmith.evaluate.packing import TREE_ATTENTION_MODELS
    from ksmith.models.arch import ARCHITECTURES

    assert set(TREE_ATTENTION_MODELS) <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen3"])
def test_last_block_projects_only_where_logits_are_read_and_changes_none(arch):
    from ksmith.evaluate.packing import LastBlockWhereRead
    from ksmith.models.arch import get_module, layer_path

    tok = make_tokenizer()
    model = small_model(arch, seed=5)
    backend = HFBackend(model, tok, batch_size=4, pack_length=16)
    cont, rows, members = backend.scoring_inputs(list(dict.fromkeys(REQUESTS)))
    trie = build_trie(rows)
    _, node, _, keep = continuation_nodes(trie, members, cont)
    # Positions the last block's MLP output and attention output projections compute (these
    # hooks come first, so they see a projection's own output, before it is scattered back).
    seen = {"mlp_out": [], "attn_out": []}
    for which, calls in seen.items():
        proj = get_module(model, layer_path(model, -1, which))
        proj.register_forward_hook(lambda m, args, out, c=calls: c.append(out.shape[:-1].numel()))
    with torch.inference_mode():
        for kwargs, kept in backend.packed_forwards(trie, keep):
            n = kwargs["input_ids"].numel()
            for calls in seen.values():
                calls.clear()
            full = model(**kwargs).logits
            assert seen == {"mlp_out": [n], "attn_out": [n]}
            with LastBlockWhereRead(model) as last_block:
                last_block.where = kwargs["logits_to_keep"]
                for calls in seen.values():
                    calls.clear()
                skipped = model(**kwargs).logits
            assert seen == {"mlp_out": [len(kept)], "attn_out": [len(kept)]} and len(kept) < n
            torch.testing.assert_close(skipped, full, rtol=0, atol=1e-5)
        for calls in seen.values():
            calls.clear()
        model(**kwargs)  # the hooks are gone after the block
        assert seen == {"mlp_out": [n], "attn_out": [n]}
