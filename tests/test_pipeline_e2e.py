"""The DVC pipeline end to end, on a tiny params set through the same stages (CI's guard)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, timeout=1200
    )


def _ksmith(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ksmith.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=1200,
    )


@pytest.mark.slow
def test_dvc_repro_tiny(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "specs", "ksmith"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, proj / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(
        methods=["ft_m", "ga", "serac"],
        overrides={"ft_m": {}, "ga": {}, "serac": {}},
        levels=["leaf", "root"],
        scales=[1],
        batch_size=16,
        workers=2,
    )
    params["model"]["world_overrides"] = {
        "max_steps": 20,
        "curriculum_steps": 0,
        "eval_every": 10,
        "eval_sample": 50,
        "hidden": 32,
        "intermediate": 64,
        "allow_below_threshold": True,  # 20 steps know nothing: the pipeline still runs
    }
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (proj / "one.yaml").write_text(yaml.safe_dump({**params, "workers": 1}, sort_keys=False))
    assert _dvc(proj, "init", "--no-scm", "-q").returncode == 0

    run = _dvc(proj, "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = proj / "report"
    cells = json.loads((report / "cells.json").read_text())
    assert set(cells) == {"ft_m", "ga", "serac", "none"}
    # the trained editor is its own stage's artifact; the update cells use it
    editors = proj / "out" / "editors"
    assert (editors / "serac" / "card.json").is_file()
    assert (editors / "ft_m" / "NOT_TRAINED.txt").is_file()
    serac = json.loads(next((proj / "out" / "updates" / "serac").glob("*/update.json")).read_text())
    assert serac["params"]["editor_path"] == "out/editors/serac"
    assert {"biology.edit.leaf.k1.s0", "biology.edit.root.k1.s0"} <= set(cells["ft_m"])
    assert "biology.unlearn.leaf.k1.s0" in cells["ga"]
    # the retain model, trained beside the world model, is the one `ksmith retain` trains, and
    # every unlearn cell (the baseline's too) is measured against its evaluation
    out = proj / "out"
    assert (out / "retain" / "forget_set.json").is_file()
    sets = [x for k, v in params["model"]["world_overrides"].items()
            for x in ("--set", f"{k}={json.dumps(v)}")]  # fmt: skip
    alone = _ksmith(proj, "--threads", "1", "retain", "out/dataset", "--out", "retain-alone",
                    "--no-progress", *sets)  # fmt: skip
    assert alone.returncode == 0, alone.stderr[-3000:]
    for name in ("model.safetensors", "forget_set.json"):
        assert (out / "retain" / name).read_bytes() == (proj / "retain-alone" / name).read_bytes()
    assert (out / "retain-results" / "biology.unlearn.leaf.k1.s0" / "retain.json").is_file()
    for method in ("ga", "none"):
        m = json.loads((out / "results" / method / "biology.unlearn.root.k1.s0" /
                        "metrics.json").read_text())["metrics"]  # fmt: skip
        assert 0 <= m["forget_quality@teacher_forced"]["value"] <= 1
        assert "retain_agreement@cloze" in m
    summary = {p.stem: json.loads(p.read_text()) for p in (report / "metrics").glob("*.json")}
    assert set(summary) == {"ft_m", "ga", "serac", "none", "world_model"}
    assert "ft_m.efficacy" in summary["ft_m"] and "ga.score" in summary["ga"]
    assert "none.edit.score" in summary["none"] and "none.unlearn.score" in summary["none"]
    assert "world_model.direct" in summary["world_model"]
    shown = _dvc(proj, "metrics", "show")  # one row per file, a few columns each
    assert shown.returncode == 0 and "ft_m.efficacy" in shown.stdout, shown.stderr
    assert "world_model.json" in shown.stdout
    text = (report / "README.md").read_text()
    assert "The instrument" in text and "Capability profile" in text
    assert "Editing over-spreads" in text and "Unlearning under-spreads" in text
    assert any((report / "plots").glob("*.png"))
    assert {"scale_edit.csv", "tradeoff_unlearn.csv"} <= {
        p.name for p in (report / "plots").iterdir()
    }

    from ksmith.leaderboard import load_submission

    sub = load_submission(proj / "out" / "submissions" / "world-ft_m")
    assert sub.method.name == "ft_m" and len(sub.cells) == 2

    # Cells run by two workers hold the same weights as cells run one after another.
    one = _ksmith(
        proj,
        "--threads",
        "1",
        "pipeline",
        "update",
        "--method",
        "ft_m",
        "--dataset",
        "out/dataset",
        "--model",
        "out/model",
        "--out",
        "one-worker",
        "--params",
        "one.yaml",
    )
    assert one.returncode == 0, one.stderr[-3000:]
    deltas = sorted((proj / "out" / "updates" / "ft_m").glob("*/g*/delta.safetensors"))
    assert {p.parts[-3] for p in deltas} == {"biology.edit.leaf.k1.s0", "biology.edit.root.k1.s0"}
    assert len(deltas) == len(list((proj / "one-worker").glob("*/g*/delta.safetensors")))
    root = proj / "out" / "updates" / "ft_m"
    for path in deltas:
        assert path.read_bytes() == (proj / "one-worker" / path.relative_to(root)).read_bytes()

    shown = _dvc(proj, "metrics", "show")
    assert shown.returncode == 0 and "ft_m" in shown.stdout

    again = _dvc(proj, "repro")
    assert again.returncode == 0
    # Only the method-code fingerprint stage runs (always; cheap); its outputs are unchanged, so
    # nothing downstream does.
    ran = [line for line in again.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'code':"], again.stdout

    # A hyper-parameter of one method reruns the update stage and what follows it, which compute
    # that method's cells only: the others are copied from the stages' cell stores.
    updates = proj / "out" / "updates"
    before = {p: p.read_bytes() for p in sorted(updates.glob("*/*/update.json"))}
    params["overrides"]["ga"] = {"steps": 3}
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _dvc(proj, "status")
    assert "update" in status.stdout and "methods" not in status.stdout
    third = _dvc(proj, "repro")
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    said = third.stdout + third.stderr
    # update: ft_m's and serac's 2 cells each; evaluate: theirs and the baseline's 4
    assert "update all: 4 of 6 cells already finished under the same key" in said, said[-3000:]
    assert "evaluate all: 8 of 10 cells already finished under the same key" in said
    after = {p: p.read_bytes() for p in sorted(updates.glob("*/*/update.json"))}
    assert after.keys() == before.keys()
    changed = {p.parts[-3] for p in before if before[p] != after[p]}
    assert changed == {"ga"}
    ga = json.loads(next((updates / "ga").glob("*/update.json")).read_text())
    assert ga["params"]["steps"] == 3
