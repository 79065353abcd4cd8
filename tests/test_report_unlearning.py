"""The report's unlearning section: unlearn cells against the retain model (issue #12)."""

from __future__ import annotations

import csv
import json

import pytest

from ksmith.pipeline.report import dvc_metrics, write_report
from ksmith.pipeline.results import collect
from ksmith.pipeline.unlearning_report import min_p_value, unlearning_section

TF = "teacher_forced"
TITLE = "## Unlearning against the retain model"


def _m(value, mode, n=20, ci=None):
    return {"value": value, "ci": list(ci) if ci else [None, None], "n": n, "mode": mode}


def retain_metrics(fq, n_facts, ra, k):
    """A cell's metrics against the retain model, in retain_metrics' names; relearn.* only
    for k > 1 (the evaluator writes none for k = 1)."""
    out = {
        f"forget_quality@{TF}": _m(fq, TF, n_facts),
        f"truth_ratio.forget@{TF}": _m(0.312, TF, n_facts, (0.25, 0.37)),
        f"truth_ratio.forget.retain_model@{TF}": _m(0.330, TF, n_facts, (0.28, 0.39)),
        f"model_utility@{TF}": _m(0.600, TF, 40),
        f"model_utility.retain_model@{TF}": _m(0.650, TF, 40),
        f"mia_auc.min_k@{TF}": _m(0.55, TF, 40),
        f"privleak.min_k@{TF}": _m(-0.120, TF, n_facts),
        f"privleak.loss@{TF}": _m(-0.5, TF, n_facts),
        f"exact_memorization@{TF}": _m(0.100, TF, 40, (0.0, 0.2)),
        f"exact_memorization.retain_model@{TF}": _m(0.080, TF, 40, (0.0, 0.2)),
        f"extraction_strength@{TF}": _m(0.050, TF, 40, (0.0, 0.1)),
        f"extraction_strength.retain_model@{TF}": _m(0.040, TF, 40, (0.0, 0.1)),
        "retain_agreement@cloze": _m(ra, "cloze", 50, (ra - 0.1, ra + 0.1)),
        "retain_agreement.forget@cloze": _m(0.9, "cloze", 10, (0.7, 1.0)),
        "retain_agreement.entailed@cloze": _m(0.7, "cloze", 15, (0.5, 0.9)),
        "retain_agreement.minus@cloze": _m(0.85, "cloze", 25, (0.7, 0.95)),
        "retain_agreement@mcq": _m(0.1, "mcq", 50, (0.0, 0.2)),  # not the table's mode
        "over_forgetting@cloze": _m(0.25, "cloze", 8, (0.0, 0.5)),
        "under_forgetting@cloze": _m(0.125, "cloze", 16, (0.0, 0.3)),
    }
    if k > 1:
        out.update({
            f"relearn.before@{TF}": _m(0.1, TF, 15, (0.0, 0.3)),
            f"relearn.recovered@{TF}": _m(0.6, TF, 15, (0.4, 0.8)),
            f"relearn.recovered.retain_model@{TF}": _m(0.2, TF, 15, (0.0, 0.4)),
            f"relearn.gap@{TF}": _m(0.4, TF, 15),
        })  # fmt: skip
    return out


def write_cell(root, method, config, metrics):
    cell = root / method / f"{config}.s0"
    cell.mkdir(parents=True)
    base = {"efficacy@cloze": _m(0.8, "cloze", 10, (0.6, 0.9))}
    (cell / "metrics.json").write_text(json.dumps({"metrics": {**base, **metrics}}))


@pytest.fixture
def run(tmp_path):
    """ga and the baseline at leaf k=1 and k=10, with retain metrics; the baseline has an edit
    cell too (its DVC keys then carry the kind)."""
    root = tmp_path / "results"
    plan = {  # (method, k) -> forget quality, forget facts, retain agreement
        ("ga", 1): (0.7, 3, 0.5),
        ("ga", 10): (0.41, 20, 0.8),
        ("none", 1): (0.1, 3, 0.3),
        ("none", 10): (1.2e-6, 20, 0.4),
    }
    for (method, k), (fq, n, ra) in plan.items():
        write_cell(root, method, f"biology.unlearn.leaf.k{k}", retain_metrics(fq, n, ra, k))
    write_cell(root, "none", "biology.edit.leaf.k10", {})
    write_report(root, tmp_path / "report")
    text = (tmp_path / "report" / "README.md").read_text()
    return tmp_path, text[text.index(TITLE) :]


def _between(text, start, end="\n### "):
    i = text.index(start)
    j = text.find(end, i + len(start))
    return text[i : j if j >= 0 else None]


