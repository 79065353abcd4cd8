"""The pipeline's submit stage names the model from params, never a hard-coded id."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from leaderboard_fixtures import CONFIGS, make_dataset, make_results, make_update

from ksmith.cli import build_parser, main
from ksmith.pipeline.commands import WORLD_MODEL_ID, model_id

ROOT = Path(__file__).resolve().parents[1]


def test_model_id_is_the_base_id_or_the_world_models(tmp_path):
    assert model_id(None) == WORLD_MODEL_ID
    assert model_id("Qwen/Qwen2-0.5B") == "Qwen/Qwen2-0.5B"
    local = tmp_path / "models" / "tiny-llama"
    local.mkdir(parents=True)
    assert model_id(str(local)) == "tiny-llama"  # an id, never a local path


@pytest.mark.parametrize("base", [None, "org/tiny-qwen2"])
def test_submit_stage_takes_the_model_id_from_params(tmp_path, base):
    ds = make_dataset(tmp_path / "dataset")
    update = make_update(tmp_path / "upd", "rome")
    results = tmp_path / "results" / "rome"
    for config in CONFIGS[:2]:
        make_results(results / f"{config}.s0", ds, config, "rome", update=update)
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.write_text(yaml.safe_dump({**raw, "model": {**raw["model"], "base": base}}))
    out = tmp_path / "submissions" / "world-rome"
    argv = ["pipeline", "submit", "--params", str(params), "--results", str(results)]
    assert main([*argv, "--dataset", str(ds), "--out", str(out)]) == 0
    sub = yaml.safe_load((out / "submission.yaml").read_text())
    assert sub["model"]["id"] == (base or WORLD_MODEL_ID)
    assert len(sub["cells"]) == 2


def test_submit_refuses_results_whose_update_folder_it_cannot_find(tmp_path, capsys):
    """Run from another folder, a relative update path finds nothing: an error naming eval.json
    and its field, not a submission without hyper-parameters (which no audit can re-run)."""
    ds = make_dataset(tmp_path / "dataset")
    update = make_update(tmp_path / "upd", "rome")
    results = tmp_path / "results" / "rome"
    make_results(results / f"{CONFIGS[0]}.s0", ds, CONFIGS[0], "rome", update=update)
    out = tmp_path / "submissions" / "world-rome"
    argv = ["pipeline", "submit", "--params", str(ROOT / "params.yaml"), "--results",
            str(results), "--dataset", str(ds), "--out", str(out)]  # fmt: skip
    update.rename(tmp_path / "elsewhere")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "eval.json" in err and "update" in err and "has no update.json" in err
    assert not out.exists()
    (tmp_path / "elsewhere").rename(update)
    assert main(argv) == 0
    assert yaml.safe_load((out / "submission.yaml").read_text())["seeds"] == [0]


def test_dvc_submit_stage_reads_model_base_and_parses():
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["submit"]
    assert "--model-id" not in stage["cmd"]
    assert "model.base" in stage["params"]  # a new base reruns the submissions
    assert "methods" in stage["params"]  # one submission per method
    argv = shlex.split(stage["cmd"])
    assert argv[:3] == ["ksmith", "pipeline", "submit"]
    build_parser().parse_args(argv[1:])  # every option exists


def test_submit_all_writes_a_submission_per_method_and_the_baseline(tmp_path, capsys):
    """`--method all` (dvc.yaml's submit stage): world-<method> for every method of params and
    world-none; a method without results is an error naming its folder, and nothing is written."""
    ds = make_dataset(tmp_path / "dataset")
    results = tmp_path / "results"
    for method in ("rome", "memit"):
        update = make_update(tmp_path / "upd" / method, method)
        for config in CONFIGS[:2]:
            make_results(results / method / f"{config}.s0", ds, config, method, update=update)
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.write_text(yaml.safe_dump({**raw, "methods": ["rome", "memit"]}))
    out = tmp_path / "submissions"
    argv = ["pipeline", "submit", "--method", "all", "--params", str(params), "--results",
            str(results), "--dataset", str(ds), "--out", str(out)]  # fmt: skip
    assert main(argv) == 2  # no baseline results yet
    assert f"{results / 'none'}: no evaluated cells" in capsys.readouterr().err
    assert not out.exists()
    for config in CONFIGS[:2]:
        make_results(results / "none" / f"{config}.s0", ds, config, "none")
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "world-memit", "world-none", "world-rome"
    ]  # fmt: skip
    for method in ("rome", "memit", "none"):
        sub = yaml.safe_load((out / f"world-{method}" / "submission.yaml").read_text())
        assert sub["method"]["name"] == method and len(sub["cells"]) == 2
