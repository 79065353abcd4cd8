"""Lifelong editing evaluated along the stream: checkpoints of a sequential update, their
artifacts, their evaluation, the report's section and the params field (docs/lifelong.md)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_model, make_tokenizer

from ksmith.errors import KsmithError
from ksmith.methods import Request, TextPair, UpdateProblem, get_method
from ksmith.methods.artifacts import (
    applied_update,
    checkpoint_dir,
    read_checkpoint,
    read_prefixes,
    read_update,
)
from ksmith.methods.runner import run_update

SUBJECTS = ["bira", "tolan", "mesu"]
NEW = ["meat", "fish", "seeds"]


def stream(k: int = 3, mode: str = "sequential", kind: str = "edit") -> UpdateProblem:
    """k requests on "<s> eats grass" (edit: -> a new food each), with a shared retain set."""
    reqs = tuple(
        Request(f"g0.r{i}", s, "eats", f"{s} eats", "grass", NEW[i] if kind == "edit" else None)
        for i, s in enumerate(SUBJECTS[:k])
    )
    plus = tuple(
        TextPair(p, r.new_object or r.old_object, r.request_id)
        for r in reqs
        for p in (r.prompt, f"question : what does {r.subject} eat ? answer :")
    )
    minus = (TextPair("karo lives in the", "forest"), TextPair("vindel eats", "fish"))
    return UpdateProblem(kind=kind, requests=reqs, plus=plus, minus=minus, mode=mode)


def ft_m():
    cls = get_method("ft_m")
    return cls(cls.Params(steps=3, lr=0.05))


def _method(name: str):
    """A fresh instance of a method with small budgets."""
    cls = get_method(name)
    small = {
        "ft_m": {"steps": 3, "lr": 0.05},
        "rome": {"layer": 0, "mom2_adjustment": False, "v_num_grad_steps": 5},
        "ga": {"steps": 3},
        "grace": {"n_iter": 5},
    }[name]
    return cls(cls.Params(**small))


PROMPTS = ["bira eats", "tolan eats", "mesu eats", "karo lives in the"]


def _logits(model, tok):
    batch = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits


def state_after(model, tok, method, problem):
    """(weights, logits) after applying `problem` to a copy of `model`, seeded like the
    runner; attached memories (GRACE) act in the logits and are then removed."""
    from ksmith.methods import attach

    model = copy.deepcopy(model)
    torch.manual_seed(problem.seed)
    method.apply(model, tok, problem)
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    logits = _logits(model, tok)
    attach.detach_all(model)
    return weights, logits


@pytest.mark.parametrize("name", ["ft_m", "rome", "ga", "grace"])
def test_checkpoint_equals_the_first_edits_applied_directly(tmp_path, monkeypatch, name):
    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path / "cache"))
    model, tok = make_model("llama", vocab_size=len(make_tokenizer())), make_tokenizer()
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    base_logits = _logits(model, tok)
    problem = stream(kind=get_method(name).kind)
    out = tmp_path / "u"
    info = run_update(model, tok, _method(name), {0: problem}, out, checkpoints=[1, 2, 3, 5])
    # Counts >= k are skipped: the state after all 3 edits is the group's own artifact.
    assert info["checkpoints"] == [1, 2, 3, 5]
    assert info["groups"][0]["checkpoints"] == [1, 2]
    assert not checkpoint_dir(out, 0, 3).exists()
    seen = []
    for n in (1, 2):
        record = read_checkpoint(out, 0, n)
        assert record["requests"] == [f"g0.r{i}" for i in range(n)]
        assert record["artifact"] == info["groups"][0]["artifact"]  # the group's own form
        first_n = replace(problem, requests=problem.requests[:n])
        weights, logits = state_after(model, tok, _method(name), first_n)
        with applied_update(model, out, 0, checkpoint=n) as (updated, prefixes):
            assert prefixes == {}
            got = dict(updated.named_parameters())
            for param, want in weights.items():
                torch.testing.assert_close(got[param].detach(), want, rtol=0, atol=1e-6)
            got_logits = _logits(updated, tok)
            torch.testing.assert_close(got_logits, logits, rtol=1e-5, atol=1e-5)
        seen.append(got_logits)
        # On exit the base model is back, bit for bit, without any attachment.
        assert all(torch.equal(p, base[p_]) for p_, p in model.named_parameters())
        assert torch.equal(_logits(model, tok), base_logits)
    # The second edit did something the first had not.
    assert not torch.allclose(seen[0], seen[1])


def test_declaring_checkpoints_leaves_the_final_state_unchanged(tmp_path):
    model, tok = make_model("llama", vocab_size=len(make_tokenizer())), make_tokenizer()
    plain = run_update(model, tok, ft_m(), {0: stream()}, tmp_path / "plain")
    with_cp = run_update(model, tok, ft_m(), {0: stream()}, tmp_path / "cp", checkpoints=[1, 2])
    a = (tmp_path / "plain" / "g0" / "delta.safetensors").read_bytes()
    b = (tmp_path / "cp" / "g0" / "delta.safetensors").read_bytes()
    assert a == b
    # Without checkpoints the record has no trace of them (today's update.json).
    assert "checkpoints" not in plain and "checkpoints" not in plain["groups"][0]
    assert with_cp["groups"][0]["changed_parameters"] == plain["groups"][0]["changed_parameters"]


def test_batch_mode_record_has_no_checkpoints_and_refuses_them(tmp_path):
    model, tok = make_model("llama", vocab_size=len(make_tokenizer())), make_tokenizer()
    info = run_update(model, tok, ft_m(), {0: stream(mode="batch")}, tmp_path / "b")
    assert "checkpoints" not in info and "checkpoints" not in info["groups"][0]
    assert not (tmp_path / "b" / "g0" / "checkpoints").exists()
    with pytest.raises(KsmithError, match="need mode sequential"):
        run_update(model, tok, ft_m(), {0: stream(mode="batch")}, tmp_path / "c", checkpoints=[1])
    for bad in ([2, 1], [0, 1], [1, 1]):
        with pytest.raises(KsmithError, match="checkpoints"):
            run_update(model, tok, ft_m(), {0: stream()}, tmp_path / "d", checkpoints=bad)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_ice_checkpoints_hold_the_prefixes_made_so_far(tmp_path):
    model, tok = make_model("llama", vocab_size=len(make_tokenizer())), make_tokenizer()
    run_update(model, tok, get_method("ice")(), {0: stream()}, tmp_path / "u", checkpoints=[1, 2])
    final = read_prefixes(tmp_path / "u", 0)
    assert sorted(final) == ["g0.r0", "g0.r1", "g0.r2"]
    for n in (1, 2):
        assert read_checkpoint(tmp_path / "u", 0, n)["artifact"] == "prefix"
        got = read_prefixes(tmp_path / "u", 0, checkpoint=n)
        assert got == {f"g0.r{i}": final[f"g0.r{i}"] for i in range(n)}
        with applied_update(model, tmp_path / "u", 0, checkpoint=n) as (_, prefixes):
            assert prefixes == got


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    model, tok = make_model("llama", vocab_size=len(make_tokenizer())), make_tokenizer()
    run_update(model, tok, get_method("ice")(), {0: stream()}, tmp_path / "u", checkpoints=[1])
    with (
        pytest.raises(KsmithError, match="group 0 has no checkpoint after 2 edits"),
        applied_update(model, tmp_path / "u", 0, checkpoint=2),
    ):
        pass


# --- evaluation along the stream ----------------------------------------------------------------


def _requests_from_probes(dataset, config, kind):
    """requests.parquet for the world fixture's config: one request per direct cloze probe."""
    import pyarrow as pa

    from ksmith.data.schema import REQUEST_SCHEMA

    probes = pq.read_table(dataset / "data" / config / "test.parquet").to_pylist()
    rows = [
        {"group": d["group"], "request_id": d["request_id"], "kind": kind, "level": "leaf",
         "subject": d["subject"], "relation": d["relation"], "object": d["answer_before"],
         "new_object": d["answer_after"] if kind == "edit" else "", "prompt": d["prompt"],
         "plus_prompts": [d["prompt"]], "plus_answers": [d["answer_after"]],
         "minus_prompts": ["karo lives in the"], "minus_answers": ["forest"]}
        for d in probes
        if d["type"] == "direct" and d["format"] == "cloze"
    ]  # fmt: skip
    pq.write_table(
        pa.Table.from_pylist(rows, schema=REQUEST_SCHEMA),
        dataset / "data" / config / "requests.parquet",
    )


