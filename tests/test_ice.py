"""ICE: in-context editing writes prefixes, never weights."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.methods import Request, TextPair, UpdateProblem, get_method
from ksmith.methods.runner import run_update

REQS = (
    Request("g0.r0", "bira", "eats", "bira eats", "grass", "meat"),
    Request("g0.r1", "tolan", "lives", "tolan lives in", "forest", "desert"),
)


def problem(kind="edit", mode="batch"):
    reqs = (
        REQS
        if kind == "edit"
        else tuple(
            Request(r.request_id, r.subject, r.relation, r.prompt, r.old_object, None) for r in REQS
        )
    )
    plus = tuple(TextPair(r.prompt, r.new_object or r.old_object, r.request_id) for r in reqs)
    return UpdateProblem(kind=kind, requests=reqs, plus=plus, mode=mode)


def test_ice_prefix_states_new_fact_and_changes_no_weight():
    model, tok = make_model("gpt2"), make_tokenizer()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = get_method("ice")().apply(model, tok, problem())
    assert res.prompt_prefix == {
        "g0.r0": "New Fact: bira eats meat\nPrompt: ",
        "g0.r1": "New Fact: tolan lives in desert\nPrompt: ",
    }
    assert not res.added_modules
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_ice_group_scope_and_templates():
    cls = get_method("ice")
    params = cls.Params(scope="group", template="{facts} .", fact="{subject} : {target}",
                        separator=" . ")  # fmt: skip
    res = cls(params).apply(make_model("gpt2"), make_tokenizer(), problem())
    assert set(res.prompt_prefix.values()) == {"bira : meat . tolan : desert ."}
    seq = cls(params).apply(make_model("gpt2"), make_tokenizer(), problem(mode="sequential"))
    assert seq.prompt_prefix["g0.r1"] == "tolan : desert ."  # one request at a time
    with pytest.raises(ValueError, match="must contain"):
        cls.Params(template="no placeholder")
    with pytest.raises(ValueError, match="bad placeholder"):
        cls.Params(fact="{object}")


def test_ice_is_edit_only(tmp_path):
    assert get_method("ice").kind == "edit"
    with pytest.raises(
        KsmithError, match="'ice' is of kind edit but the requests are of kind unlearn"
    ):
        run_update(make_model("gpt2"), make_tokenizer(), get_method("ice")(),
                   {0: problem(kind="unlearn")}, tmp_path / "u")  # fmt: skip
