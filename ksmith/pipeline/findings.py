"""KnowledgeSmith's published findings (arXiv 2510.02392), tested on one run's cells.

Each finding compares means over cells (every method but the no-update baseline ``none``, every
seed) with seeded 95% percentile-bootstrap intervals over those cells (`mean_ci`), and gets a
verdict from the intervals alone: **reproduced** when they separate in the paper's direction,
**contradicted** when they separate the other way, **inconclusive** when they overlap. The
numbers are reported as they are; nothing here is tuned toward the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ksmith.evaluate.stats import mean_ci

BASELINE = "none"
SEED = 0


class Estimate:
    """A mean over cells with its bootstrap interval (None when no cell has the metric)."""

    def __init__(self, values: Sequence[float], name: str):
        vals = [v for v in values if v is not None and not math.isnan(v)]
        self.n = len(vals)
        self.mean = sum(vals) / len(vals) if vals else None
        self.ci = mean_ci(vals, seed=SEED, name=name) if len(vals) >= 2 else None

    def __str__(self) -> str:
        if self.mean is None:
            return "–"
        ci = f" [{self.ci[0]:.3f}, {self.ci[1]:.3f}]" if self.ci else ""
        return f"{self.mean:.3f}{ci} (n={self.n})"


def verdict(high: Estimate, low: Estimate) -> str:
    """Whether `high` is above `low` (the paper's direction), from the intervals."""
    if high.ci is None or low.ci is None:
        return "inconclusive (too few cells)"
    if high.ci[0] > low.ci[1]:
        return "reproduced"
    if high.ci[1] < low.ci[0]:
        return "contradicted"
    return "inconclusive (intervals overlap)"


def _est(cells, base: str, name: str, keep: Callable = lambda c: True) -> Estimate:
    return Estimate([c.value(base) for c in cells if c.method != BASELINE and keep(c)], name)


def findings(cells: Sequence) -> list[str]:
    """Markdown lines: one subsection per finding, its numbers, intervals and verdict."""
    edit = [c for c in cells if c.kind == "edit"]
    unl = [c for c in cells if c.kind == "unlearn"]
    out = [
        "## KnowledgeSmith's findings, tested on this run",
        "",
        "Means over cells (every method but the no-update baseline), with 95% bootstrap "
        "intervals over cells; a verdict holds only when the intervals separate.",
        "",
    ]
    if edit and unl:
        ccr_e, ccr_u = _est(edit, "ccr", "ccr.edit"), _est(unl, "ccr", "ccr.unlearn")
        out += [
            "### 1. Editing over-spreads",
            "",
            "Collateral change of Q- probes (CCR), editing against unlearning: "
            f"{ccr_e} against {ccr_u}. **{verdict(ccr_e, ccr_u)}.**",
            "",
        ]
    if unl:
        eff = _est(unl, "efficacy.known", "unlearn.efficacy.known")
        prop = _est(unl, "propagation.known", "unlearn.propagation.known")
        rr = _est(unl, "rr", "unlearn.rr")
        out += [
            "### 2. Unlearning under-spreads",
            "",
            f"Over facts the model knew before: the requested facts removed (efficacy.known) "
            f"{eff}; the entailed facts removed with them (propagation.known) {prop}: "
            f"**{verdict(eff, prop)}** that the removal reaches entailed facts less than the "
            f"facts asked. Residual retention (RR: unlearned facts still recoverable by some "
            f"probe) {rr}.",
            "",
        ]
    out += ["### 3. Conflict rate and drift grow with k", ""]
    for kind, sel in (("edit", edit), ("unlearn", unl)):
        scales = sorted({c.scale for c in sel})
        if len(scales) < 2:
            continue
        lo_k, hi_k = scales[0], scales[-1]
        for base in ("conflict_rate", "drift_kl"):
            lo = _est(sel, base, f"{kind}.{base}.k{lo_k}", lambda c, k=lo_k: c.scale == k)
            hi = _est(sel, base, f"{kind}.{base}.k{hi_k}", lambda c, k=hi_k: c.scale == k)
            out.append(f"- {kind}, {base}: k={lo_k} {lo}; k={hi_k} {hi}: **{verdict(hi, lo)}**.")
    out += ["", "### 4. Differences between levels", ""]
    for kind, sel in (("edit", edit), ("unlearn", unl)):
        levels = list(dict.fromkeys(c.level for c in sel))
        for base in ("efficacy", "propagation", "ccr"):
            ests = {lv: _est(sel, base, f"{kind}.{base}.{lv}", lambda c, lv=lv: c.level == lv)
                    for lv in levels}  # fmt: skip
            ranked = sorted((e.mean, lv) for lv, e in ests.items() if e.mean is not None)
            if len(ranked) < 2:
                continue
            top, bottom = ranked[-1][1], ranked[0][1]
            v = verdict(ests[top], ests[bottom])
            differ = "levels differ" if v == "reproduced" else "no separation between levels"
            parts = "; ".join(f"{lv} {e}" for lv, e in ests.items())
            out.append(f"- {kind}, {base}: {parts}: **{differ}** ({top} vs {bottom}).")
    return out + [""]
