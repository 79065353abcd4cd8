"""The pipeline's report: tables, scale curves and the KnowledgeSmith questions.

Reads every cell's `metrics.json` under the results root (``<root>/<method>/<cell>/``) and
writes, deterministically:

- ``metrics/<method>.json``: per kind, the mean headline values over the method's cells, and
  ``metrics/world_model.json``: the capability profile (what `dvc metrics show` prints: a row
  per file); ``cells.json``: every cell's headline values;
- ``plots/*.png``: scale curves (efficacy, propagation, locality against k, one panel per level,
  one line per method) and the consistency-capacity view (conflict rate and drift against k);
- ``README.md``: the model's capability profile, the tables, and KnowledgeSmith's findings
  (arXiv 2510.02392) tested with intervals (`ksmith.pipeline.findings`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ksmith.evaluate.metrics import HEADLINE_MODES, headline, metric_info, parse_metric_name
from ksmith.pipeline.findings import findings
from ksmith.pipeline.matrix import parse_config

LEVELS = ("root", "intermediate", "leaf")
SCALE_CURVES = ("efficacy", "propagation", "locality")
CONSISTENCY = ("conflict_rate", "drift_kl")


@dataclass(frozen=True)
class CellResult:
    method: str
    config: str
    domain: str
    kind: str
    level: str
    scale: int
    seed: int
    metrics: dict[str, dict[str, Any]]  # full metrics.json "metrics"

    def value(self, base: str) -> float | None:
        """A metric's value in its headline mode: the first mode of HEADLINE_MODES that has
        one. `base` is a metric name, possibly sliced (``efficacy``, ``propagation.known``)."""
        for mode in HEADLINE_MODES:
            value = self.metrics.get(f"{base}@{mode}", {}).get("value")
            if value is not None:
                return value
        return None


def collect(root: str | Path) -> list[CellResult]:
    """Every `<root>/<method>/<config>.s<seed>/metrics.json`, in a stable order."""
    cells = []
    for path in sorted(Path(root).glob("*/*/metrics.json")):
        method = path.parent.parent.name
        config, _, seed = path.parent.name.rpartition(".s")
        domain, kind, level, scale = parse_config(config)
        data = json.loads(path.read_text())
        cells.append(
            CellResult(method, config, domain, kind, level, scale, int(seed), data["metrics"])
        )
    return cells


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


SUMMARY_METRICS = ("efficacy", "generalization", "propagation", "locality", "ccr")


def dvc_metrics(cells: Sequence[CellResult]) -> dict[str, dict[str, Any]]:
    """What `dvc metrics show` prints, one file per method (a row each): per kind, the mean of
    each `SUMMARY_METRICS` headline value over the method's cells."""
    out: dict[str, dict[str, Any]] = {}
    for method in sorted({c.method for c in cells}):
        row: dict[str, Any] = {}
        for kind in ("edit", "unlearn"):
            sel = [c for c in cells if c.method == method and c.kind == kind]
            for base in SUMMARY_METRICS if sel else ():
                value = _mean([c.value(base) for c in sel])
                row[f"{kind}.{base}"] = None if value is None else round(value, 4)
        out[method] = row
    return out


def cell_metrics(cells: Sequence[CellResult]) -> dict[str, Any]:
    """method -> cell -> headline metric -> value: every cell's numbers (report/cells.json)."""
    out: dict[str, Any] = defaultdict(dict)
    for c in cells:
        out[c.method][f"{c.config}.s{c.seed}"] = {
            name: m.get("value") for name, m in sorted(headline(c.metrics).items())
        }
    return dict(out)


def _table(cells: Sequence[CellResult], bases: Sequence[str]) -> list[str]:
    head = ["method", "level", "k", *bases]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in sorted(cells, key=lambda c: (c.method, LEVELS.index(c.level), c.scale, c.seed)):
        row = [c.method, c.level, str(c.scale), *(_fmt(c.value(b)) for b in bases)]
        lines.append("| " + " | ".join(row) + " |")
    return lines


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


