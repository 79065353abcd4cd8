"""Numbers and files checked at the boundary (issue 16, part 6): non-finite weights, updates
that do not name their model and dataset, unreadable weight files and out-of-range options stop
a command with `error: FILE/field: ...`, write nothing, and never show a traceback."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_model, make_tokenizer
from leaderboard_fixtures import CONFIGS, make_dataset

from ksmith.cli import main
from ksmith.errors import KsmithError
from ksmith.evaluate.runner import EvalOptions, evaluate
from ksmith.methods.artifacts import applied_update, save_delta


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("bds") / "dataset")


def _model_dir(path, *, poison: bool = False):
    model, tok = make_model("gpt2"), make_tokenizer()
    if poison:
        with torch.no_grad():
            next(model.parameters())[0, 0] = float("nan")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _evaluate_cli(model, dataset, out, *extra):
    argv = ["evaluate", "--model", str(model), "--dataset", str(dataset)]
    argv += ["--config", CONFIGS[0], "--out", str(out), "--no-cache", *extra]
    return main(argv)


def test_model_with_nan_weights_is_not_evaluated(tmp_path, dataset, capsys):
    model = _model_dir(tmp_path / "model", poison=True)
    assert _evaluate_cli(model, dataset, tmp_path / "res") == 2
    err = capsys.readouterr().err
    assert "non-finite weights" in err and "Traceback" not in err
    assert not (tmp_path / "res").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder either


def test_truncated_weights_file_is_an_error_naming_it(tmp_path, dataset, capsys):
    model = _model_dir(tmp_path / "model")
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert _evaluate_cli(model, dataset, tmp_path / "res") == 2
    err = capsys.readouterr().err
    assert f"error: {weights}: unreadable weights file" in err and "Traceback" not in err
    weights.write_bytes(b"\x01\x02")
    assert _evaluate_cli(model, dataset, tmp_path / "res") == 2
    assert f"{weights}: unreadable weights file" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    ("flag", "value", "low"),
    [("--batch-size", "0", 1), ("--batch-size", "-3", 1), ("--seed", "-1", 0)],
)
def test_out_of_range_options_are_errors(tmp_path, dataset, capsys, flag, value, low):
    model = _model_dir(tmp_path / "model")
    assert _evaluate_cli(model, dataset, tmp_path / "res", flag, value) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}: must be at least {low}, got {value}" in err and "Traceback" not in err
    assert not (tmp_path / "res").exists()


def _update(folder, **record):
    folder.mkdir(parents=True)
    (folder / "g0").mkdir()
    (folder / "update.json").write_text(json.dumps({"method": "ft_l", **record}))
    return folder


@pytest.mark.parametrize("missing", ["dataset_fingerprint", "model.fingerprint"])
def test_update_without_fingerprints_is_refused(tmp_path, dataset, missing):
    from ksmith.data import read_card
    from ksmith.models import model_fingerprint

    model = _model_dir(tmp_path / "model")
    record = {
        "dataset_fingerprint": read_card(dataset)["fingerprint"],
        "model": {"path": str(model), "fingerprint": model_fingerprint(model)},
    }
    if missing == "dataset_fingerprint":
        del record["dataset_fingerprint"]
    else:
        del record["model"]["fingerprint"]
    up = _update(tmp_path / "upd", **record)
    with pytest.raises(KsmithError, match=f"field '{missing}' is missing"):
        evaluate(
            str(model),
            dataset,
            CONFIGS[0],
            out=tmp_path / "res",
            update=up,
            options=EvalOptions(use_cache=False),
        )
    assert not (tmp_path / "res").exists()


def test_non_finite_delta_is_refused_and_model_untouched(tmp_path):
    model = make_model("gpt2")
    name = "transformer.h.1.mlp.c_proj.weight"
    before = dict(model.named_parameters())[name].detach().clone()
    bad = torch.zeros_like(before)
    bad[0, 0] = float("inf")
    (tmp_path / "u" / "g0").mkdir(parents=True)
    save_delta(tmp_path / "u" / "g0" / "delta.safetensors", {name: bad})
    with pytest.raises(KsmithError, match=f"delta.safetensors/{name}: non-finite"):
        with applied_update(model, tmp_path / "u", 0):
            pass
    assert torch.equal(dict(model.named_parameters())[name].detach(), before)


def test_diverging_ft_l_writes_no_update(tmp_path):
    from test_methods_runner import edit_problem

    from ksmith.methods import get_method
    from ksmith.methods.runner import run_update

    cls = get_method("ft_l")
    method = cls(cls.Params(lr=1e30, norm_constraint=None, steps=2))
    model, tok = make_model("gpt2"), make_tokenizer()
    with pytest.raises(KsmithError, match="non-finite"):
        run_update(model, tok, method, {0: edit_problem()}, tmp_path / "u")
    assert list(tmp_path.iterdir()) == []


def test_evaluate_out_naming_an_input_is_refused(tmp_path, dataset, capsys):
    from leaderboard_fixtures import tree_digest

    model = _model_dir(tmp_path / "model")
    before = tree_digest(model)
    assert _evaluate_cli(model, dataset, model) == 2
    assert "refusing to write over an input" in capsys.readouterr().err
    assert tree_digest(model) == before


@pytest.mark.parametrize("damage", ["truncate", "nan"])
def test_damaged_group_model_is_refused(tmp_path, damage):
    """An update that adds modules stores each group's full model: checked like any model."""
    base = make_model("gpt2")
    gmodel = tmp_path / "u" / "g0" / "model"
    _model_dir(gmodel, poison=damage == "nan")
    if damage == "truncate":
        weights = gmodel / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    needle = "unreadable weights file" if damage == "truncate" else "non-finite weights"
    with pytest.raises(KsmithError, match=needle):
        with applied_update(base, tmp_path / "u", 0):
            pass
