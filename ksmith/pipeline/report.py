"""The pipeline's report: tables with intervals, scale curves and the KnowledgeSmith questions.

Reads every cell's `metrics.json` (and `eval.json`'s knowledge warning) under the results root
(``<root>/<method>/<cell>/``; `ksmith.pipeline.results`) and writes, deterministically:

- ``metrics/<method>.json``: the method's score and component means, keys
  ``<method>.<metric>`` (`dvc_metrics`), and ``metrics/world_model.json``: the model's
  capability profile (``world_model.<ability>``); ``cells.json``: every cell's headline values;
- ``plots/*.csv``: DVC plot data (`ksmith.pipeline.plots`; dvc.yaml's `plots:`), and
  ``plots/*.png``: scale curves per level, the consistency-capacity view and, when cells were
  evaluated along a sequential stream (their ``checkpoints.json``), the lifelong curves;
- ``README.md``: the model's provenance and capability profile, flags on metrics degenerate for
  it (`ksmith.pipeline.summary`), per-method summaries with intervals, every cell's values with
  95% intervals and probe counts, the unlearn cells against the retain model
  (`ksmith.pipeline.unlearning_report`), and KnowledgeSmith's findings (arXiv 2510.02392)
  tested with intervals (`ksmith.pipeline.findings`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ksmith.evaluate.metrics import headline, metric_info, parse_metric_name
from ksmith.leaderboard.aggregate import COMPONENTS
from ksmith.pipeline.findings import findings
from ksmith.pipeline.plots import (
    LEVELS,
    LIFELONG_COLUMNS,
    has_stream,
    lifelong_points,
    plot_lifelong_png,
    write_plot_data,
    write_pngs,
)
from ksmith.pipeline.results import CellResult, collect
from ksmith.pipeline.summary import (
    ABILITY_FLOOR,
    BASELINE_CEILING,
    Flag,
    Summary,
    degenerate,
    summaries,
)
from ksmith.pipeline.tables import fmt_entry as _fmt_entry
from ksmith.pipeline.unlearning_report import retain_dvc_metrics, unlearning_section

FLAG = "⚠"


def _fmt(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _headline_bases(cells: Sequence[CellResult]) -> list[str]:
    seen: dict[str, None] = {}
    for c in cells:
        for name in headline(c.metrics):
            seen.setdefault(parse_metric_name(name)[0], None)
    return list(seen)


def dvc_metrics(cells: Sequence[CellResult]) -> dict[str, dict[str, Any]]:
    """What `dvc metrics show` and `dvc exp show` print, one file per method: the score and the
    component means over the method's cells, under keys ``<method>.<name>`` (``<method>.<kind>.
    <name>`` for a method with cells of both kinds, the baseline). The keys are unique across
    files, so DVC names columns by them, short enough for a terminal, and
    ``dvc exp show --keep '<method>\\.'`` selects one method. Unlearning methods evaluated
    against the retain model add their mean forget quality and retain agreement
    (`ksmith.pipeline.unlearning_report.retain_dvc_metrics`)."""
    out: dict[str, dict[str, Any]] = {}
    rows = summaries(cells)
    unlearn_prefix = {}
    for s in rows:
        both = sum(r.method == s.method for r in rows) > 1
        prefix = f"{s.method}.{s.kind}" if both else s.method
        if s.kind == "unlearn":
            unlearn_prefix[s.method] = prefix
        flat = s.flat()
        flat.pop("cells")
        out.setdefault(s.method, {}).update({f"{prefix}.{k}": v for k, v in flat.items()})
    for method, row in retain_dvc_metrics(cells, unlearn_prefix).items():
        out.setdefault(method, {}).update(row)  # after the score: DVC keeps key order
    return out


def profile_metrics(meta: dict[str, Any]) -> dict[str, float]:
    """The capability profile as flat DVC metrics, ``world_model.<ability>`` (no sub-slices)."""
    abilities = meta.get("abilities") or {}
    return {f"world_model.{k}": v for k, v in sorted(abilities.items()) if "." not in k}


def cell_metrics(cells: Sequence[CellResult]) -> dict[str, Any]:
    """method -> cell -> headline metric -> value: every cell's numbers (report/cells.json)."""
    out: dict[str, Any] = defaultdict(dict)
    for c in cells:
        out[c.method][f"{c.config}.s{c.seed}"] = {
            name: m.get("value") for name, m in sorted(headline(c.metrics).items())
        }
    return dict(out)


def _flagged(flags: Sequence[Flag], kind: str) -> set[str]:
    return {f.metric for f in flags if f.kind == kind}


