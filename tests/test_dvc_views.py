"""DVC's views of a run, in a scratch git+DVC repository with this project's dvc.yaml,
params.yaml and plot templates and a report written from hand-made cells: `dvc plots show` and
`dvc plots diff` render every plot definition from the report's CSVs (experiments overlaid),
the README's `dvc exp show` command gives a narrow table, and the README's `-S` overrides apply
to params.yaml as DVC applies them."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_pipeline_report import META, make_run

from ksmith.pipeline.params import PipelineParams
from ksmith.pipeline.report import write_report

ROOT = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc")
pytestmark = pytest.mark.skipif(DVC is None, reason="needs dvc (pip install -e '.[dev]')")
README = (ROOT / "README.md").read_text()


def _run(repo: Path, *argv: str) -> str:
    out = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(argv)}: {out.stderr}"
    return out.stdout


def _commit(repo: Path, message: str) -> None:
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("dvcrepo")
    _run(repo, "git", "init", "-q")
    _run(repo, DVC, "init", "-q")
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copy(ROOT / "params.yaml", repo)
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    results = make_run(tmp_path_factory.mktemp("results") / "results")
    write_report(results, repo / "report", META, model_id="ksmith-world-model")
    _commit(repo, "a run")
    return repo


def _plot_ids() -> list[str]:
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    return [next(iter(p)) if isinstance(p, dict) else p for p in plots]


def test_every_plot_renders_from_the_report(repo):
    data = json.loads(_run(repo, DVC, "plots", "show", "--json"))["data"]
    ids = _plot_ids()
    assert set(data) == set(ids)
    vega = [i for i in ids if not i.endswith(".png")]
    assert any("vs locality" in i for i in vega)  # the trade-off plot
    for plot_id in vega:
        (plot,) = data[plot_id]
        assert plot["type"] == "vega", plot_id
        values = plot["content"]["data"]["values"]
        assert {v["method"] for v in values} >= {"none"}, plot_id  # the baseline's reference
        assert plot["content"]["encoding"]["color"]["field"] == "method"
    for png in (i for i in ids if i.endswith(".png")):
        assert data[png][0]["type"] == "image"


def test_plots_diff_overlays_two_experiments(repo):
    csv = repo / "report" / "plots" / "scale_edit.csv"
    before = csv.read_text()
    try:
        csv.write_text(re.sub(r"(?m)^rome,1,[0-9.]+", "rome,1,0.1000", before))
        data = json.loads(_run(repo, DVC, "plots", "diff", "HEAD", "--json"))["data"]
        values = data["edit score vs k"][0]["content"]["data"]["values"]
        revs = {v["rev"] for v in values}
        assert revs == {"HEAD", "workspace"}
        rome1 = {v["rev"]: v["score"] for v in values if v["method"] == "rome" and v["k"] == "1"}
        assert rome1["workspace"] == "0.1000" and rome1["HEAD"] != "0.1000"
    finally:
        csv.write_text(before)


def _readme_commands(prefix: str) -> list[list[str]]:
    """The README's shell lines starting with `prefix` (continued lines joined)."""
    text = re.sub(r"\\\n\s*", " ", README)
    lines = [ln.strip().split("  #")[0] for ln in text.splitlines()]
    return [shlex.split(ln) for ln in lines if ln.startswith(prefix)]


def test_readme_exp_show_for_one_method_is_narrow(repo):
    (cmd,) = [
        c for c in _readme_commands("dvc exp show --drop '.*' --keep") if "rome" in "".join(c)
    ]
    header = _run(repo, DVC, *cmd[1:], "--csv").splitlines()[0].split(",")
    assert header[0] == "Experiment"
    assert header[1:] == [
        "rome.score", "rome.efficacy", "rome.generalization", "rome.propagation", "rome.locality"
    ]  # fmt: skip
    everything = _run(repo, DVC, "exp", "show", "--csv").splitlines()[0].split(",")
    assert len(everything) > 60  # why the README asks for columns


def test_readme_set_param_overrides_apply_to_params_yaml(tmp_path):
    from dvc.utils.hydra import apply_overrides

    runs = _readme_commands("dvc exp run ")
    assert any("overrides.rome.v_lr=0.1" in a for cmd in runs for a in cmd)
    for cmd in runs:
        overrides = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-S"]
        params = tmp_path / "params.yaml"
        shutil.copy(ROOT / "params.yaml", params)
        apply_overrides(params, overrides)  # what `dvc exp run -S` does first
        raw = yaml.safe_load(params.read_text())
        PipelineParams.model_validate(raw)
        for o in overrides:
            key, _, value = o.lstrip("+").partition("=")
            node = raw
            for part in key.split("."):
                node = node[part]
            assert node == yaml.safe_load(value), o