def test_ks_test_cannot_reject_with_three_forget_facts():
    assert min_p_value(3) == pytest.approx(0.1)  # 2 / C(6, 3): fully separated samples
    assert min_p_value(4) < 0.05


def test_section_explains_how_to_read_it(run):
    _, section = run
    assert "trained from scratch" in section and "without the forget set" in section
    assert "near 1, the unlearned model is indistinguishable from the retain model" in section
    assert "Q- probes that ask a fact the retain model lacks" in section
    assert "excluded" in section


def test_forget_quality_table(run):
    _, section = run
    table = _between(section, "### Forget quality, truth ratio")
    assert (
        "| ga | leaf | 10 | **0.410 (20)** | 0.312 / 0.330 | 0.600 / 0.650 | -0.120 | "
        "0.100 / 0.080 | 0.050 / 0.040 |"
    ) in table
    # a p-value below 0.05: not bold, in scientific notation
    assert "| none | leaf | 10 | 1.2e-06 (20) | 0.312 / 0.330 |" in table
    # three forget facts: the test cannot reject, so neither bold nor evidence
    assert "| ga | leaf | 1 | 0.700 (3) † |" in table
    assert "**0.700" not in table
    # baseline last, levels and scales in order
    rows = [r for r in table.splitlines() if r.startswith("| ga") or r.startswith("| none")]
    assert [r.split(" | ")[0:3] for r in rows] == [
        ["| ga", "leaf", "1"], ["| ga", "leaf", "10"], ["| none", "leaf", "1"],
        ["| none", "leaf", "10"],
    ]  # fmt: skip


def test_agreement_table_shows_cloze_with_intervals(run):
    _, section = run
    table = _between(section, "### Agreement with the retain model (cloze)")
    assert (
        "| ga | leaf | 10 | 0.800 [0.70, 0.90] 50 | 0.900 [0.70, 1.00] 10 | "
        "0.700 [0.50, 0.90] 15 | 0.850 [0.70, 0.95] 25 | 0.250 [0.00, 0.50] 8 | "
        "0.125 [0.00, 0.30] 16 |"
    ) in table
    assert "0.100 [0.00, 0.20] 50" not in table  # mcq is not this table's mode


def test_relearning_table_and_na_for_k1(run):
    _, section = run
    table = _between(section, "### Relearning attack")
    assert (
        "| ga | leaf | 10 | 0.100 [0.00, 0.30] 15 | 0.600 [0.40, 0.80] 15 | "
        "0.200 [0.00, 0.40] 15 | +0.400 |"
    ) in table
    assert "| ga | leaf | 1 | n/a | n/a | n/a | n/a |" in table


def test_per_method_summary(run):
    _, section = run
    summary = _between(section, "Per method, means over its cells")
    # ga: mean fq (0.7 + 0.41) / 2; 1 of 1 testable cell indistinguishable; mean agreement 0.65
    assert "| ga | 2 | 0.555 | 1/1 | 0.650 | 0.250 | 0.125 | 0.400 |" in summary
    assert "| none | 2 | 0.050 | 0/1 | 0.350 |" in summary


def test_dvc_metrics_get_two_headline_numbers(run):
    tmp_path, _ = run
    files = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "report/metrics").glob("*")}
    ga = files["ga"]
    assert ga["ga.forget_quality"] == pytest.approx(0.555)
    assert ga["ga.retain_agreement"] == pytest.approx(0.65)
    assert list(ga)[0] == "ga.score"  # the score stays first
    assert len(ga) <= 7
    assert files["none"]["none.unlearn.forget_quality"] == 0.05  # rounded to 4 places
    assert not any("forget_quality" in k for k in files["none"] if ".edit." in k)


def test_plot_csv(run):
    tmp_path, _ = run
    rows = list(csv.DictReader((tmp_path / "report/plots/retain_unlearn.csv").open()))
    assert [(r["method"], r["k"]) for r in rows] == [
        ("ga", "1"), ("ga", "10"), ("none", "1"), ("none", "10")
    ]  # fmt: skip
    ga10 = rows[1]
    assert float(ga10["forget_quality"]) == 0.41 and float(ga10["retain_agreement"]) == 0.8
    assert float(ga10["relearn_gap"]) == 0.4 and rows[0]["relearn_gap"] == ""


def test_absent_for_an_edit_only_run(tmp_path):
    root = tmp_path / "results"
    write_cell(root, "rome", "biology.edit.leaf.k10", {})
    write_report(root, tmp_path / "report")
    text = (tmp_path / "report" / "README.md").read_text()
    assert TITLE not in text and "retain-model" not in text
    assert not (tmp_path / "report/plots/retain_unlearn.csv").exists()


