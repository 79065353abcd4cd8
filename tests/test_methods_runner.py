"""The update runner and the update folder: deltas, restore, errors, sequential mode, CLI."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import yaml
from conftest import make_model, make_tokenizer

import ksmith.data
import ksmith.models
from ksmith.errors import KsmithError
from ksmith.methods import (
    MethodParams,
    Request,
    TextPair,
    UpdateMethod,
    UpdateProblem,
    UpdateResult,
    get_method,
)
from ksmith.methods.artifacts import applied_update, read_prefixes, read_update
from ksmith.methods.runner import run_update

SUBJECTS = ["bira", "tolan", "mesu"]
OLD, NEW = "grass", "meat"


def edit_problem(mode="batch", k=3, kind="edit") -> UpdateProblem:
    reqs = tuple(
        Request(f"g0.r{i}", s, "eats", f"{s} eats", OLD, NEW if kind == "edit" else None)
        for i, s in enumerate(SUBJECTS[:k])
    )
    plus = tuple(
        TextPair(p, NEW if kind == "edit" else OLD, r.request_id)
        for r in reqs
        for p in (r.prompt, f"what does {r.subject} eat ? answer :")
    )
    minus = (TextPair("karo lives in", "forest"), TextPair("vindel eats", "fish"))
    return UpdateProblem(kind=kind, requests=reqs, plus=plus, minus=minus, mode=mode)


class _Shift(UpdateMethod):
    """Test method: adds a seeded random change to one row of one layer's MLP output."""

    name = "shift"
    kind = "edit"
    paper = "test"

    def apply_batch(self, model, tokenizer, problem):
        w = dict(model.named_parameters())["transformer.h.1.mlp.c_proj.weight"]
        with torch.no_grad():
            w[:, 3] += torch.randn(w.shape[0])
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}
        return UpdateResult(log={"loss": [1.0, 0.5]})


class _NaN(UpdateMethod):
    """Test method: a finite change in the first group, a NaN weight in the second."""

    name = "nan"
    kind = "edit"
    paper = "test"
    calls = 0

    def apply_batch(self, model, tokenizer, problem):
        self.calls += 1
        with torch.no_grad():
            next(model.parameters())[0, 0] = 1.0 if self.calls == 1 else float("nan")
        return UpdateResult()


class _NaNLoss(UpdateMethod):
    """Test method: finite losses in the first group, an infinite one in the second."""

    name = "nanloss"
    kind = "edit"
    paper = "test"
    calls = 0

    def apply_batch(self, model, tokenizer, problem):
        self.calls += 1
        bad = float("inf") if self.calls == 2 else 0.1
        return UpdateResult(log={"epoch": [{"loss": 0.3}, {"loss": bad}]})


class _Recorder(UpdateMethod):
    name = "recorder"
    kind = "edit"
    paper = "test"

    def __init__(self, params: MethodParams | None = None):
        super().__init__(params)
        self.calls: list[tuple[list[str], list[str]]] = []

    def apply_batch(self, model, tokenizer, problem):
        self.calls.append(
            ([r.request_id for r in problem.requests], [p.request_id for p in problem.plus])
        )
        return UpdateResult(log={"n": len(problem.requests)})


def ft_m(steps=5):
    cls = get_method("ft_m")
    return cls(cls.Params(steps=steps))


def state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), n


def test_runner_saves_only_changed_tensors_and_restores(tmp_path):
    model, tok = make_model("gpt2"), make_tokenizer()
    base = state(model)
    method = _Shift()
    problems = {0: edit_problem(), 1: edit_problem()}
    info = run_update(model, tok, method, problems, tmp_path / "upd", record={"config": "c"})
    assert_same(state(model), base)  # base weights restored after the run
    assert info["config"] == "c" and info["method"] == "shift" and info["kind"] == "edit"
    on_disk = read_update(tmp_path / "upd")
    assert on_disk == json.loads(json.dumps(info))
    for g in on_disk["groups"]:
        assert g["changed_tensors"] == ["transformer.h.1.mlp.c_proj.weight"]
        assert g["changed_parameters"] == 128  # one column of a (128, 32) Conv1D weight
        assert g["wall_seconds"] >= 0 and g["peak_memory_bytes"] > 0
        assert (tmp_path / "upd" / f"g{g['group']}" / "delta.safetensors").is_file()
    spec = yaml.safe_load((tmp_path / "upd" / "spec.yaml").read_text())
    assert spec["method"] == "shift" and spec["mode"] == "batch"
    # Applying the saved delta reproduces the group-1 model (the last one the method made).
    with applied_update(model, tmp_path / "upd", 1) as (updated, prefixes):
        assert updated is model and prefixes == {}
        for n, p in updated.named_parameters():
            torch.testing.assert_close(p, method.after[n], rtol=0, atol=1e-6)
        log = json.loads((tmp_path / "upd" / "g1" / "log.json").read_text())
        assert log["delta_roundoff_max"] <= 1e-6
    assert_same(state(model), base)  # restored bit for bit on exit