def _table(cells: Sequence[CellResult], bases: Sequence[str], flagged: set[str]) -> list[str]:
    head = ["method", "level", "k", *(f"{b} {FLAG}" if b in flagged else b for b in bases)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in sorted(cells, key=lambda c: (c.method, LEVELS.index(c.level), c.scale, c.seed)):
        method = f"{c.method} {FLAG}" if c.knowledge_warning else c.method
        row = [method, c.level, str(c.scale), *(_fmt_entry(c.entry(b)) for b in bases)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _summary_table(rows: Sequence[Summary], kind: str, flagged: set[str]) -> list[str]:
    comps = COMPONENTS[kind]
    head = ["method", "cells", "score [95% CI]"]
    head += [f"{b} {FLAG}" if b in flagged else b for b in comps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in rows:
        score = _fmt(s.score) + (
            f" [{s.score_ci[0]:.2f}, {s.score_ci[1]:.2f}]" if s.score_ci else ""
        )
        parts = [str(s.components[b]) for b in comps]
        lines.append("| " + " | ".join([s.method, str(s.cells), score, *parts]) + " |")
    return lines


SCORE_RULE = (
    "**Score**: the harmonic mean of the component means over the method's cells (each "
    "oriented so higher is better), with a 95% bootstrap interval over cells. The means are "
    "pooled first because a k=1 cell has 3-6 probes per component: one miss can zero a "
    "component there, and a harmonic mean per cell would then zero the whole cell. Components: "
    "mean over cells [95% bootstrap interval over cells] (n = cells with probes of that type)."
)


def _by_level_scale(cells: Sequence[CellResult], base: str) -> list[str]:
    """Mean of one metric over methods, per level (rows) and scale (columns)."""
    scales = sorted({c.scale for c in cells})
    lines = [
        "| level | " + " | ".join(f"k={k}" for k in scales) + " |",
        "|---|" + "---|" * len(scales),
    ]
    for level in LEVELS:
        row = [
            _mean([c.value(base) for c in cells if c.level == level and c.scale == k])
            for k in scales
        ]
        if any(v is not None for v in row):
            lines.append(f"| {level} | " + " | ".join(_fmt(v) for v in row) + " |")
    return lines


def _level_scale_tables(cells: Sequence[CellResult]) -> list[str]:
    edit = [c for c in cells if c.kind == "edit" and c.method != "none"]
    unl = [c for c in cells if c.kind == "unlearn" and c.method != "none"]
    out = ["## By level and scale (mean over methods, baseline excluded)", ""]
    for title, sel, base in (
        ("Editing, collateral change (CCR; lower is better)", edit, "ccr"),
        ("Editing, propagation to entailed facts", edit, "propagation"),
        ("Editing, propagation over entailed facts known before (propagation.known)", edit,
         "propagation.known"),
        ("Unlearning, residual retention (RR; lower is better)", unl, "rr"),
        ("Unlearning, propagation of the removal to entailed facts", unl, "propagation"),
        ("Unlearning, the same over entailed facts known before (propagation.known)", unl,
         "propagation.known"),
    ):  # fmt: skip
        if sel:
            out += [f"{title}:", "", *_by_level_scale(sel, base), ""]
    return out


def _lifelong_section(cells: Sequence[CellResult], plots: Path) -> list[str]:
    """Per kind with cells evaluated along a sequential stream: the metrics against the number
    of edits made so far (docs/lifelong.md), a table and a plot."""
    out = []
    for kind in ("edit", "unlearn"):
        if not has_stream(cells, kind):
            continue
        points = lifelong_points(cells, kind)
        what = "editing" if kind == "edit" else "unlearning"
        head = ["method", "edits", "cells", "efficacy (retention)", *LIFELONG_COLUMNS[1:]]
        out += [
            f"## Lifelong {what} along the stream",
            "",
            "Requests applied one after another (`mode: sequential`), each cell evaluated at "
            "the declared checkpoints (`checkpoints` in params.yaml) and at its end. At n edits: "
            "efficacy and generalization over the probes of the n requests made so far "
            "(efficacy = retention of every earlier edit), locality and drift over all of the "
            "cell's Q- probes; each value is the mean over the cells with a point at n "
            "(checkpoints, and the final state of cells with k = n; for the no-update "
            "baseline, its cells with k = n).",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for method, by_edits in points.items():
            for edits, states in by_edits.items():
                vals = [_fmt(_mean([s.value(b) for s in states])) for b in LIFELONG_COLUMNS]
                out.append(f"| {method} | {edits} | {len(states)} | " + " | ".join(vals) + " |")
        out.append("")
        name = f"lifelong_{kind}.png"
        if plot_lifelong_png(cells, kind, plots / name):
            out += [f"![{name}](plots/{name})", ""]
    return out


def _provenance(meta: dict[str, Any], model_id: str | None) -> list[str]:
    """Where the evaluated model comes from, in one paragraph."""
    name = f"`{model_id}`" if model_id else "The evaluated model"
    if not meta:
        return [
            f"Model: {name}, used as given (no ksmith card): its capability before any update "
            "was not measured, so no metric below can be checked against what it knew.",
            "",
        ]
    origin = (
        f"fine-tuned from `{meta['base']}` on the world's corpus"
        if meta.get("base")
        else "trained from scratch on the world's corpus"
    )
    return [
        f"Model: {name}, {meta.get('arch', '?')}, {meta.get('layers', '?')} layers, width "
        f"{meta.get('hidden', '?')}, {meta.get('parameters', '?')} parameters, "
        f"{meta.get('tokenizer', '?')} tokenizer; {origin} (dataset fingerprint "
        f"`{str(meta.get('dataset_fingerprint', '?'))[:12]}`), {meta.get('steps', '?')} steps "
        f"(stopped by {meta.get('stopped_by', '?')}), seed {meta.get('seed', '?')}, ksmith "
        f"{meta.get('ksmith_version', '?')}. Every metric below measures an update of this "
        "model, so read them against what it could do before.",
        "",
    ]


def _flags_section(flags: Sequence[Flag], meta: dict[str, Any]) -> list[str]:
    lines = ["## Metrics degenerate for this model", ""]
    if not flags:
        checked = "its capability profile and " if meta.get("abilities") else ""
        return lines + [
            f"None: checked against {checked}the no-update baseline.",
            "",
        ]
    lines += [
        f"Marked {FLAG} in the tables. A metric is flagged when an ability it needs is below the "
        f"card's threshold (or {ABILITY_FLOOR:.0%} without one), when doing nothing already "
        f"scores {BASELINE_CEILING} or more on a change it counts, or when cells warned that the "
        f"model barely knew the targeted facts ({FLAG} after the method in the cell tables). "
        "Such a metric partly measures the model's ignorance, not the update.",
        "",
    ]
    for f in flags:
        lines.append(
            f"- {'editing' if f.kind == 'edit' else 'unlearning'}, **{f.metric}**: {f.reason}."
        )
    return lines + [""]


def write_report(
    results_root: str | Path,
    out: str | Path,
    model_meta: dict[str, Any] | None = None,
    model_id: str | None = None,
) -> list[CellResult]:
    """Write README.md, metrics/ (one DVC metrics file per method and the world model's
    profile), cells.json and plots/ under `out` (a plain folder DVC tracks). `model_meta` is the
    evaluated model's card (`ksmith.world.read_model_card`), whose provenance and profile lead
    the report; `model_id` its leaderboard id."""
    cells = collect(results_root)
    out = Path(out)
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for old in plots.glob("*.csv"):
        old.unlink()
    metrics_dir = out / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    for old in metrics_dir.glob("*.json"):
        old.unlink()
    for method, row in dvc_metrics(cells).items():  # key order: score first (DVC keeps it)
        (metrics_dir / f"{method}.json").write_text(json.dumps(row, indent=2) + "\n")
    meta = model_meta or {}
    if profile_metrics(meta):
        (metrics_dir / "world_model.json").write_text(
            json.dumps(profile_metrics(meta), indent=2, sort_keys=True) + "\n"
        )
    (out / "cells.json").write_text(
        json.dumps(cell_metrics(cells), indent=2, sort_keys=True) + "\n"
    )
    write_plot_data(cells, plots)
    bases = _headline_bases(cells)
    flags = degenerate(cells, meta)
    lines = [
        "# ksmith run report",
        "",
        f"{len(cells)} cells from `{results_root}`. Each value is the headline mode of the "
        "metric (see the metric table below); per-item predictions sit next to every "
        "cell's metrics.json, and every cell's headline numbers are in `cells.json`.",
        "",
        "## The instrument: the evaluated model before any update",
        "",
        *_provenance(meta, model_id),
    ]
    if meta:
        from ksmith.world.card import profile_markdown

        lines += [profile_markdown(meta, heading="###"), ""]
    lines += _flags_section(flags, meta)
    all_summaries = summaries(cells)
    for kind in ("edit", "unlearn"):
        rows = [s for s in all_summaries if s.kind == kind]
        if rows:
            title = "Editing" if kind == "edit" else "Unlearning"
            lines += [f"## {title}: per method", "", SCORE_RULE, ""]
            lines += [*_summary_table(rows, kind, _flagged(flags, kind)), ""]
    for kind in ("edit", "unlearn"):
        sel = [c for c in cells if c.kind == kind]
        if not sel:
            continue
        kb = [b for b in bases if kind in metric_info(b).get("kinds", (kind,))]
        lines += [
            f"## {'Editing' if kind == 'edit' else 'Unlearning'}: every cell",
            "",
            "Each value: the cell's metric, its 95% bootstrap interval over probes, and the "
            "number of probes (items) it rests on.",
            "",
            *_table(sel, kb, _flagged(flags, kind)),
            "",
        ]
        for name in write_pngs(cells, plots, kind):
            lines += [f"![{name}](plots/{name})", ""]
    lines += unlearning_section(cells)
    lines += _lifelong_section(cells, plots)
    lines += findings(cells)
    lines += _level_scale_tables(cells)
    lines += ["## Metrics", "", "| metric | direction | meaning |", "|---|---|---|"]
    for b in bases:
        info = metric_info(b)
        lines.append(f"| {b} | {info['direction']} is better | {info['description']} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return cells
