"""The report's unlearning section: every unlearn cell against the retain model (issue #12).

The evaluator writes the metrics against the retain model (`ksmith.evaluate.retain_metrics`,
docs/unlearning.md) into each unlearn cell's metrics.json. This module turns them into the
report's section ``## Unlearning against the retain model``: a per-method summary, then per
method x level x scale (one row per cell) three tables:

- the field's metrics from teacher-forced token scores: forget quality (TOFU's KS p-value, in
  bold when p >= 0.05), the forget truth ratio, model utility, PrivLeak (min-k%), exact
  memorization and extraction strength, each beside the retain model's own value;
- agreement with the retain model on cloze probes (all, and split forget / entailed / Q-),
  over- and under-forgetting, with 95% bootstrap intervals and probe counts;
- the relearning attack: recovered facts against the retain model under the same attack.

`retain_dvc_metrics` adds two headline numbers per method to the DVC metrics summary. Cells
without these metrics (an edit-only run, results from before the retain model) give no
section, or a one-line note when unlearn cells exist but none has them; nothing here raises on
missing metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from ksmith.pipeline.findings import BASELINE
from ksmith.pipeline.plots import LEVELS
from ksmith.pipeline.tables import fmt_entry

TF = "teacher_forced"  # retain_metrics.MODE: numbers computed from token scores
AGREEMENT_MODE = "cloze"
SIGNIFICANCE = 0.05
NO_POWER = "†"
# Presence of either marks a cell evaluated against the retain model.
MARKERS = (f"forget_quality@{TF}", f"retain_agreement@{AGREEMENT_MODE}")

# (header, metric name without mode): value beside the retain model's ``<name>.retain_model``
PAIRED = (
    ("truth ratio forget", "truth_ratio.forget"),
    ("model utility", "model_utility"),
    ("exact memorization", "exact_memorization"),
    ("extraction strength", "extraction_strength"),
)
AGREEMENT = (
    ("retain agreement", "retain_agreement"),
    ("forget", "retain_agreement.forget"),
    ("entailed", "retain_agreement.entailed"),
    ("Q-", "retain_agreement.minus"),
    ("over-forgetting", "over_forgetting"),
    ("under-forgetting", "under_forgetting"),
)
RELEARN = (
    ("before the attack", "relearn.before"),
    ("recovered", "relearn.recovered"),
    ("retain model recovered", "relearn.recovered.retain_model"),
    ("gap", "relearn.gap"),
)

READING = (
    "The *retain model* is the world model trained from scratch (same spec, seed and "
    "tokenizer) on the world without the forget set, its closure recomputed: what a perfect "
    "unlearner would become (docs/unlearning.md). **Forget quality** is the KS p-value between "
    "the two models' truth ratios on the forget facts (TOFU): near 1, the unlearned model is "
    f"indistinguishable from the retain model; in bold, p >= {SIGNIFICANCE}; {NO_POWER}, too "
    f"few forget facts (k = 1) for the test ever to reach p < {SIGNIFICANCE}, so no evidence "
    "either way. The other metrics read unlearned / retain model, the closer the better; "
    "PrivLeak is already relative to the retain model (0 ideal, negative: the forget facts "
    "still look trained on, positive: over-unlearned). Retain agreement is the share of probes "
    "answered as the retain model answers them; the Q- probes that ask a fact the retain model "
    "lacks (removed with the forget set's closure) are excluded from it and from model "
    "utility. Over-forgetting: of the Q+ probes the retain model still answers with the "
    "original object (other facts imply it), the share the unlearned model lost; "
    "under-forgetting: of the others, the share it still answers so."
)


def has_retain_metrics(cell: Any) -> bool:
    """Whether the cell was evaluated against the retain model."""
    return any((cell.metrics.get(name) or {}).get("value") is not None for name in MARKERS)


def _entry(cell: Any, name: str) -> Mapping[str, Any] | None:
    """The metric's record if it has a value (names here carry their mode)."""
    entry = cell.metrics.get(name)
    return entry if entry and entry.get("value") is not None else None


def _value(cell: Any, name: str) -> float | None:
    entry = _entry(cell, name)
    return None if entry is None else float(entry["value"])


