"""Per-method summaries of a run with their uncertainty, and flags on degenerate metrics.

**Score.** The report's composite of a method and kind is the harmonic mean of its component
means (`ksmith.leaderboard.aggregate.COMPONENTS`, each oriented higher-is-better by its registry
direction) over the method's cells. Pooling first matters on small cells: a k=1 cell holds 3-6
probes per component, so one miss can zero a component there, and a mean of per-cell harmonic
means would zero that whole cell (the leaderboard's per-cell composite does; its page states
the cell sizes). The score's 95% interval is a seeded percentile bootstrap over cells
(resample cells, recompute the means and their harmonic mean).

**Degenerate metrics.** A metric measures an update only if the model could answer its probes
before it and doing nothing does not already score. A (kind, metric) is flagged when

- an ability it needs (`NEEDS`) is below the model card's threshold for it (or below
  `ABILITY_FLOOR` without one), or
- it counts a change the update must make (`CHANGE_METRICS`) and the no-update baseline already
  scores `BASELINE_CEILING` or more on it (unlearning of facts the model never knew), or
- some of its cells warned that the model barely knew the targeted facts (``eval.json``
  ``knowledge.warning``, `ksmith.evaluate.knowledge`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ksmith.evaluate.metrics import metric_info
from ksmith.leaderboard.aggregate import COMPONENTS, harmonic_mean, oriented
from ksmith.pipeline.findings import BASELINE, Estimate

SEED = 0
N_BOOT = 1000

# The probe types (capability-profile abilities) each metric needs the model to know before.
NEEDS: dict[str, tuple[str, ...]] = {
    "efficacy": ("direct",),
    "generalization": ("paraphrase",),
    "propagation": ("reverse", "multi_hop", "comparison"),
    "locality": ("contextual",),
    "ccr": ("contextual",),
    "negation": ("negation",),
    "conflict_rate": ("negation", "reverse"),
    "rr": ("direct", "paraphrase"),
    "fluency": ("fluency",),
}
ABILITY_FLOOR = 0.5
# Metrics that count a change the update must make: the no-update baseline should score ~0.
CHANGE_METRICS = ("efficacy", "generalization", "propagation")
BASELINE_CEILING = 0.25


@dataclass(frozen=True)
class Summary:
    """One method's numbers for one kind: component estimates over cells and the score."""

    method: str
    kind: str
    cells: int
    components: dict[str, Estimate]
    score: float | None
    score_ci: tuple[float, float] | None

    def flat(self) -> dict[str, float | int]:
        """`score`, the component means and `cells`, rounded, without missing values."""
        out: dict[str, float | int] = {}
        if self.score is not None:
            out["score"] = round(self.score, 4)
        for name, est in self.components.items():
            if est.mean is not None:
                out[name] = round(est.mean, 4)
        out["cells"] = self.cells
        return out


def _score(means: Mapping[str, float | None]) -> float | None:
    return harmonic_mean(oriented(v, metric_info(b)["direction"]) for b, v in means.items())


def score_interval(values: Mapping[str, Sequence[float | None]]) -> tuple[float, float] | None:
    """95% bootstrap interval of the score over cells: `values` maps each component to its
    per-cell values (None where a cell has no probes of that type), cells aligned."""
    n = len(next(iter(values.values()), []))
    if n < 2:
        return None
    idx = np.random.default_rng(SEED).integers(0, n, size=(N_BOOT, n))
    oriented_means = []
    for base, vs in values.items():
        a = np.array([np.nan if v is None else v for v in vs], float)[idx]  # (N_BOOT, n)
        count = (~np.isnan(a)).sum(axis=1)
        mean = np.where(count > 0, np.nansum(a, axis=1) / np.maximum(count, 1), np.nan)
        if metric_info(base)["direction"] != "higher":
            mean = 1.0 - mean
        oriented_means.append(np.clip(mean, 0.0, 1.0))
    m = np.stack(oriented_means)  # (components, N_BOOT); NaN: no cell of the draw has it
    present = ~np.isnan(m)
    with np.errstate(divide="ignore"):
        inv = np.where(present, 1.0 / np.where(present, m, 1.0), 0.0)
    k = present.sum(axis=0)
    zero = (present & (m == 0.0)).any(axis=0)
    draws = np.where(zero, 0.0, k / np.where(inv.sum(axis=0) > 0, inv.sum(axis=0), np.inf))
    draws = draws[k > 0]
    if not draws.size:
        return None
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(lo), float(hi)


def summarize(
    cells: Sequence[Any], method: str, kind: str, interval: bool = True
) -> Summary | None:
    """The method's summary for `kind` over its cells (None when it has none); `interval`:
    bootstrap the score's interval too."""
    sel = [c for c in cells if c.method == method and c.kind == kind]
    if not sel:
        return None
    values = {b: [c.value(b) for c in sel] for b in COMPONENTS[kind]}
    comps = {b: Estimate(vs, f"{method}.{kind}.{b}") for b, vs in values.items()}
    score = _score({b: e.mean for b, e in comps.items()})
    ci = score_interval(values) if interval else None
    return Summary(method, kind, len(sel), comps, score, ci)


def summaries(cells: Sequence[Any]) -> list[Summary]:
    """Every (method, kind) summary, methods in name order, the baseline last."""
    methods = sorted({c.method for c in cells}, key=lambda m: (m == BASELINE, m))
    out = []
    for method in methods:
        for kind in ("edit", "unlearn"):
            s = summarize(cells, method, kind)
            if s is not None:
                out.append(s)
    return out


@dataclass(frozen=True)
class Flag:
    kind: str
    metric: str
    reason: str


def degenerate(cells: Sequence[Any], meta: Mapping[str, Any] | None) -> list[Flag]:
    """Every (kind, metric) degenerate for this model, with why (see the module docstring)."""
    meta = meta or {}
    abilities = meta.get("abilities") or {}
    thresholds = meta.get("thresholds") or {}
    flags: list[Flag] = []
    for kind in ("edit", "unlearn"):
        sel = [c for c in cells if c.kind == kind]
        if not sel:
            continue
        bases = {b for c in sel for b in c.bases()}
        for metric in sorted(bases):
            reasons = []
            weak = [
                f"{a} {abilities[a]:.0%} < {thresholds.get(a, ABILITY_FLOOR):.0%}"
                for a in NEEDS.get(metric, ())
                if abilities.get(a) is not None and abilities[a] < thresholds.get(a, ABILITY_FLOOR)
            ]
            if weak:
                reasons.append("the model's ability before any update is low: " + ", ".join(weak))
            if metric in CHANGE_METRICS:
                base = Estimate([c.value(metric) for c in sel if c.method == BASELINE], metric)
                if base.mean is not None and base.mean >= BASELINE_CEILING:
                    reasons.append(
                        f"the no-update baseline already scores {base.mean:.2f} "
                        f"(>= {BASELINE_CEILING}): part of it is what the model never knew"
                    )
            warned = sorted({c.cell_id for c in sel if c.knowledge_warning})
            if warned and metric in (*CHANGE_METRICS, "rr"):  # about the targeted facts
                reasons.append(
                    f"{len(warned)} cell(s) warned the model barely knew the targeted facts"
                )
            if reasons:
                flags.append(Flag(kind, metric, "; ".join(reasons)))
    return flags
