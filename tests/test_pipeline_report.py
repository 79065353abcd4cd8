"""The run report: tables of headline and sliced metrics from cells' metrics.json."""

from __future__ import annotations

import json

import pytest

from ksmith.pipeline.report import write_report
from ksmith.pipeline.results import CellResult


def _metric(value, mode):
    return {"value": value, "ci": [value, value], "n": 4, "mode": mode}


def test_sliced_values_take_the_first_mode_that_has_one():
    cell = CellResult(
        "ga", "biology.unlearn.leaf.k10", "biology", "unlearn", "leaf", 10, 0,
        {
            "propagation@cloze": _metric(1.0, "cloze"),
            "propagation.known@cloze": _metric(None, "cloze"),
            "propagation.known@mcq": _metric(0.25, "mcq"),
        },
    )  # fmt: skip
    assert cell.value("propagation") == 1.0
    assert cell.value("propagation.known") == 0.25
    assert cell.value("generalization.known") is None


def test_report_shows_propagation_over_known_facts(tmp_path):
    results = tmp_path / "results"
    for method, kind, known in (("ga", "unlearn", 0.5), ("rome", "edit", 0.0)):
        cell = results / method / f"biology.{kind}.leaf.k10.s0"
        cell.mkdir(parents=True)
        metrics = {
            "efficacy@cloze": _metric(1.0, "cloze"),
            "propagation@cloze": _metric(0.9, "cloze"),
            "propagation.known@cloze": _metric(known, "cloze"),
            "ccr@cloze": _metric(0.1, "cloze"),
            "rr@any": _metric(0.2, "any"),
        }
        (cell / "metrics.json").write_text(json.dumps({"metrics": metrics}))
    write_report(results, tmp_path / "report")
    text = (tmp_path / "report" / "README.md").read_text()
    unlearning = text[text.index("Unlearning, the same over entailed facts known before") :]
    assert "| leaf | 0.500 |" in unlearning[: unlearning.index("## Metrics")]
    editing = text[text.index("Editing, propagation over entailed facts known before") :]
    assert "| leaf | 0.000 |" in editing[: editing.index("Unlearning, residual")]


EDIT_METRICS = ("efficacy", "generalization", "propagation", "locality", "ccr", "conflict_rate")
UNLEARN_METRICS = (*EDIT_METRICS, "rr")
META = {
    "arch": "llama", "layers": 2, "hidden": 128, "parameters": 617216, "tokenizer": "word",
    "dataset_fingerprint": "ad1d6582" * 8, "steps": 13000, "stopped_by": "steps", "seed": 0,
    "ksmith_version": "0.1.0", "base": None,
    "abilities": {"direct": 0.79, "paraphrase": 0.65, "reverse": 0.79, "multi_hop": 0.84,
                  "multi_hop.h1": 0.82, "comparison": 0.46, "contextual": 0.84,
                  "negation": 0.66, "in_context": 0.96, "fluency": 0.9},
    "thresholds": {"direct": 0.75, "paraphrase": 0.6},
}  # fmt: skip


def make_run(root, *, warn: str | None = None):
    """A results root like the pipeline's: two editors, an unlearner and the baseline, levels
    root and leaf, k 1 and 10, values with intervals and probe counts."""
    plan = [("rome", "edit", 0.9), ("ft_m", "edit", 0.7), ("ga", "unlearn", 0.8)]
    plan += [("none", "edit", 0.0), ("none", "unlearn", 0.3)]
    for method, kind, skill in plan:
        for level in ("root", "leaf"):
            for k in (1, 10):
                cell = root / method / f"biology.{kind}.{level}.k{k}.s0"
                cell.mkdir(parents=True)
                n = 3 * k
                metrics = {}
                for i, base in enumerate(EDIT_METRICS if kind == "edit" else UNLEARN_METRICS):
                    v = skill if base in ("efficacy", "generalization", "propagation") else 0.8
                    v = min(1.0, max(0.0, v - 0.05 * i * (k == 10)))
                    metrics[f"{base}@cloze"] = {
                        "value": v, "ci": [max(0.0, v - 0.2), min(1.0, v + 0.1)], "n": n,
                        "mode": "cloze",
                    }  # fmt: skip
                if k == 1 and level == "root" and method == "ft_m":
                    metrics["locality@cloze"]["value"] = 0.0  # one zero in a tiny cell
                if kind == "unlearn":  # measured against the retain model (docs/unlearning.md)
                    metrics["forget_quality@teacher_forced"] = {
                        "value": 0.5 * skill,
                        "ci": [None, None],
                        "n": n,
                        "mode": "teacher_forced",
                    }
                    metrics["retain_agreement@cloze"] = {
                        "value": skill,
                        "ci": [skill - 0.1, skill],
                        "n": n,
                        "mode": "cloze",
                    }
                (cell / "metrics.json").write_text(json.dumps({"metrics": metrics}))
                knowledge = {"warning": warn if method == "ga" and level == "leaf" else None}
                (cell / "eval.json").write_text(json.dumps({"knowledge": knowledge}))
    return root


def _report(tmp_path, meta=META, warn=None):
    results = make_run(tmp_path / "results", warn=warn)
    write_report(results, tmp_path / "report", meta, model_id="ksmith-world-model")
    return tmp_path / "report", (tmp_path / "report" / "README.md").read_text()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One report (PNGs take seconds): the run above, ga's leaf cells warned."""
    return _report(tmp_path_factory.mktemp("run"), warn="the model barely knows this world")


def _section(text: str, start: str, end: str = "\n## ") -> str:
    i = text.index(start)
    j = text.find(end, i + len(start))
    return text[i : j if j >= 0 else None]


