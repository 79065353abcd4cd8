"""The report's plots: DVC-native plot data (CSV) and the PNGs the report embeds.

DVC plot data (`write_plot_data`), one CSV per kind, rendered by the `plots:` definitions in
dvc.yaml with the templates in `.dvc/plots/` (colour = method, dash or shape = experiment), so
`dvc plots diff` overlays experiments:

- ``scale_<kind>.csv``: per method and scale k, the score and the component, consistency and
  drift means over the cells at that k (every level and seed);
- ``tradeoff_<kind>.csv``: per method, efficacy against locality (means over its cells, with
  95% bootstrap intervals over cells) and the score: the editing-vs-preservation trade-off;
- ``lifelong_<kind>.csv``: per method evaluated along a sequential stream (docs/lifelong.md)
  and number of edits made so far, efficacy on every edit made so far (retention),
  generalization, locality and drift, means over the cells with a point at that count (their
  checkpoints and final states); the no-update baseline's cells are its reference points (at
  n = k). Written for every kind present, so dvc.yaml's plots always find it;
- ``retain_unlearn.csv``: per method and scale k, the means over its unlearn cells evaluated
  against the retain model (`ksmith.pipeline.unlearning_report`) of forget quality, retain
  agreement (cloze), over- and under-forgetting and the relearning gap (k > 1 only). Written
  whenever there are unlearn cells (header only when none has these metrics).

PNGs, embedded in report/README.md: the same scale curves per level (one panel per level and
metric, one line per method) and the consistency-capacity view (`write_pngs`), and the
lifelong curves against the number of edits (`plot_lifelong_png`).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ksmith.pipeline.summary import summarize

LEVELS = ("root", "intermediate", "leaf")
SCALE_CURVES = ("efficacy", "propagation", "locality")
CONSISTENCY = ("conflict_rate", "drift_kl")
SCALE_COLUMNS = (
    "score", "efficacy", "generalization", "propagation", "locality", "conflict_rate", "drift_kl",
)  # fmt: skip
LIFELONG_COLUMNS = ("efficacy", "generalization", "locality", "drift_kl")
# column -> metric name (retain_metrics' names, with their mode)
RETAIN_COLUMNS = {
    "forget_quality": "forget_quality@teacher_forced",
    "retain_agreement": "retain_agreement@cloze",
    "over_forgetting": "over_forgetting@cloze",
    "under_forgetting": "under_forgetting@cloze",
    "relearn_gap": "relearn.gap@teacher_forced",
}
TRADEOFF_COLUMNS = (
    "efficacy", "efficacy_lo", "efficacy_hi", "locality", "locality_lo", "locality_hi", "score",
    "cells",
)  # fmt: skip


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _write_csv(path: Path, header: Sequence[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def scale_rows(cells: Sequence[Any], kind: str) -> list[list[Any]]:
    """One row per (method, k): `SCALE_COLUMNS` over the method's cells at that k."""
    rows = []
    sel = [c for c in cells if c.kind == kind]
    for method in sorted({c.method for c in sel}):
        for k in sorted({c.scale for c in sel if c.method == method}):
            at_k = [c for c in sel if c.method == method and c.scale == k]
            s = summarize(at_k, method, kind, interval=False)
            row: list[Any] = [method, k, _num(s.score if s else None)]
            for base in SCALE_COLUMNS[1:]:
                vals = [v for c in at_k if (v := c.value(base)) is not None]
                row.append(_num(sum(vals) / len(vals) if vals else None))
            rows.append(row)
    return rows


def tradeoff_rows(cells: Sequence[Any], kind: str) -> list[list[Any]]:
    """One row per method: efficacy and locality with their intervals, the score, cells."""
    rows = []
    for method in sorted({c.method for c in cells if c.kind == kind}):
        s = summarize(cells, method, kind)
        if s is None:
            continue
        row: list[Any] = [method]
        for base in ("efficacy", "locality"):
            est = s.components.get(base)
            lo, hi = est.ci if est is not None and est.ci else (None, None)
            row += [_num(est.mean if est else None), _num(lo), _num(hi)]
        rows.append([*row, _num(s.score), s.cells])
    return rows


def retain_rows(cells: Sequence[Any]) -> list[list[Any]]:
    """One row per (method, k) with some metric against the retain model: `RETAIN_COLUMNS`
    means over the method's unlearn cells at that k (every level and seed)."""
    rows = []
    sel = [c for c in cells if c.kind == "unlearn"]
    for method in sorted({c.method for c in sel}):
        for k in sorted({c.scale for c in sel if c.method == method}):
            at_k = [c for c in sel if c.method == method and c.scale == k]
            means = []
            for name in RETAIN_COLUMNS.values():
                vals = [
                    v for c in at_k if (v := (c.metrics.get(name) or {}).get("value")) is not None
                ]
                means.append(sum(vals) / len(vals) if vals else None)
            if any(m is not None for m in means):
                rows.append([method, k, *(_num(m) for m in means)])
    return rows


