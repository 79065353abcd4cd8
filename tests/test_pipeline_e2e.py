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
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.slow
def test_dvc_repro_tiny(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "specs", "ksmith"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, proj / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(
        methods=["ft_m", "ga"], overrides={"ft_m": {}, "ga": {}}, levels=["leaf"], scales=[1],
        batch_size=16,
    )
    params["model"]["world_overrides"] = {"max_steps": 20, "eval_every": 10, "eval_sample": 50,
                                          "hidden": 32, "intermediate": 64}
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _dvc(proj, "init", "--no-scm", "-q").returncode == 0

    run = _dvc(proj, "repro")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = proj / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == {"ft_m", "ga", "none"}
    assert "biology.edit.leaf.k1.s0" in metrics["ft_m"]
    assert "biology.unlearn.leaf.k1.s0" in metrics["ga"]
    text = (report / "README.md").read_text()
    assert "Does editing over-spread" in text and "Does unlearning under-spread" in text
    assert any((report / "plots").glob("*.png"))

    from ksmith.leaderboard import load_submission

    sub = load_submission(proj / "out" / "submissions" / "world-ft_m")
    assert sub.method.name == "ft_m" and len(sub.cells) == 1

    shown = _dvc(proj, "metrics", "show")
    assert shown.returncode == 0 and "ft_m" in shown.stdout

    again = _dvc(proj, "repro")
    assert again.returncode == 0
    assert "up to date" in again.stdout.lower()

    # A hyper-parameter of one method reruns only that method's stages.
    params["overrides"]["ga"] = {"steps": 3}
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _dvc(proj, "status")
    assert "update@ga" in status.stdout and "update@ft_m" not in status.stdout
