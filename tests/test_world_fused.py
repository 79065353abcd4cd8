"""`train_kernels: fused`: the leaner training step computes transformers' loss and gradients."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from ksmith.world.fused import fused_loss, unsupported


def _llama(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    fields = {
        "vocab_size": 61,
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32,
        "tie_word_embeddings": True,
        "pad_token_id": 0,
    }
    config = LlamaConfig(**(fields | overrides))
    model = AutoModelForCausalLM.from_config(config)
    model.train()
    return model


def _batch(lengths: list[int], vocab: int = 61) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded batch (pad id 0) and its attention mask."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.zeros((len(lengths), max(lengths)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, vocab, (n,), generator=generator)
        mask[row, :n] = 1
    return ids, mask


def _grads(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("tied", [True, False])
def test_fused_loss_and_gradients_equal_transformers_on_a_right_padded_batch(tied):
    model = _llama(tie_word_embeddings=tied)
    lengths = [9, 2, 5, 9, 1]  # a row of one token predicts nothing
    ids, mask = _batch(lengths)
    reference = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    expected = _grads(model, reference.loss)
    loss = fused_loss(model)(ids, lengths)
    got = _grads(model, loss)
    assert loss.item() == pytest.approx(reference.loss.item(), rel=1e-6)
    assert expected.keys() == got.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_pads_do_not_change_the_fused_loss():
    """What follows a row's last real token (pads, or anything) is never attended to or scored."""
    model = _llama()
    lengths = [6, 3]
    ids, _ = _batch(lengths)
    noisy = ids.clone()
    noisy[1, 3:] = 7  # other "pad" ids after row 1's real tokens
    loss = fused_loss(model)
    assert loss(noisy, lengths).item() == loss(ids, lengths).item()


def test_unsupported_models_are_named_and_refused():
    assert unsupported(_llama()) is None
    assert "attention_bias" in unsupported(_llama(attention_bias=True))
    assert "num_key_value_heads" in unsupported(_llama(num_key_value_heads=2))
    gpt2 = AutoModelForCausalLM.from_config(
        GPT2Config(vocab_size=61, n_embd=32, n_layer=1, n_head=4, n_positions=32)
    )
    assert unsupported(gpt2) == "not a Llama model"
    with pytest.raises(ValueError, match="not a Llama model"):
        fused_loss(gpt2)