def test_applied_update_restores_on_error(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    base = state(model)
    run_update(model, tok, ft_m(), {0: edit_problem()}, tmp_path / "u")
    with pytest.raises(RuntimeError), applied_update(model, tmp_path / "u", 0) as (m, _):
        assert not torch.equal(
            dict(m.named_parameters())["model.layers.1.mlp.down_proj.weight"],
            base["model.layers.1.mlp.down_proj.weight"],
        )
        raise RuntimeError("evaluator crashed")
    assert_same(state(model), base)
    with pytest.raises(KsmithError, match="no group 7"):
        with applied_update(model, tmp_path / "u", 7):
            pass


def test_applied_ft_m_delta_matches_method_output(tmp_path):
    """The saved delta of a real fine-tuning run reproduces the method's weights."""
    model, tok = make_model("gpt2"), make_tokenizer()
    method = ft_m()
    torch.manual_seed(0)
    method.apply(model, tok, edit_problem())
    after = state(model)
    model2 = make_model("gpt2")
    run_update(model2, tok, ft_m(), {0: edit_problem()}, tmp_path / "u")
    with applied_update(model2, tmp_path / "u", 0) as (m, _):
        for n, p in m.named_parameters():
            torch.testing.assert_close(p, after[n], rtol=0, atol=1e-7)


@pytest.mark.parametrize("cls", [_NaN, _NaNLoss])
def test_non_finite_stops_run_without_output(tmp_path, cls):
    model, tok = make_model("gpt2"), make_tokenizer()
    base = state(model)
    with pytest.raises(KsmithError, match=f"method '{cls.name}', group 1: non-finite"):
        run_update(model, tok, cls(), {0: edit_problem(), 1: edit_problem()}, tmp_path / "u")
    assert not (tmp_path / "u").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left either
    assert_same(state(model), base)


def test_unknown_method_lists_known_ones():
    with pytest.raises(KsmithError, match=r"unknown method 'nope'; known: .*ft_m.*lora"):
        get_method("nope")


def test_kind_mismatch(tmp_path):
    model, tok = make_model("gpt2"), make_tokenizer()
    with pytest.raises(
        KsmithError, match="'ft_m' is of kind edit but the requests are of kind unlearn"
    ):
        run_update(
            model, tok, get_method("ft_m")(), {0: edit_problem(kind="unlearn")}, tmp_path / "u"
        )


def test_sequential_applies_requests_one_after_another(tmp_path):
    model, tok = make_model("gpt2"), make_tokenizer()
    rec = _Recorder()
    info = run_update(model, tok, rec, {0: edit_problem(mode="sequential")}, tmp_path / "u")
    assert rec.calls == [
        (["g0.r0"], ["g0.r0", "g0.r0"]),
        (["g0.r1"], ["g0.r1", "g0.r1"]),
        (["g0.r2"], ["g0.r2", "g0.r2"]),
    ]
    assert info["mode"] == "sequential"
    log = json.loads((tmp_path / "u" / "g0" / "log.json").read_text())
    assert sorted(log["method"]) == ["step0", "step1", "step2"]
    batch = _Recorder()
    run_update(model, tok, batch, {0: edit_problem()}, tmp_path / "v")
    assert batch.calls == [(["g0.r0", "g0.r1", "g0.r2"], [f"g0.r{i}" for i in (0, 0, 1, 1, 2, 2)])]


def test_ice_writes_prefixes_and_no_weight_change(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    info = run_update(model, tok, get_method("ice")(), {0: edit_problem()}, tmp_path / "u")
    g = info["groups"][0]
    assert g["artifact"] == "prefix" and g["changed_parameters"] == 0
    prefixes = read_prefixes(tmp_path / "u", 0)
    assert prefixes["g0.r1"] == "New Fact: tolan eats meat\nPrompt: "


# --- CLI: ksmith update / ksmith methods ----------------------------------------------------


def request_rows(kind="edit", groups=2):
    rows = []
    for g in range(groups):
        for i, s in enumerate(SUBJECTS):
            rows.append(
                {
                    "group": g, "request_id": f"g{g}.r{i}", "kind": kind, "level": "leaf",
                    "subject": s, "relation": "eats", "object": OLD,
                    "new_object": NEW if kind == "edit" else "", "prompt": f"{s} eats",
                    "plus_prompts": [f"{s} eats"], "plus_answers": [NEW if kind == "edit" else OLD],
                    "minus_prompts": ["karo lives in"], "minus_answers": ["forest"],
                }
            )  # fmt: skip
    return rows


@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    """Stand-ins for the dataset reader and model loader (other stages' code)."""
    model_dir = tmp_path / "model"
    make_model("gpt2").save_pretrained(model_dir)
    kinds = {"edit.k3": "edit", "unlearn.k3": "unlearn"}

    def load_requests(dir, config):
        return request_rows(kinds[config])

    def load_model(path, device="cpu"):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path).to(device).eval(), make_tokenizer()

    monkeypatch.setattr(ksmith.data, "load_requests", load_requests, raising=False)
    monkeypatch.setattr(ksmith.data, "read_card", lambda d: {"fingerprint": "abc"}, raising=False)
    monkeypatch.setattr(ksmith.data, "load_corpus", lambda d: ["tolan eats grass ."], raising=False)
    monkeypatch.setattr(ksmith.models, "load_model", load_model, raising=False)
    monkeypatch.setattr(ksmith.models, "model_fingerprint", lambda p: "m123", raising=False)
    return model_dir


def cli(argv):
    from ksmith.methods import commands

    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_update_end_to_end(fake_stages, tmp_path):
    out = tmp_path / "upd"
    argv = ["update", "--model", str(fake_stages), "--dataset", "D", "--config", "edit.k3",
            "--method", "ft_m", "--set", "steps=2", "--groups", "1", "--device", "cpu",
            "--out", str(out)]  # fmt: skip
    assert cli(argv) == 0
    info = read_update(out)
    assert info["dataset_fingerprint"] == "abc" and info["model"]["fingerprint"] == "m123"
    assert info["params"]["steps"] == 2 and [g["group"] for g in info["groups"]] == [1]
    assert (out / "g1" / "delta.safetensors").is_file() and not (out / "g0").exists()
    assert (out / ".ksmith-output").is_file()


def test_problems_carry_the_world_corpus_and_model_fingerprint(fake_stages, tmp_path, monkeypatch):
    """ROME/MEMIT/AlphaEdit compute key statistics on the dataset's corpus, cached by model."""
    import ksmith.methods.runner as runner

    seen = {}

    def record(model, tokenizer, method, problems, out, **kw):
        seen.update(problems)
        return {"groups": [], "method": method.name, "wall_seconds": 0.0}

    monkeypatch.setattr(runner, "run_update", record)
    argv = ["update", "--model", str(fake_stages), "--dataset", "D", "--config", "edit.k3",
            "--method", "ft_m", "--device", "cpu", "--out", str(tmp_path / "u")]  # fmt: skip
    cli(argv)
    assert seen and all(p.corpus == ("tolan eats grass .",) for p in seen.values())
    assert all(p.model_fingerprint == "m123" for p in seen.values())


def test_cli_update_errors(fake_stages, tmp_path):
    base = ["update", "--model", str(fake_stages), "--dataset", "D", "--device", "cpu",
            "--out", str(tmp_path / "u")]  # fmt: skip
    with pytest.raises(KsmithError, match="of kind edit but config unlearn.k3 holds unlearn"):
        cli([*base, "--config", "unlearn.k3", "--method", "ft_m"])
    with pytest.raises(KsmithError, match="unknown method 'zzz'"):
        cli([*base, "--config", "edit.k3", "--method", "zzz"])
    with pytest.raises(KsmithError, match="--set.*'stepz'"):
        cli([*base, "--config", "edit.k3", "--method", "ft_m", "--set", "stepz=3"])
    with pytest.raises(KsmithError, match=r"no group\(s\) \[5\]"):
        cli([*base, "--config", "edit.k3", "--method", "ft_m", "--groups", "5"])
    assert not (tmp_path / "u").exists()


def test_cli_methods_table_and_json(capsys):
    assert cli(["methods"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["name", "kind", "paper"]
    assert any(line.startswith("ft_m ") and "2401.01286" in line for line in out.splitlines())
    assert cli(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert {"ft_l", "ft_m", "lora", "ice"} <= set(by_name)
    assert by_name["lora"]["kind"] == "edit" and "2106.09685" in by_name["lora"]["paper"]
