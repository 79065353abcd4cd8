"""`ksmith export-model`: one group's updated model as a plain Hugging Face folder."""

from __future__ import annotations

import json

import pytest
import torch

from ksmith.cli import main
from ksmith.errors import KsmithError
from ksmith.methods import Request, UpdateMethod, UpdateProblem, UpdateResult, get_method
from ksmith.methods.artifacts import applied_update
from ksmith.methods.runner import run_update
from ksmith.models import model_fingerprint
from ksmith.models.export import EXPORT_JSON, export_model
from tests.conftest import make_model, make_tokenizer


class _Bump(UpdateMethod):
    """Test method: a group-dependent change to one MLP weight row."""

    name = "bump"
    kind = "edit"
    paper = "test"

    def apply_batch(self, model, tokenizer, problem):
        w = dict(model.named_parameters())["model.layers.1.mlp.down_proj.weight"]
        with torch.no_grad():
            w[0] += 0.25 * (1 + problem.seed)
        return UpdateResult()


def problems():
    req = (Request("g.r0", "bira", "eats", "bira eats", "grass", "meat"),)
    return {g: UpdateProblem(kind="edit", requests=req, seed=g) for g in (0, 1)}


@pytest.fixture
def base(tmp_path):
    tok = make_tokenizer()
    path = tmp_path / "base"
    make_model("llama", vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def update_with(method, base, out):
    from ksmith.models import load_model

    model, tok = load_model(base, device="cpu")
    record = {"model": {"path": str(base), "fingerprint": model_fingerprint(base)}}
    run_update(model, tok, method, problems(), out, record=record)
    return model


def test_exported_folder_is_the_updated_model(base, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = update_with(_Bump(), base, tmp_path / "upd")
    out = tmp_path / "exported"
    assert main(["export-model", "--model", str(base), "--update", str(tmp_path / "upd"),
                 "--group", "1", "--out", str(out)]) == 0  # fmt: skip
    exported = AutoModelForCausalLM.from_pretrained(out)  # a normal HF folder
    AutoTokenizer.from_pretrained(out)
    with applied_update(model, tmp_path / "upd", 1) as (updated, _):
        want = {n: p.detach().clone() for n, p in updated.named_parameters()}
    got = dict(exported.named_parameters())
    assert set(got) == set(want)
    assert all(torch.equal(got[n].detach(), want[n]) for n in want)
    name = "model.layers.1.mlp.down_proj.weight"
    assert not torch.equal(got[name].detach(), dict(model.named_parameters())[name].detach())
    record = json.loads((out / EXPORT_JSON).read_text())
    assert record["update"]["method"] == "bump" and record["update"]["group"] == 1


def test_in_context_updates_are_refused(base, tmp_path):
    update_with(get_method("ice")(), base, tmp_path / "ice")
    with pytest.raises(KsmithError, match="method 'ice' updates in context"):
        export_model(base, tmp_path / "ice", 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_wrong_base_model_or_group_is_refused(base, tmp_path):
    update_with(_Bump(), base, tmp_path / "upd")
    other = tmp_path / "other"
    make_model("llama", vocab_size=len(make_tokenizer()), seed=1).save_pretrained(other)
    make_tokenizer().save_pretrained(other)
    with pytest.raises(KsmithError, match="not on"):
        export_model(other, tmp_path / "upd", 0, tmp_path / "out")
    with pytest.raises(KsmithError, match="no group 7; groups: 0, 1"):
        export_model(base, tmp_path / "upd", 7, tmp_path / "out")
    assert not (tmp_path / "out").exists()