def _num(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "–"
    return f"{x:.3f}" if abs(x) < 1000 else f"{x:.2e}"  # PrivLeak explodes as AUC' -> 0


def _p(x: float) -> str:
    """A p-value: three decimals, scientific notation below 0.001."""
    return f"{x:.3f}" if x >= 0.001 or x == 0 else f"{x:.1e}"


@lru_cache(maxsize=64)
def min_p_value(n: int) -> float:
    """The smallest p-value the two-sample KS test can give with n facts on each side (the two
    samples fully separated): at n = 3 it is 0.1, so the test cannot reject at 0.05."""
    from scipy.stats import ks_2samp

    if n < 1:
        return 1.0
    return float(ks_2samp(list(range(n)), list(range(n, 2 * n))).pvalue)


def _forget_quality(cell: Any) -> str:
    entry = _entry(cell, f"forget_quality@{TF}")
    if entry is None:
        return "–"
    p, n = float(entry["value"]), int(entry.get("n") or 0)
    text = f"{_p(p)} ({n})"
    if min_p_value(n) >= SIGNIFICANCE:
        return f"{text} {NO_POWER}"
    return f"**{text}**" if p >= SIGNIFICANCE else text


def _paired(cell: Any, name: str) -> str:
    mine, theirs = _value(cell, f"{name}@{TF}"), _value(cell, f"{name}.retain_model@{TF}")
    if mine is None and theirs is None:
        return "–"
    return f"{_num(mine)} / {_num(theirs)}"


def _order(cells: Sequence[Any]) -> list[Any]:
    return sorted(
        cells,
        key=lambda c: (c.method == BASELINE, c.method, LEVELS.index(c.level)
                       if c.level in LEVELS else len(LEVELS), c.scale, c.seed),
    )  # fmt: skip


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _keys(cells: Sequence[Any]) -> tuple[list[str], Any]:
    """The leading columns (method, level, k, and seed when cells have several) and a row
    function for them."""
    seeds = len({c.seed for c in cells}) > 1
    head = ["method", "level", "k", *(["seed"] if seeds else [])]

    def key(c: Any) -> list[str]:
        return [c.method, c.level, str(c.scale), *([str(c.seed)] if seeds else [])]

    return head, key


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def method_means(cells: Sequence[Any], method: str) -> dict[str, float | None]:
    """Means over the method's unlearn cells with retain metrics: forget quality, retain
    agreement (cloze), over- and under-forgetting and the relearning gap."""
    sel = [c for c in cells if c.method == method and c.kind == "unlearn" and has_retain_metrics(c)]
    return {
        "forget_quality": _mean([_value(c, f"forget_quality@{TF}") for c in sel]),
        "retain_agreement": _mean([_value(c, f"retain_agreement@{AGREEMENT_MODE}") for c in sel]),
        "over_forgetting": _mean([_value(c, f"over_forgetting@{AGREEMENT_MODE}") for c in sel]),
        "under_forgetting": _mean([_value(c, f"under_forgetting@{AGREEMENT_MODE}") for c in sel]),
        "relearn_gap": _mean([_value(c, f"relearn.gap@{TF}") for c in sel]),
    }


def _summary(cells: Sequence[Any]) -> list[str]:
    head = ["method", "cells", "mean forget quality", "indistinguishable (p >= 0.05)",
            "retain agreement", "over-forgetting", "under-forgetting", "relearn gap"]  # fmt: skip
    rows = []
    for method in sorted({c.method for c in cells}, key=lambda m: (m == BASELINE, m)):
        sel = [c for c in cells if c.method == method]
        fq = [e for c in sel if (e := _entry(c, f"forget_quality@{TF}")) is not None]
        powered = [e for e in fq if min_p_value(int(e.get("n") or 0)) < SIGNIFICANCE]
        same = sum(float(e["value"]) >= SIGNIFICANCE for e in powered)
        m = method_means(cells, method)
        rows.append([
            method, str(len(sel)),
            "–" if m["forget_quality"] is None else _p(m["forget_quality"]),
            f"{same}/{len(powered)}" if powered else "–", _num(m["retain_agreement"]),
            _num(m["over_forgetting"]), _num(m["under_forgetting"]), _num(m["relearn_gap"]),
        ])  # fmt: skip
    return _table(head, rows)


def unlearning_section(cells: Sequence[Any]) -> list[str]:
    """The report's markdown lines for the unlearning section (module docstring): [] without
    unlearn cells, a one-line note when none of them has metrics against the retain model."""
    unlearn = [c for c in cells if c.kind == "unlearn"]
    if not unlearn:
        return []
    title = "## Unlearning against the retain model"
    sel = _order([c for c in unlearn if has_retain_metrics(c)])
    if not sel:
        return [
            title,
            "",
            "No retain-model metrics: these unlearn cells were evaluated without a retain model "
            "(`ksmith pipeline evaluate --retain`), so forget quality, retain agreement and the "
            "relearning attack are not measured.",
            "",
        ]
    head, key = _keys(sel)
    missing = len(unlearn) - len(sel)
    out = [title, "", READING, ""]
    if missing:
        out += [f"{missing} unlearn cell(s) have no retain-model metrics and are left out.", ""]
    out += [
        "Per method, means over its cells (indistinguishable: cells with p >= 0.05 among those "
        "whose forget set is large enough for the test to reject; relearn gap: over cells with "
        "k > 1):",
        "",
        *_summary(sel),
        "",
        "### Forget quality, truth ratio, utility, privacy, memorization",
        "",
        "Forget quality with its number of forget facts in brackets; the other columns: "
        "unlearned / retain model, from teacher-forced token scores (PrivLeak: min-k%, a "
        "fraction, relative to the retain model).",
        "",
    ]
    rows = []
    for c in sel:
        rows.append([
            *key(c), _forget_quality(c), _paired(c, PAIRED[0][1]), _paired(c, PAIRED[1][1]),
            _num(_value(c, f"privleak.min_k@{TF}")),
            *(_paired(c, name) for _, name in PAIRED[2:]),
        ])  # fmt: skip
    cols = ["forget quality", *(h for h, _ in PAIRED[:2]), "PrivLeak (min-k)"]
    cols += [h for h, _ in PAIRED[2:]]
    out += [*_table([*head, *cols], rows), ""]
    out += [
        f"### Agreement with the retain model ({AGREEMENT_MODE})",
        "",
        "Each value: the share, its 95% bootstrap interval over probes and the number of probes. "
        "forget / entailed: the Q+ probes of the forgotten facts and of the facts entailed by "
        "them; Q-: the unrelated probes the retain model still has.",
        "",
    ]
    rows = [[*key(c), *(fmt_entry(_entry(c, f"{n}@{AGREEMENT_MODE}")) for _, n in AGREEMENT)]
            for c in sel]  # fmt: skip
    out += [*_table([*head, *(h for h, _ in AGREEMENT)], rows), ""]
    out += [
        "### Relearning attack",
        "",
        "The unlearned model fine-tuned for a few steps on a seeded part of its forget set; "
        "the share of the held-out forget facts whose answer is then greedy again, against the "
        "retain model under the same attack (gap = recovered - retain model recovered; near 0: "
        "no more comes back than the retain model can infer). n/a: a k = 1 cell has no second "
        "request to hold out.",
        "",
    ]
    rows = []
    for c in sel:
        vals = [_entry(c, f"{n}@{TF}") for _, n in RELEARN]
        if all(v is None for v in vals):
            rows.append([*key(c), *("n/a" for _ in RELEARN)])
        else:
            rows.append([*key(c), *(fmt_entry(v) for v in vals[:-1]), _gap(vals[-1])])
    out += [*_table([*head, *(h for h, _ in RELEARN)], rows), ""]
    return out


def _gap(entry: Mapping[str, Any] | None) -> str:
    return "–" if entry is None else f"{float(entry['value']):+.3f}"


def retain_dvc_metrics(cells: Sequence[Any], prefix: Mapping[str, str]) -> dict[str, dict]:
    """Two headline numbers per method for `dvc metrics show`: the mean forget quality and the
    mean retain agreement (cloze) over its unlearn cells, under ``<prefix[method]>.
    forget_quality`` and ``.retain_agreement`` (`prefix`: the method's key prefix for its
    unlearn summary, as `ksmith.pipeline.report.dvc_metrics` names it). Methods without retain
    metrics get nothing."""
    out: dict[str, dict[str, float]] = {}
    for method in sorted({c.method for c in cells if c.kind == "unlearn"}):
        means = method_means(cells, method)
        row = {
            f"{prefix.get(method, method)}.{name}": round(means[name], 4)
            for name in ("forget_quality", "retain_agreement")
            if means[name] is not None
        }
        if row:
            out[method] = row
    return out
