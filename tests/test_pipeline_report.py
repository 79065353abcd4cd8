"""The run report: tables of headline and sliced metrics from cells' metrics.json."""

from __future__ import annotations

import json

from ksmith.pipeline.report import CellResult, write_report


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
