"""SERAC (arXiv 2206.06520) and the training split of the world it is trained on.

Defining property: where the scope classifier says "out of scope" the base model's logits come
out untouched (bit for bit, in padded, packed and generated forwards); where it says "in scope"
the output is the counterfactual model's: the base model with the retrieved edit in its context
(what ICE scores). A tiny random llama over the dataset's own vocabulary stands in for the
world model: these properties hold for any weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from trained_fixtures import assert_refuses_another_model, edit_configs, make_world

from ksmith.errors import KsmithError
from ksmith.methods.base import Request
from ksmith.methods.serac import SERAC, ScopeClassifier, SERACMemory, block_path, prefix_ids
from ksmith.methods.trained.split import build_split, evaluated_subjects


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(dataset dir, model dir, model, tokenizer): a tiny generated world and a random llama."""
    return make_world(tmp_path_factory.mktemp("serac"))


def test_split_is_disjoint_from_evaluated_subjects_and_seeded(world):
    dataset, *_ = world
    split = build_split(dataset, n_train=40, n_heldout=10, seed=0)
    evaluated = evaluated_subjects(dataset)
    assert evaluated  # the configs do ask about subjects
    train_subjects = {e.subject for e in split.train}
    held_subjects = {e.subject for e in split.heldout}
    assert not (train_subjects | held_subjects) & evaluated
    assert not train_subjects & held_subjects  # held-out edits are on new subjects
    assert len(split.train) == 40 and len(split.heldout) == 10
    assert len({(e.subject, e.relation, e.new_object) for e in split.train}) == 40
    for e in split.train:
        assert e.new_object != e.object and e.prompt in e.in_scope()
        assert e.minus_prompts and not set(e.minus_prompts) & set(e.in_scope())
    again = build_split(dataset, n_train=40, n_heldout=10, seed=0)
    assert again.fingerprint == split.fingerprint
    assert build_split(dataset, n_train=40, n_heldout=10, seed=1).fingerprint != split.fingerprint
    with pytest.raises(KsmithError, match="fewer than"):
        build_split(dataset, n_train=10**6, n_heldout=1)
    assert all(e.minus_answers for e in split.heldout)


def _memory(model, tok, bias: float) -> tuple[SERACMemory, Request]:
    """A memory with one edit whose classifier always answers `bias` (its last layer zeroed)."""
    from ksmith.methods.serac import _bos_added, last_token_features

    g = ScopeClassifier(model.config.hidden_size, 8, 8)
    with torch.no_grad():
        g.mlp[2].weight.zero_()
        g.mlp[2].bias.fill_(bias)
    r = Request("r0", "bira", "eats", "bira eats", "grass", "meat")
    mem = SERACMemory(model, block_path(model, -1), g, torch.zeros(0, 32), [], [], 0.5, None)
    mem.bos_id = _bos_added(tok)
    key = last_token_features(model, tok, [r.prompt], -1)[0]
    prefix = prefix_ids(tok, SERAC().descriptor(r))
    mem.add(key, prefix, r.request_id)
    return mem, r


PAIRS = [
    ("Nedo eats", "meat"),
    ("Where does Nedo live?", "forest"),
    ("bira eats", "grass"),
    ("The color of bira is", "red"),
]


def _backend(model, tok):
    from ksmith.evaluate.hf import HFBackend

    return HFBackend(model, tok, batch_size=2, pack_length=16, onednn=False)


def test_out_of_scope_leaves_the_base_answer_untouched(world):
    _d, _f, model, tok = world
    backend = _backend(model, tok)
    assert backend.tree_attention_supported()  # the packed path is exercised too
    with torch.inference_mode():
        before_ll = backend.loglikelihood(PAIRS)
        before_gen = backend.generate([p for p, _ in PAIRS], max_new_tokens=3)
        ids = tok([p for p, _ in PAIRS[:2]], return_tensors="pt", padding=True)
        before_logits = model(**ids).logits
    mem, _ = _memory(model, tok, bias=-1e4)
    try:
        with torch.inference_mode():
            assert backend.loglikelihood(PAIRS) == before_ll
            assert backend.generate([p for p, _ in PAIRS], max_new_tokens=3) == before_gen
            assert torch.equal(model(**ids).logits, before_logits)
    finally:
        mem.detach()
    assert "generate" not in model.__dict__  # the KV-cache switch goes with the memory


def test_in_scope_answers_with_the_edit_in_context(world):
    """Always in scope: every score equals the base model's with ICE's prefix in the prompt."""
    from ksmith.evaluate.scoring import with_prefix

    _d, _f, model, tok = world
    backend = _backend(model, tok)
    mem, r = _memory(model, tok, bias=1e4)
    prefix = SERAC().descriptor(r)
    try:
        with torch.inference_mode():
            routed = backend.loglikelihood(PAIRS)
            gen = backend.generate([p for p, _ in PAIRS], max_new_tokens=3)
    finally:
        mem.detach()
    with torch.inference_mode():
        ice = backend.loglikelihood([(with_prefix(p, prefix), a) for p, a in PAIRS])
        ice_gen = backend.generate([with_prefix(p, prefix) for p, _ in PAIRS], max_new_tokens=3)
    assert routed == pytest.approx(ice, abs=1e-4)
    assert gen == ice_gen