CONFIGS = {"edit": "biology.edit.leaf.k3", "unlearn": "biology.unlearn.leaf.k3"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from world_fixtures import write_world_dataset

    root = tmp_path_factory.mktemp("lifelong")
    dataset = write_world_dataset(root / "dataset", configs=tuple(CONFIGS.values()), groups=2)
    for kind, config in CONFIGS.items():
        _requests_from_probes(dataset, config, kind)
    tok = make_tokenizer()
    model_dir = root / "model"
    make_model("llama", vocab_size=len(tok)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return root, dataset, model_dir


def _update_and_evaluate(world, method, config, *extra):
    from ksmith.cli import main

    root, dataset, model_dir = world
    upd, res = root / f"upd-{method}", root / f"res-{method}"
    common = ["--model", str(model_dir), "--dataset", str(dataset), "--config", config]
    assert main(["--threads", "1", "update", *common, "--method", method, "--mode", "sequential",
                 "--checkpoints", "1,2", "--device", "cpu", *extra, "--out", str(upd)]) == 0  # fmt: skip
    assert main(["--threads", "1", "evaluate", *common, "--update", str(upd), "--no-cache",
                 "--device", "cpu", "--out", str(res)]) == 0  # fmt: skip
    return upd, res


@pytest.mark.parametrize(
    "method,extra",
    [("ice", ()), ("ft_m", ("--set", "steps=3")), ("ga", ("--set", "steps=3"))],
)
def test_checkpoints_are_evaluated_on_the_requests_made_so_far(world, method, extra):
    from ksmith.methods import get_method

    config = CONFIGS[get_method(method).kind]
    upd, res = _update_and_evaluate(world, method, config, *extra)
    assert read_update(upd)["checkpoints"] == [1, 2]
    along = json.loads((res / "checkpoints.json").read_text())
    final = json.loads((res / "metrics.json").read_text())
    points = along["checkpoints"]
    assert [(p["edits"], p["final"]) for p in points] == [(1, False), (2, False), (3, True)]
    probes = pq.read_table(world[1] / "data" / config / "test.parquet").to_pylist()
    for p in points:
        m = p["metrics"]
        # Efficacy counts one direct cloze probe per request made so far, in each of 2 groups.
        assert m["efficacy@cloze"]["n"] == 2 * p["edits"]
        assert m["generalization@cloze"]["n"] == 2 * p["edits"]
        # Q- and drift as usual: every group's Q- probes at every checkpoint.
        assert m["locality@cloze"]["n"] == sum(q["qset"] == "Q-" for q in probes)
        assert m["drift_kl@next_token"]["n"] == final["metrics"]["drift_kl@next_token"]["n"]
        assert not any(name.startswith(("fluency", "cost")) for name in m)
    # The final point is the ordinary result.
    for name, entry in points[-1]["metrics"].items():
        assert entry == final["metrics"][name]
    if method == "ice":
        # In context, request r0's prefix is the same at every point of the stream, so its
        # direct probe scores after 1 edit as it does at the end.
        preds = pq.read_table(res / "predictions.parquet").to_pylist()
        r0 = [r["correct"] for r in preds if r["stage"] == "after" and r["mode"] == "cloze"
              and r["probe_id"].split(".")[1] == "r0" and ".direct." in r["probe_id"]]  # fmt: skip
        assert len(r0) == 2
        assert points[0]["metrics"]["efficacy@cloze"]["value"] == sum(r0) / 2


# --- the report's section and plot data ---------------------------------------------------------


def _m(value, mode="cloze"):
    return {"value": value, "ci": [value, value], "n": 4, "mode": mode}


def _cell(root, method, config, final, points=None):
    """A results cell: metrics.json with `final` efficacy, and checkpoints.json when `points`
    (edits -> efficacy) is given (the final point added at the config's k)."""
    cell = root / method / f"{config}.s0"
    cell.mkdir(parents=True)
    metrics = {"efficacy@cloze": _m(final), "locality@cloze": _m(0.5),
               "drift_kl@next_token": _m(0.1, "next_token")}  # fmt: skip
    (cell / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    if points is not None:
        k = int(config.rpartition(".k")[2])
        along = [{"edits": n, "final": False, "metrics": {**metrics, "efficacy@cloze": _m(v)}}
                 for n, v in points.items()]  # fmt: skip
        along.append({"edits": k, "final": True, "metrics": metrics})
        (cell / "checkpoints.json").write_text(json.dumps({"checkpoints": along}))


def test_report_plots_the_metrics_against_the_edits_made_so_far(tmp_path):
    import csv

    from ksmith.pipeline.report import write_report

    results = tmp_path / "results"
    _cell(results, "ft_m", "biology.edit.leaf.k10", 0.2, {1: 1.0, 5: 0.6})
    _cell(results, "ft_m", "biology.edit.root.k10", 0.4, {1: 0.8, 5: 0.4})
    _cell(results, "ice", "biology.edit.leaf.k5", 0.9, {1: 1.0})  # its k=5 is its final point
    _cell(results, "none", "biology.edit.leaf.k10", 0.0)  # the baseline: no stream
    write_report(results, tmp_path / "report")
    rows = list(csv.DictReader((tmp_path / "report" / "plots" / "lifelong_edit.csv").open()))
    assert list(rows[0]) == ["method", "edits", "efficacy", "generalization", "locality",
                             "drift_kl"]  # fmt: skip
    got = {(r["method"], int(r["edits"])): r for r in rows}
    assert sorted(got) == [
        ("ft_m", 1), ("ft_m", 5), ("ft_m", 10), ("ice", 1), ("ice", 5), ("none", 10),
    ]  # fmt: skip
    assert float(got["none", 10]["efficacy"]) == 0.0  # the baseline's reference point, at its k
    assert float(got["ft_m", 1]["efficacy"]) == pytest.approx(0.9)  # mean over its two cells
    assert float(got["ft_m", 10]["efficacy"]) == pytest.approx(0.3)  # their final states
    assert float(got["ice", 5]["efficacy"]) == pytest.approx(0.9)
    assert got["ice", 5]["generalization"] == ""  # not measured: empty, not zero
    text = (tmp_path / "report" / "README.md").read_text()
    section = text[text.index("## Lifelong editing along the stream") :]
    assert "| ft_m | 5 | 2 | 0.500 |" in section
    assert "![lifelong_edit.png](plots/lifelong_edit.png)" in section
    assert (tmp_path / "report" / "plots" / "lifelong_edit.png").exists()
    assert not (tmp_path / "report" / "plots" / "lifelong_unlearn.csv").exists()


def test_report_without_streams_has_no_lifelong_section(tmp_path):
    from ksmith.pipeline.report import write_report

    results = tmp_path / "results"
    _cell(results, "ft_m", "biology.edit.leaf.k10", 0.2)
    write_report(results, tmp_path / "report")
    assert "Lifelong" not in (tmp_path / "report" / "README.md").read_text()
    plots = tmp_path / "report" / "plots"
    assert not (plots / "lifelong_edit.png").exists()
    # The CSV is there for dvc.yaml's plot definitions, with no method in it.
    assert (plots / "lifelong_edit.csv").read_text() == (
        "method,edits,efficacy,generalization,locality,drift_kl\n"
    )


# --- params ---------------------------------------------------------------------------------------


def _params(tmp_path, **extra):
    from ksmith.pipeline.params import load_params

    raw = {"suite": "s", "methods": ["ft_m"], "kinds": ["edit"], "levels": ["leaf"],
           "scales": [10], "seeds": [0], **extra}  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(raw))
    return load_params(path)


def test_params_checkpoints_default_empty_and_validated(tmp_path):
    from ksmith.errors import SpecError

    assert _params(tmp_path).checkpoints == []
    got = _params(tmp_path, mode="sequential", checkpoints=[1, 10, 100])
    assert got.checkpoints == [1, 10, 100]
    for bad in ([10, 1], [0, 1], [3, 3]):
        with pytest.raises(SpecError, match="field 'checkpoints'.*increasing"):
            _params(tmp_path, mode="sequential", checkpoints=bad)
    with pytest.raises(SpecError, match="field 'checkpoints'.*mode: sequential"):
        _params(tmp_path, checkpoints=[1])


def test_cli_checkpoints_are_checked_before_anything_is_loaded(tmp_path):
    from ksmith.methods.commands import UpdateRun, parse_checkpoints, update_from_dataset

    assert parse_checkpoints("1, 10,100") == (1, 10, 100) and parse_checkpoints(None) == ()
    with pytest.raises(KsmithError, match="--checkpoints expects comma-separated integers"):
        parse_checkpoints("1,ten")
    run = UpdateRun(model="nowhere", dataset=str(tmp_path / "nowhere"), config="c",
                    method="ft_m", out=str(tmp_path / "u"), checkpoints=(1,))  # fmt: skip
    with pytest.raises(KsmithError, match="--checkpoints: .*need --mode sequential"):
        update_from_dataset(run)
    with pytest.raises(KsmithError, match="--checkpoints: .*strictly increasing"):
        update_from_dataset(replace(run, mode="sequential", checkpoints=(2, 2)))


def test_pipeline_stages_carry_checkpoints_from_params_to_the_report(world, tmp_path, monkeypatch):
    """`ksmith pipeline update|evaluate|report` with `mode: sequential, checkpoints: [1, 2]`."""
    import csv

    from ksmith.cli import main

    monkeypatch.setenv("KSMITH_CACHE", str(tmp_path / "cache"))  # the before-stage cache

    _, dataset, model_dir = world
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({
        "suite": "fixture", "methods": ["ice"], "overrides": {"ice": {}}, "kinds": ["edit"],
        "levels": ["leaf"], "scales": [3], "seeds": [0], "mode": "sequential",
        "checkpoints": [1, 2], "device": "cpu",
    }))  # fmt: skip
    common = ["--threads", "1", "pipeline"]
    where = ["--params", str(params), "--dataset", str(dataset), "--model", str(model_dir)]
    upd, res = tmp_path / "updates" / "ice", tmp_path / "results"
    assert main([*common, "update", *where, "--method", "ice", "--out", str(upd)]) == 0
    assert main([*common, "evaluate", *where, "--method", "ice", "--updates", str(upd),
                 "--out", str(res / "ice")]) == 0  # fmt: skip
    assert main([*common, "evaluate", *where, "--method", "none", "--out", str(res / "none")]) == 0
    assert main([*common, "report", "--params", str(params), "--results", str(res),
                 "--out", str(tmp_path / "report")]) == 0  # fmt: skip
    cell = "biology.edit.leaf.k3.s0"
    assert read_update(upd / cell)["groups"][0]["checkpoints"] == [1, 2]
    assert (res / "ice" / cell / "checkpoints.json").is_file()
    assert not (res / "none" / cell / "checkpoints.json").exists()
    rows = csv.DictReader((tmp_path / "report" / "plots" / "lifelong_edit.csv").open())
    assert [(r["method"], r["edits"]) for r in rows] == [
        ("ice", "1"), ("ice", "2"), ("ice", "3"), ("none", "3"),
    ]  # fmt: skip
    assert "## Lifelong editing along the stream" in (tmp_path / "report" / "README.md").read_text()


def test_a_method_that_skips_the_sequential_loop_cannot_claim_checkpoints(tmp_path):
    from ksmith.methods import UpdateMethod, UpdateResult

    class _AllAtOnce(UpdateMethod):
        name, kind, paper = "all_at_once", "edit", "test"

        def apply(self, model, tokenizer, problem):  # never calls on_step
            return UpdateResult()

        def apply_batch(self, model, tokenizer, problem):
            return UpdateResult()

    model, tok = make_model("llama", vocab_size=len(make_tokenizer())), make_tokenizer()
    with pytest.raises(KsmithError, match=r"checkpoints after \[1, 2\] edits .* only \[\]"):
        run_update(model, tok, _AllAtOnce(), {0: stream()}, tmp_path / "u", checkpoints=[1, 2])
    assert not (tmp_path / "u").exists()