def _plot(cells: Sequence[CellResult], kind: str, bases: Sequence[str], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [c for c in cells if c.kind == kind]
    levels = [lv for lv in LEVELS if any(c.level == lv for c in sel)]
    if not sel or not levels:
        return False
    methods = sorted({c.method for c in sel})
    fig, axes = plt.subplots(
        len(bases), len(levels), figsize=(4 * len(levels), 3 * len(bases)), squeeze=False
    )
    for i, base in enumerate(bases):
        for j, level in enumerate(levels):
            ax = axes[i][j]
            for m in methods:
                pts = defaultdict(list)
                for c in sel:
                    if c.method == m and c.level == level and c.value(base) is not None:
                        pts[c.scale].append(c.value(base))
                if pts:
                    ks = sorted(pts)
                    ax.plot(ks, [sum(pts[k]) / len(pts[k]) for k in ks], marker="o", label=m)
            ax.set_xscale("log")
            ax.set_title(f"{kind} · {level}", fontsize=9)
            ax.set_xlabel("scale k")
            ax.set_ylabel(base)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    # No timestamps in the PNG, so the same results give the same bytes.
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return True


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


def write_report(
    results_root: str | Path, out: str | Path, model_meta: dict[str, Any] | None = None
) -> list[CellResult]:
    """Write README.md, metrics/ (one DVC metrics file per method and the world model's
    profile), cells.json and plots/ under `out` (a plain folder DVC tracks). `model_meta` is the
    evaluated model's card (`ksmith.world.read_model_card`), whose profile leads the report."""
    cells = collect(results_root)
    out = Path(out)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    metrics_dir = out / "metrics"
    metrics_dir.mkdir(exist_ok=True)
    for old in metrics_dir.glob("*.json"):
        old.unlink()
    for method, row in dvc_metrics(cells).items():
        (metrics_dir / f"{method}.json").write_text(
            json.dumps(row, indent=2, sort_keys=True) + "\n"
        )
    meta = model_meta or {}
    abilities = meta.get("abilities") or {}
    if abilities:
        (metrics_dir / "world_model.json").write_text(
            json.dumps({f"profile.{k}": v for k, v in abilities.items()}, indent=2, sort_keys=True)
            + "\n"
        )
    (out / "cells.json").write_text(
        json.dumps(cell_metrics(cells), indent=2, sort_keys=True) + "\n"
    )
    bases = _headline_bases(cells)
    lines = [
        "# ksmith run report",
        "",
        f"{len(cells)} cells from `{results_root}`. Each value is the headline mode of the "
        "metric (see the metric table below); per-item predictions sit next to every "
        "cell's metrics.json, and every cell's headline numbers are in `cells.json`.",
        "",
    ]
    if meta:
        from ksmith.world.card import profile_markdown

        lines += [
            "## The instrument: the evaluated model before any update",
            "",
            f"Model: {meta.get('arch', '?')}, {meta.get('layers', '?')} layers, width "
            f"{meta.get('hidden', '?')}, {meta.get('parameters', '?')} parameters"
            + (
                f", fine-tuned from `{meta['base']}`"
                if meta.get("base")
                else ", trained from scratch on the world's corpus"
            )  # fmt: skip
            + f"; {meta.get('steps', '?')} training steps. Every metric below measures an "
            "update of this model, so read them against what it could do before.",
            "",
            profile_markdown(meta, heading="###"),
            "",
        ]
    for kind in ("edit", "unlearn"):
        sel = [c for c in cells if c.kind == kind]
        if not sel:
            continue
        kb = [b for b in bases if kind in metric_info(b).get("kinds", (kind,))]
        lines += [f"## {'Editing' if kind == 'edit' else 'Unlearning'}", "", *_table(sel, kb), ""]
        for name, bset in (
            (f"scale_{kind}.png", SCALE_CURVES),
            (f"consistency_{kind}.png", CONSISTENCY),
        ):
            if _plot(cells, kind, bset, out / "plots" / name):
                lines += [f"![{name}](plots/{name})", ""]
    lines += findings(cells)
    lines += _level_scale_tables(cells)
    lines += ["## Metrics", "", "| metric | direction | meaning |", "|---|---|---|"]
    for b in bases:
        info = metric_info(b)
        lines.append(f"| {b} | {info['direction']} is better | {info['description']} |")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return cells
