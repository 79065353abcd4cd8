"""oneDNN linear layers: the same numbers as torch's default kernel, and nothing left behind."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model

from ksmith.evaluate import onednn
from ksmith.evaluate.onednn import onednn_available, onednn_linears

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="torch built without oneDNN")


def linears(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


@needs_onednn
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logits_match_the_default_kernel_and_the_layers_are_restored(arch):
    model = make_model(arch, seed=3)
    ids = torch.randint(4, 100, (3, 11))
    with torch.inference_mode():
        want = model(input_ids=ids).logits
        with onednn_linears(model) as n:
            got = model(input_ids=ids).logits
    assert n == len(linears(model)) > 0  # gpt2's lm_head; llama's projections too
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in linears(model))


@needs_onednn
def test_the_current_weights_are_used_and_other_layers_are_left_alone(monkeypatch):
    calls = []
    real = onednn._onednn_forward
    monkeypatch.setattr(onednn, "_onednn_forward", lambda self, x: calls.append(1) or real(self, x))
    layer = torch.nn.Linear(8, 4)
    half = torch.nn.Linear(8, 4).to(torch.bfloat16)
    own = torch.nn.Linear(8, 4)
    own.forward = lambda x: x  # an instance-level forward (offloading hooks install these)
    model = torch.nn.ModuleList([layer, half, own])
    x = torch.randn(5, 8)
    with torch.inference_mode(), onednn_linears(model) as n:
        assert n == 1
        layer.weight.mul_(3)  # an update made inside the block is seen
        torch.testing.assert_close(
            layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias)
        )
        assert own(x) is x
    assert len(calls) == 1
    assert own(x) is x and "forward" not in layer.__dict__


def test_unavailable_onednn_changes_nothing(monkeypatch):
    monkeypatch.setattr(onednn, "onednn_available", lambda: False)
    model = make_model("llama")
    with onednn_linears(model) as n:
        assert n == 0
        assert all("forward" not in m.__dict__ for m in linears(model))
