"""MEND (arXiv 2110.11309): gradient-decomposition editor networks.

Defining properties: the applied update of each edited weight is -alpha times a sum of rank-1
outer products delta~ u~^T, one per token of the edit batch (so its rank is at most the number
of tokens, and at initialisation it is exactly a gradient step on the edit loss); and training
on the world's split lowers the edit loss of held-out edits (on subjects no training edit has).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model
from trained_fixtures import assert_refuses_another_model, edit_configs, make_world

from ksmith.methods.mend import MENDEditor, edit_loss, edited_paths, weight_shape
from ksmith.methods.train_utils import encode_pairs


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("mend"))


def _editor(model, paths, rank=4, alpha=0.5):
    editor = MENDEditor(paths, [weight_shape(model, p) for p in paths], rank, alpha)
    for net in editor.nets.values():  # identity standardisation: mean 0, variance 1
        net.count.fill_(2.0)
        net.m2.fill_(1.0)
    return editor


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_identity_editor_is_a_gradient_step(arch, tiny_tokenizer):
    """With U = 0 and unit standardisation, g is the identity: sum_i delta^i u^i^T is the
    gradient of the edit loss, which autograd gives directly."""
    model = make_model(arch)
    paths = edited_paths(model, [-1], ["mlp_in", "mlp_out"])
    editor = _editor(model, paths, alpha=0.5)
    batch = encode_pairs(
        tiny_tokenizer, ["bira eats", "where does tolan live ?"], ["meat", "forest"]
    )
    deltas = editor.deltas(model, batch)
    loss = edit_loss(model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                     batch)  # fmt: skip
    weights = [dict(model.named_parameters())[f"{p}.weight"] for p in paths]
    grads = torch.autograd.grad(loss, weights)
    for p, g in zip(paths, grads, strict=True):
        assert torch.allclose(deltas[f"{p}.weight"], -0.5 * g, atol=1e-6, rtol=1e-4)


def test_update_is_a_sum_of_rank_one_products(tiny_tokenizer):
    """A trained-looking editor (random U): each weight's update has rank <= the batch's
    tokens, fewer than the weight's dimensions."""
    model = make_model("llama", hidden=32)
    paths = edited_paths(model, [0, 1], ["mlp_in", "mlp_out"])
    editor = _editor(model, paths)
    torch.manual_seed(0)
    with torch.no_grad():
        for net in editor.nets.values():
            net.U1.normal_()
            net.U2.normal_()
            net.s1.normal_()
            net.o2.normal_()
    batch = encode_pairs(tiny_tokenizer, ["bira eats", "tolan lives in the"], ["meat", "forest"])
    tokens = int(batch.attention_mask.sum())
    with torch.no_grad():
        deltas = editor.deltas(model, batch)
    for name, d in deltas.items():
        assert 0 < torch.linalg.matrix_rank(d) <= tokens < min(d.shape), name


def test_every_editor_parameter_learns_from_the_first_step(tiny_tokenizer):
    """At the identity init every pre-activation is 0: the nonlinearity must pass gradient
    there (the reference clamps instead of relu), or U, b, s, o would never move."""
    model = make_model("llama")
    paths = edited_paths(model, [-1], ["mlp_in", "mlp_out"])
    editor = _editor(model, paths)
    batch = encode_pairs(tiny_tokenizer, ["bira eats"], ["meat"])
    deltas = editor.deltas(model, batch)
    sum(d.square().sum() for d in deltas.values()).backward()
    for name, p in editor.named_parameters():
        if name.split(".")[-1] in ("U1", "U2", "b1", "b2", "alpha"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_lowers_heldout_edit_loss_and_update_reuses_it(world, tmp_path):
    from ksmith.methods.commands import UpdateRun, update_from_dataset
    from ksmith.methods.trained.commands import train_editor

    dataset, folder, model, tok = world
    editor = tmp_path / "editor"
    settings = ("n_train=60", "n_heldout=8", "log_every=40", "rank=8", "edit_lr=0.01")
    card = train_editor("mend", dataset, folder, editor, overrides=settings, steps=80,
                        progress=False)  # fmt: skip
    saved = json.loads((editor / "card.json").read_text())
    assert saved["method"] == "mend" and saved["editor"]["paths"]
    curve = saved["curve"]
    assert [p["step"] for p in curve] == [0, 40, 80]
    assert curve[-1]["heldout"]["edit_loss"] < curve[0]["heldout"]["edit_loss"]
    assert card["heldout"]["edits"] == 8

    config = edit_configs(dataset)[0]
    update = tmp_path / "update"
    run = UpdateRun(model=str(folder), dataset=str(dataset), config=config, method="mend",
                    out=str(update), device="cpu", overrides=(f"editor_path={editor}",))  # fmt: skip
    info = update_from_dataset(run)
    assert all(g["changed_parameters"] > 0 for g in info["groups"])
    assert_refuses_another_model(tmp_path, dataset, config, "mend", editor, tok)