def test_routing_is_per_input(world):
    """In one padded batch, only the input the classifier puts in scope gets the edit."""
    _d, _f, model, tok = world
    mem, r = _memory(model, tok, bias=1e4)
    from ksmith.methods.serac import last_token_features

    target = last_token_features(model, tok, ["Nedo eats"], -1)[0]

    def scope(h):  # in scope exactly where the feature is that of "Nedo eats"
        hit = (h.float() - target).abs().amax(dim=1) < 1e-5
        return hit.float(), torch.zeros(len(h), dtype=torch.long)

    mem.scope = scope
    prompts = ["Nedo eats", "Where does Nedo live?"]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="right")
    try:
        with torch.inference_mode():
            out = model(**enc).logits
    finally:
        mem.detach()
    with torch.inference_mode():
        base = model(**enc).logits
        cf_ids = tok(SERAC().descriptor(r) + "Nedo eats", return_tensors="pt")
        cf = model(**cf_ids).logits[0, -1]
    n0 = int(enc.attention_mask[0].sum())
    assert torch.allclose(out[0, n0 - 1], cf, atol=1e-5)  # the in-scope input: edited
    assert torch.equal(out[0, : n0 - 1], base[0, : n0 - 1])  # its shorter prefixes: not
    assert torch.equal(out[1], base[1])  # the other input: untouched


def test_train_editor_card_and_update(world, tmp_path):
    from ksmith.methods.artifacts import applied_update
    from ksmith.methods.attach import attached
    from ksmith.methods.commands import UpdateRun, update_from_dataset
    from ksmith.methods.trained.commands import train_editor

    dataset, folder, model, tok = world
    editor = tmp_path / "editor"
    settings = ("n_train=60", "n_heldout=12", "log_every=20", "batch_edits=8")
    card = train_editor("serac", dataset, folder, editor, overrides=settings, steps=60,
                        progress=False)  # fmt: skip
    saved = json.loads((editor / "card.json").read_text())
    assert saved["method"] == "serac" and saved["split"]["train_edits"] == 60
    assert [p["step"] for p in saved["curve"]] == [20, 40, 60]
    assert saved["curve"][-1]["train_loss"] < saved["curve"][0]["train_loss"]
    assert 0.0 <= saved["heldout"]["accuracy"] <= 1.0
    # deterministic: the same split and settings give the same classifier
    from ksmith.methods.serac import SERACTraining
    from ksmith.methods.trained.serac_train import train_serac

    split = build_split(dataset, n_train=20, n_heldout=6, seed=0)
    t = SERACTraining(steps=5, log_every=5, batch_edits=4)
    one, curve, _ = train_serac(model, tok, split, t, progress=False)
    two, _, _ = train_serac(model, tok, split, t, progress=False)
    assert all(torch.equal(one[k], two[k]) for k in one) and len(curve) == 1
    assert card["split"]["fingerprint"] == saved["split"]["fingerprint"]

    config = edit_configs(dataset)[0]
    update = tmp_path / "update"
    run = UpdateRun(model=str(folder), dataset=str(dataset), config=config, method="serac",
                    out=str(update), device="cpu", overrides=(f"editor_path={editor}",))  # fmt: skip
    info = update_from_dataset(run)
    assert info["method"] == "serac"
    with applied_update(model, update, 0) as (updated, prefixes):
        mems = [a for a in attached(updated) if isinstance(a, SERACMemory)]
        assert len(mems) == 1 and len(mems[0]) >= 1 and prefixes == {}
    assert not attached(model)

    with pytest.raises(KsmithError, match="editor_path is not set"):
        update_from_dataset(UpdateRun(model=str(folder), dataset=str(dataset), config=config,
                                      method="serac", out=str(tmp_path / "u2"), device="cpu"))  # fmt: skip
    assert_refuses_another_model(tmp_path, dataset, config, "serac", editor, tok)


def test_evaluation_of_an_out_of_scope_memory_changes_nothing(world, tmp_path):
    """Through `ksmith evaluate` (packed scoring, generation, drift): a memory whose classifier
    never fires (threshold 1) leaves every prediction as it was before the update."""
    import pandas as pd

    from ksmith.data import load_probes
    from ksmith.evaluate.runner import EvalOptions, evaluate
    from ksmith.methods.commands import UpdateRun, update_from_dataset
    from ksmith.methods.trained.commands import train_editor

    dataset, folder, _model, _tok = world
    editor = tmp_path / "editor"
    train_editor("serac", dataset, folder, editor, steps=5,
                 overrides=("n_train=20", "n_heldout=4", "log_every=5"), progress=False)  # fmt: skip
    config = edit_configs(dataset)[0]
    update = tmp_path / "update"
    update_from_dataset(
        UpdateRun(
            model=str(folder),
            dataset=str(dataset),
            config=config,
            method="serac",
            out=str(update),
            device="cpu",
            overrides=(f"editor_path={editor}", "threshold=1.0"),
        )  # fmt: skip
    )
    options = EvalOptions(device="cpu", cache_dir=tmp_path / "before", fluency_prompts=0,
                          drift_prompts=4, n_boot=10)  # fmt: skip
    evaluate(str(folder), dataset, config, out=tmp_path / "eval", update=update, options=options)
    rows = pd.read_parquet(tmp_path / "eval" / "predictions.parquet")
    keys = ["probe_id", "group", "mode"]
    before = rows[rows.stage == "before"].set_index(keys).sort_index()
    after = rows[rows.stage == "after"].set_index(keys).sort_index()
    assert len(after) == len(before) > 0 and not after.changed.any()
    # where the expected answer stays, the score (log-likelihood, token accuracy) must too, up
    # to float rounding: the before stage scores both groups' probes in one batch, the after
    # stage each group's alone, and a reasoned probe's long prompt (with the model's recall)
    # is packed with other rows then (1e-7 apart, measured)
    same = {
        p["id"] for p in load_probes(dataset, config) if p["answer_before"] == p["answer_after"]
    }
    kept = [i for i in after.index if i[0] in same]
    assert kept
    assert after.loc[kept].score.tolist() == pytest.approx(
        before.loc[kept].score.tolist(), rel=1e-6, abs=1e-9
    )