def test_old_results_say_no_retain_metrics_and_add_nothing(tmp_path):
    root = tmp_path / "results"
    for k in (1, 10):
        write_cell(root, "ga", f"biology.unlearn.leaf.k{k}", {})
    cells = collect(root)
    assert unlearning_section(cells)[:3] == [TITLE, "", unlearning_section(cells)[2]]
    assert unlearning_section(cells)[2].startswith("No retain-model metrics")
    assert not any("forget_quality" in k for row in dvc_metrics(cells).values() for k in row)
    write_report(root, tmp_path / "report")
    text = (tmp_path / "report" / "README.md").read_text()
    assert "No retain-model metrics" in text and "### Relearning attack" not in text
    with (tmp_path / "report/plots/retain_unlearn.csv").open() as f:
        assert list(csv.reader(f)) == [
            ["method", "k", "forget_quality", "retain_agreement", "over_forgetting",
             "under_forgetting", "relearn_gap"]
        ]  # fmt: skip


def test_cells_without_the_metrics_are_left_out_and_counted(tmp_path):
    root = tmp_path / "results"
    write_cell(root, "ga", "biology.unlearn.leaf.k10", retain_metrics(0.3, 20, 0.8, 10))
    write_cell(root, "ga", "biology.unlearn.root.k10", {})
    partial = {f"forget_quality@{TF}": _m(0.02, TF, 20)}  # only some metrics: dashes
    write_cell(root, "npo", "biology.unlearn.leaf.k10", partial)
    lines = unlearning_section(collect(root))
    text = "\n".join(lines)
    assert "1 unlearn cell(s) have no retain-model metrics and are left out." in text
    assert "| ga | root |" not in text
    assert "| npo | leaf | 10 | 0.020 (20) | – | – | – | – | – |" in text
    assert "| npo | leaf | 10 | n/a | n/a | n/a | n/a |" in text


def test_names_match_what_the_evaluator_writes():
    """The section reads the names `ksmith.evaluate.retain_metrics.cell_metrics` produces: a
    k > 1 cell computed from stored rows fills every column."""
    from ksmith.evaluate.retain_metrics import cell_metrics
    from ksmith.pipeline.results import CellResult

    def rows(shift):
        out = []
        for i in range(6):
            item = f"r{i}|s{i}|color|o{i}"
            for role, lp in (("correct", -0.5 - shift * i), ("perturbed", -1.0 - 0.1 * i)):
                out.append({"group": 0, "side": "forget", "item": item, "role": role,
                            "prompt": f"s{i} color", "answer": "x", "logprobs": [lp],
                            "hits": [lp > -0.8]})  # fmt: skip
            item = f"r{i}|t{i}|size|big"
            for role, lp in (("correct", -0.2), ("perturbed", -2.0)):
                out.append({"group": 0, "side": "retain", "item": item, "role": role,
                            "prompt": f"t{i} size", "answer": "big", "logprobs": [lp],
                            "hits": [role == "correct"]})  # fmt: skip
        for role in ("attack", "before", "after"):
            out.append({"group": 0, "side": "relearn", "item": "r5|s5|color|o5", "role": role,
                        "prompt": "s5 color", "answer": "o5", "logprobs": [-0.1],
                        "hits": [role != "before" and shift > 0]})  # fmt: skip
        return out

    probes = [
        {"id": "f", "qset": "Q+", "type": "direct", "subject": "s0", "relation": "color",
         "object": "o0"},
        {"id": "e", "qset": "Q+", "type": "multi_hop", "subject": "u", "relation": "color",
         "object": "o0"},
        {"id": "m", "qset": "Q-", "type": "contextual", "subject": "t0", "relation": "size",
         "object": "big"},
    ]  # fmt: skip

    def preds(pred, still_knows):  # still_knows: the Q+ probe ids answered as before
        return [{"probe_id": p["id"], "mode": mode, "stage": "after", "prediction": pred,
                 "match_before": p["id"] in still_knows, "correct": True}
                for p in probes for mode in ("cloze", "gen_exact")]  # fmt: skip

    # the retain model still infers e's answer; the unlearned model keeps f's instead
    metrics = cell_metrics(rows(0.3), rows(0.0), preds("a", {"f"}), preds("a", {"e"}), probes,
                           set(), n_boot=50)  # fmt: skip
    cell = CellResult("ga", "biology.unlearn.leaf.k10", "biology", "unlearn", "leaf", 10, 0,
                      metrics)  # fmt: skip
    text = "\n".join(unlearning_section([cell]))
    row_lines = [line for line in text.splitlines() if line.startswith("| ga | leaf | 10 |")]
    assert len(row_lines) == 3  # one per table (the summary's starts "| ga | 1 |")
    for line in row_lines:
        assert " – " not in line and "n/a" not in line, line