def test_cell_tables_show_intervals_and_probe_counts(run):
    _, text = run
    cells = _section(text, "## Editing: every cell")
    assert "| rome | leaf | 10 | 0.900 [0.70, 1.00] 30 |" in cells
    assert "| ft_m | root | 1 | 0.700 [0.50, 0.80] 3 |" in cells
    assert "95% bootstrap interval over probes" in cells


def test_report_names_the_model_and_its_provenance(tmp_path):
    _, text = _report(tmp_path)
    instrument = _section(text, "## The instrument")
    assert "Model: `ksmith-world-model`, llama, 2 layers, width 128" in instrument
    assert "trained from scratch on the world's corpus (dataset fingerprint `ad1d6582ad1d`)" in (
        instrument
    )
    assert "13000 steps (stopped by steps), seed 0" in instrument
    _, bare = _report(tmp_path / "given", meta=None)
    assert "used as given (no ksmith card)" in bare


def test_degenerate_metrics_are_flagged_visibly(run):
    _, text = run
    flags = _section(text, "## Metrics degenerate for this model")
    # comparison (a propagation probe type) at 46% before any update, below 50%
    assert "editing, **propagation**: the model's ability before any update is low: " in flags
    assert "comparison 46% < 50%" in flags
    # doing nothing already "unlearns" 30% of the facts
    assert "unlearning, **efficacy**: the no-update baseline already scores 0.30" in flags
    assert "2 cell(s) warned the model barely knew the targeted facts" in flags
    assert "| propagation ⚠ |" in _section(text, "## Editing: every cell")
    assert "| efficacy |" in _section(text, "## Editing: every cell")  # not flagged
    assert "| ga ⚠ | leaf | 1 |" in _section(text, "## Unlearning: every cell")
    assert "| ga | root | 1 |" in _section(text, "## Unlearning: every cell")


def test_nothing_flagged_for_a_capable_model(tmp_path):
    capable = {**META, "abilities": {k: 0.95 for k in META["abilities"]}}
    results = make_run(tmp_path / "results")
    for cell in (results / "none").glob("biology.unlearn.*"):  # doing nothing changes nothing
        m = json.loads((cell / "metrics.json").read_text())
        for entry in m["metrics"].values():
            entry["value"] = 0.0 if entry["value"] < 0.5 else entry["value"]
        (cell / "metrics.json").write_text(json.dumps(m))
    write_report(results, tmp_path / "report", capable)
    text = (tmp_path / "report" / "README.md").read_text()
    assert "None: checked against its capability profile and the no-update baseline." in text
    assert "⚠" not in text


def test_score_pools_cells_so_one_tiny_zero_does_not_zero_it(run):
    from ksmith.leaderboard.aggregate import harmonic_mean
    from ksmith.pipeline.results import collect
    from ksmith.pipeline.summary import summarize

    report, text = run
    cells = collect(report.parent / "results")
    s = summarize(cells, "ft_m", "edit")  # locality 0 in its k=1 root cell (3 probes)
    per_cell = [
        harmonic_mean(c.value(b) for b in ("efficacy", "generalization", "propagation", "locality"))
        for c in cells
        if c.method == "ft_m"
    ]
    assert min(per_cell) == 0.0  # the per-cell harmonic mean zeroes that cell
    assert s.score is not None and 0.6 < s.score < 0.7
    lo, hi = s.score_ci
    assert lo < s.score < hi  # the zero cell shows up as uncertainty, not as a zero
    summary = _section(text, "## Editing: per method")
    assert "harmonic mean of the component means over the method's cells" in summary
    assert f"| ft_m | 4 | {s.score:.3f} [{lo:.2f}, {hi:.2f}] |" in summary


def test_dvc_metrics_are_small_flat_and_named_for_dvc_exp_show(run):
    report, _ = run
    files = {p.stem: json.loads(p.read_text()) for p in (report / "metrics").glob("*.json")}
    assert set(files) == {"ft_m", "ga", "none", "rome", "world_model"}
    for stem, data in files.items():
        assert all(isinstance(v, (int, float)) for v in data.values())  # flat numbers
        assert all(k.startswith(f"{stem}.") for k in data)  # unique column names across files
        # score and four components; an unlearning method also forget quality and retain agreement
        assert len(data) <= 12 if stem == "none" else len(data) <= 7 or stem == "world_model"
    assert list(files["rome"]) == [
        "rome.score", "rome.efficacy", "rome.generalization", "rome.propagation", "rome.locality"
    ]  # fmt: skip
    assert "none.unlearn.score" in files["none"] and "none.edit.score" in files["none"]
    assert {"ga.forget_quality", "ga.retain_agreement"} <= set(files["ga"])
    # `dvc exp show` prints a column per key: one method's, beside the experiment names, fit
    # a 120-column terminal (`dvc exp show --keep 'rome\.'`, README)
    assert sum(len(k) + 3 for k in files["rome"]) + len("Experiment  ") < 110


def test_plot_data_for_dvc(run):
    import csv

    report, _ = run
    rows = list(csv.DictReader((report / "plots" / "scale_edit.csv").open()))
    assert {(r["method"], r["k"]) for r in rows} == {
        (m, k) for m in ("ft_m", "none", "rome") for k in ("1", "10")
    }
    assert (
        float(next(r for r in rows if r["method"] == "rome" and r["k"] == "10")["efficacy"]) == 0.9
    )
    trade = list(csv.DictReader((report / "plots" / "tradeoff_unlearn.csv").open()))
    ga = next(r for r in trade if r["method"] == "ga")
    assert float(ga["locality_lo"]) <= float(ga["locality"]) <= float(ga["locality_hi"])
    assert (report / "plots" / "scale_edit.png").exists()  # the report's own figures remain
