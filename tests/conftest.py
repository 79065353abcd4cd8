"""Shared test fixtures: tiny things built in the test, never downloaded."""

from __future__ import annotations

import pytest

WORDS = (
    "the a of is in on to and lives eats feeds has color colour red blue green meat grass "
    "fish seeds insects forest desert ocean river mountain what where does do eat live answer "
    "question true false not i don't know yes no bira tolan mesu karo vindel lumo sapi "
    "dorat fenu gali hoka jiru kemo lani moru nesa opi paku . ? : , A B C D"
).split()


def make_tokenizer(words=WORDS):
    """A word-level PreTrainedTokenizerFast over `words` (plus specials), built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys([*specials, *words]))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
    )


def make_model(
    arch: str = "gpt2",
    vocab_size: int = 128,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 32,
    positions: int = 64,
):
    """A randomly initialised 2-layer causal LM made from a config (gpt2 or llama)."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(
            vocab_size=vocab_size,
            n_positions=positions,
            n_embd=hidden,
            n_layer=layers,
            n_head=2,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        )
    elif arch == "llama":
        cfg = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        )
    else:
        raise ValueError(arch)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(params=["gpt2", "llama"])
def tiny_model(request):
    return make_model(request.param)


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (training tests are fastest so on the shared CPU)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