def has_stream(cells: Sequence[Any], kind: str) -> bool:
    """Whether some cell of `kind` was evaluated along a sequential stream."""
    return any(c.kind == kind and c.checkpoints for c in cells)


def lifelong_points(cells: Sequence[Any], kind: str) -> dict[str, dict[int, list[Any]]]:
    """method -> edits made so far -> the cells' states there (`CellResult.stream`); the
    baseline ("none", no update) contributes its cells as they are, at n = k."""
    out: dict[str, dict[int, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for c in cells:
        if c.kind != kind:
            continue
        for edits, state in c.stream() or ([(c.scale, c)] if c.method == "none" else []):
            out[c.method][edits].append(state)
    return {m: dict(sorted(pts.items())) for m, pts in sorted(out.items())}


def lifelong_rows(cells: Sequence[Any], kind: str) -> list[list[Any]]:
    """One row per (method, edits): `LIFELONG_COLUMNS` means over the states at that count."""
    rows = []
    for method, points in lifelong_points(cells, kind).items():
        for edits, states in points.items():
            row: list[Any] = [method, edits]
            for base in LIFELONG_COLUMNS:
                vals = [v for s in states if (v := s.value(base)) is not None]
                row.append(_num(sum(vals) / len(vals) if vals else None))
            rows.append(row)
    return rows


def write_plot_data(cells: Sequence[Any], out: Path) -> list[str]:
    """The DVC plot CSVs under `out` (see the module docstring); their names."""
    names = []
    for kind in ("edit", "unlearn"):
        if not any(c.kind == kind for c in cells):
            continue
        _write_csv(
            out / f"lifelong_{kind}.csv",
            ["method", "edits", *LIFELONG_COLUMNS],
            lifelong_rows(cells, kind),
        )
        names.append(f"lifelong_{kind}.csv")
        _write_csv(
            out / f"scale_{kind}.csv", ["method", "k", *SCALE_COLUMNS], scale_rows(cells, kind)
        )
        _write_csv(
            out / f"tradeoff_{kind}.csv", ["method", *TRADEOFF_COLUMNS], tradeoff_rows(cells, kind)
        )
        names += [f"scale_{kind}.csv", f"tradeoff_{kind}.csv"]
    if any(c.kind == "unlearn" for c in cells):
        _write_csv(out / "retain_unlearn.csv", ["method", "k", *RETAIN_COLUMNS], retain_rows(cells))
        names.append("retain_unlearn.csv")
    return names


def plot_png(cells: Sequence[Any], kind: str, bases: Sequence[str], path: Path) -> bool:
    """One panel per (metric, level): the metric against k, one line per method."""
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


def plot_lifelong_png(cells: Sequence[Any], kind: str, path: Path) -> bool:
    """One panel per `LIFELONG_COLUMNS` metric against the number of edits made so far, one
    line per method (as the GRACE and WISE papers plot lifelong editing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not has_stream(cells, kind):
        return False
    points = lifelong_points(cells, kind)
    fig, axes = plt.subplots(1, len(LIFELONG_COLUMNS), figsize=(4 * len(LIFELONG_COLUMNS), 3))
    for ax, base in zip(axes, LIFELONG_COLUMNS, strict=True):
        for method, by_edits in points.items():
            xs, ys = [], []
            for edits, states in by_edits.items():
                vals = [v for s in states if (v := s.value(base)) is not None]
                if vals:
                    xs.append(edits)
                    ys.append(sum(vals) / len(vals))
            if xs:
                ax.plot(xs, ys, marker="o", label=method)
        ax.set_xscale("log")
        ax.set_xlabel("edits made so far" if kind == "edit" else "requests made so far")
        ax.set_ylabel("efficacy (retention)" if base == "efficacy" else base)
        ax.set_title(f"{kind} · along the stream", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return True


def write_pngs(cells: Sequence[Any], out: Path, kind: str) -> list[str]:
    """The kind's scale-curve and consistency PNGs under `out`; the names written."""
    names = []
    for name, bases in (
        (f"scale_{kind}.png", SCALE_CURVES),
        (f"consistency_{kind}.png", CONSISTENCY),
    ):
        if plot_png(cells, kind, bases, out / name):
            names.append(name)
    return names
