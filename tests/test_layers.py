"""Out-of-range layers are an error for every method with layer fields, never wrapped."""

from __future__ import annotations

import pytest

from ksmith.errors import KsmithError, SpecError
from ksmith.methods import Request, UpdateProblem, get_method
from ksmith.methods.layers import check_layers, layer_fields
from ksmith.methods.params import resolve_params
from tests.conftest import make_model, make_tokenizer

# method -> (field, an out-of-range value for a 2-layer model)
LAYERED = {
    "rome": ("layer", 5),
    "memit": ("layers", [0, 2]),
    "alphaedit": ("layers", [-3]),
    "rmu": ("layer", 2),
    "lora": ("layers", [7]),
    "ft_l": ("layers", [2]),
    "ft_m": ("layers", [-5]),
}


@pytest.mark.parametrize("name", sorted(LAYERED))
def test_out_of_range_layer_names_method_and_field(name):
    field, value = LAYERED[name]
    cls = get_method(name)
    fine = "-1" if field == "layer" else "[-1]"
    ok = resolve_params(cls, model_type="llama", overrides=[f"{field}={fine}"], num_layers=2)
    assert layer_fields(ok)[field] == (-1,)  # negative indices count from the end
    with pytest.raises(SpecError, match=rf"method '{name}': {field}=-?\d+ is out of range") as e:
        resolve_params(cls, model_type="llama", overrides=[f"{field}={value}"], num_layers=2)
    assert e.value.file == "--set" and e.value.field == field


def test_shipped_qwen2_rome_layer_is_rejected_for_a_two_layer_model(tmp_path):
    """specs/methods/rome.yaml sets layer 5 for qwen2: a 2-layer Qwen2 must not edit layer 1."""
    cls = get_method("rome")
    with pytest.raises(SpecError, match="layer=5 is out of range.*2 layers") as e:
        resolve_params(cls, model_type="qwen2", num_layers=2)
    assert e.value.file.endswith("rome.yaml") and e.value.field == "by_model_type.qwen2.layer"
    assert resolve_params(cls, model_type="qwen2", num_layers=28).layer == 5


def test_apply_refuses_out_of_range_layer_before_touching_the_model():
    """The check runs in UpdateMethod.apply, so the Python API is covered as well as the CLI."""
    import torch

    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rome = get_method("rome")
    method = rome(rome.Params(layer=5, mom2_adjustment=False))
    problem = UpdateProblem(
        kind="edit", requests=(Request("r0", "bira", "eats", "the bira eats", "grass", "fish"),)
    )
    with pytest.raises(KsmithError, match="method 'rome': layer=5 is out of range"):
        method.apply(model, tok, problem)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_rome_apply_batch_does_not_wrap_the_layer():
    """Even called directly, ROME checks the range before taking negatives modulo the depth."""
    tok = make_tokenizer()
    model = make_model("llama", vocab_size=len(tok))
    rome = get_method("rome")
    problem = UpdateProblem(
        kind="edit", requests=(Request("r0", "bira", "eats", "the bira eats", "grass", "fish"),)
    )
    with pytest.raises(KsmithError, match="layer 5 out of range"):
        rome(rome.Params(layer=5, mom2_adjustment=False)).apply_batch(model, tok, problem)


def test_check_layers_without_a_depth_is_a_no_op():
    rome = get_method("rome")
    check_layers("rome", rome.Params(layer=99), None)
