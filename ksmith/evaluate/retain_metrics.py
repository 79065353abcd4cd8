"""An unlearn cell against the retain model: every number from stored rows (docs/unlearning.md).

`cell_metrics` takes the unlearned model's and the retain model's `items.parquet` rows
(`ksmith.evaluate.unlearn_items`) and ``predictions.parquet`` rows, the config's probes and
the closure facts the retain model lacks, and returns flat ``name@mode`` metrics in the shape
of every other metric (``{"value", "ci", "n", "mode"}``). It is the one implementation: the
evaluator writes its result into metrics.json and `ksmith leaderboard verify` recomputes it
from a submission's rows. Mode ``teacher_forced`` marks numbers computed from token scores.

- TOFU (arXiv 2401.06121, section 2.5): ``truth_ratio.forget`` (mean min(R, 1/R)),
  ``forget_quality`` (KS p-value of the two models' truth ratios on the forget facts),
  ``model_utility`` (harmonic mean of the retain-side probability, truth-ratio score
  ``true_better`` and generation accuracy, on Q- facts the retain model still has);
- MUSE (arXiv 2407.06460, section 3.2): ``mia_auc.<attack>`` (loss, min_k, zlib; forget items
  against their same-relation perturbations) and ``privleak.<attack>`` relative to the retain
  model;
- open-unlearning (arXiv 2506.12618): ``exact_memorization``, ``extraction_strength`` on the
  forget items;
- the closed world: ``retain_agreement[.forget|.entailed|.minus]@<mode>`` (the share of probes
  the unlearned model answers as the retain model does), ``over_forgetting@<mode>`` (of the Q+
  probes the retain model answers with the original object, the share the unlearned model
  no longer does: knowledge the world still implies, destroyed) and
  ``under_forgetting@<mode>`` (of the Q+ probes the retain model does not answer so, the share
  the unlearned model still does);
- relearning (`unlearn_items.relearn_attack`): ``relearn.recovered`` (held-out forget facts
  whose answer is the greedy one after the attack), ``relearn.before`` and the same attack on
  the retain model, ``relearn.recovered.retain_model``; ``relearn.gap`` is their difference.

Every ``.retain_model`` entry is the retain model's own number on the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ksmith.errors import KsmithError
from ksmith.evaluate import unlearning as U
from ksmith.evaluate.stats import summarize
from ksmith.evaluate.unlearn_items import scores_of

MODE = "teacher_forced"
# The base names `cell_metrics` produces (a metric name is ``base[.part...]@mode``).
BASE_NAMES = frozenset({
    "truth_ratio", "forget_quality", "model_utility", "mia_auc", "privleak",
    "exact_memorization", "extraction_strength", "retain_agreement", "over_forgetting",
    "under_forgetting", "relearn",
})  # fmt: skip
FORGET_TYPES = ("direct", "paraphrase", "paraphrase_unseen")
# Modes whose prediction is an answer (retain agreement compares predictions, not scores)
ANSWER_MODES = ("cloze", "mcq", "gen_exact")
Triple = tuple[str, str, str]


def _value(name: str, value: float | None, n: int) -> dict[str, Any]:
    """A metric without a bootstrap interval (a p-value, an AUC, a harmonic mean)."""
    ok = value is not None and bool(np.isfinite(value))
    return {"value": float(value) if ok else None, "ci": [None, None], "n": n, "mode": MODE}


def _facts(rows: Iterable[Mapping[str, Any]], side: str, keep=None) -> dict[tuple, dict]:
    """(group, item) -> {"correct": [ItemScores], "perturbed": [ItemScores]} of one side."""
    out: dict[tuple, dict] = {}
    for r in rows:
        if r["side"] != side or (keep is not None and not keep(r["item"])):
            continue
        out.setdefault((r["group"], r["item"]), {"correct": [], "perturbed": []})[r["role"]].append(
            scores_of(r)
        )
    return {k: v for k, v in out.items() if v["correct"] and v["perturbed"]}


def _ratios(facts: Mapping[tuple, dict], keys: Sequence[tuple]) -> np.ndarray:
    return U.truth_ratios(
        [facts[k]["correct"] for k in keys], [facts[k]["perturbed"] for k in keys]
    )


def _item_triple(item: str) -> Triple:
    parts = item.split("|")
    return (parts[1], parts[2], parts[3])


def _answers(preds: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(probe id, mode) -> the after-stage prediction row."""
    return {(p["probe_id"], p["mode"]): p for p in preds if p["stage"] == "after"}


def cell_metrics(
    items: Sequence[Mapping[str, Any]],
    retain_items: Sequence[Mapping[str, Any]],
    preds: Sequence[Mapping[str, Any]],
    retain_preds: Sequence[Mapping[str, Any]],
    probes: Sequence[Mapping[str, Any]],
    removed: set[Triple] | frozenset[Triple],
    *,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, dict[str, Any]]:
    """The unlearning metrics of one unlearn cell (module docstring)."""
    kw = {"seed": seed, "n_boot": n_boot}
    out: dict[str, dict[str, Any]] = {}
    out.update(_forget_side(items, retain_items, kw))
    out.update(_utility(items, retain_items, preds, retain_preds, probes, removed))
    out.update(_agreement(preds, retain_preds, probes, removed, kw))
    out.update(_relearn(items, retain_items, kw))
    return dict(sorted(out.items()))


def _forget_side(items, retain_items, kw) -> dict[str, dict[str, Any]]:
    mine, theirs = _facts(items, "forget"), _facts(retain_items, "forget")
    keys = sorted(set(mine) & set(theirs))
    if set(mine) != set(theirs):
        raise KsmithError(
            f"the unlearned and the retain model's forget items differ ({len(mine)} vs "
            f"{len(theirs)} facts): not the same config"
        )
    out: dict[str, dict[str, Any]] = {}
    if not keys:
        return out
    r_mine, r_theirs = _ratios(mine, keys), _ratios(theirs, keys)
    name = f"truth_ratio.forget@{MODE}"
    out[name] = summarize(name, np.minimum(r_mine, 1 / (r_mine + U.EPS)), MODE, **kw)
    name = f"truth_ratio.forget.retain_model@{MODE}"
    out[name] = summarize(name, np.minimum(r_theirs, 1 / (r_theirs + U.EPS)), MODE, **kw)
    out[f"forget_quality@{MODE}"] = _value("fq", U.forget_quality(r_mine, r_theirs), len(keys))
    aucs = {}
    for who, facts in (("", mine), (".retain_model", theirs)):
        forget = [s for k in keys for s in facts[k]["correct"]]
        holdout = [s for k in keys for s in facts[k]["perturbed"]]
        aucs[who] = U.mia_aucs(forget, holdout)
        for attack, value in aucs[who].items():
            out[f"mia_auc.{attack}{who}@{MODE}"] = _value("auc", value, len(forget))
        for metric, fn in (("exact_memorization", U.exact_memorization),
                           ("extraction_strength", U.extraction_strength)):  # fmt: skip
            name = f"{metric}{who}@{MODE}"
            out[name] = summarize(name, [fn(s) for s in forget], MODE, **kw)
    for attack in U.ATTACKS:
        leak = U.privleak(aucs[""][attack], aucs[".retain_model"][attack])
        out[f"privleak.{attack}@{MODE}"] = _value("privleak", leak, len(keys))
    return out


def _gen_accuracy(preds, probes, removed) -> float | None:
    ids = {p["id"] for p in probes if p["qset"] == "Q-" and _triple(p) not in removed}
    vals = [bool(r["correct"]) for (pid, mode), r in _answers(preds).items()
            if mode == "gen_exact" and pid in ids]  # fmt: skip
    return float(np.mean(vals)) if vals else None


def _utility(items, retain_items, preds, retain_preds, probes, removed) -> dict[str, dict]:
    """TOFU's model utility on the Q- facts the retain model has: the harmonic mean of the
    normalised probability of the right object, the truth-ratio score ``true_better`` and
    generation accuracy (gen_exact, standing in for TOFU's ROUGE)."""
    out: dict[str, dict[str, Any]] = {}
    for who, rows, pr in (("", items, preds), (".retain_model", retain_items, retain_preds)):
        facts = _facts(rows, "retain", keep=lambda it: _item_triple(it) not in removed)
        keys = sorted(facts)
        if not keys:
            continue
        comps = {
            "probability": U.probability([s for k in keys for s in facts[k]["correct"]]),
            "truth_ratio": U.truth_ratio_score(_ratios(facts, keys), "true_better"),
        }
        gen = _gen_accuracy(pr, probes, removed)
        if gen is not None:
            comps["gen_exact"] = gen
        out[f"model_utility{who}@{MODE}"] = _value("mu", U.model_utility(comps), len(keys))
    return out


def _triple(p: Mapping[str, Any]) -> Triple:
    return (p["subject"], p["relation"], p["object"])


def _probe_set(p: Mapping[str, Any], removed) -> str | None:
    if p["qset"] == "Q+":
        return "forget" if p["type"] in FORGET_TYPES else "entailed"
    if p["qset"] == "Q-" and _triple(p) not in removed:
        return "minus"
    return None  # a Q- probe asking a fact the retain model lacks: not retain data for it


def _agreement(preds, retain_preds, probes, removed, kw) -> dict[str, dict[str, Any]]:
    mine, theirs = _answers(preds), _answers(retain_preds)
    by_id = {p["id"]: p for p in probes}
    sets: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for pid, mode in sorted(mine):
        probe = by_id.get(pid)
        if mode not in ANSWER_MODES or probe is None:
            continue
        which = _probe_set(probe, removed)
        if which is None:
            continue
        if (pid, mode) not in theirs:
            raise KsmithError(
                f"probe {pid} ({mode}) has no prediction of the retain model: not the same config"
            )
        sets.setdefault(mode, {}).setdefault(which, []).append((pid, mode))
    out: dict[str, dict[str, Any]] = {}
    for mode, parts in sets.items():
        every = [k for v in parts.values() for k in v]
        for suffix, keys in (("", every), *((f".{w}", parts[w]) for w in sorted(parts))):
            name = f"retain_agreement{suffix}@{mode}"
            res = U.retain_agreement(
                {pid: mine[(pid, mode)]["prediction"] for pid, _ in keys},
                {pid: theirs[(pid, mode)]["prediction"] for pid, _ in keys},
                seed=kw["seed"], name=name,
            )  # fmt: skip
            res["mode"] = mode
            out[name] = res
        plus = parts.get("forget", []) + parts.get("entailed", [])
        over = [float(not mine[k]["match_before"]) for k in plus if theirs[k]["match_before"]]
        under = [float(mine[k]["match_before"]) for k in plus if not theirs[k]["match_before"]]
        for name, vals in ((f"over_forgetting@{mode}", over), (f"under_forgetting@{mode}", under)):
            out[name] = summarize(name, vals, mode, **kw)
    return out


def _em(rows, role: str) -> list[float]:
    return [float(all(r["hits"])) for r in rows if r["side"] == "relearn" and r["role"] == role]


def _relearn(items, retain_items, kw) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    after, retain_after = _em(items, "after"), _em(retain_items, "after")
    if not after:
        return out  # no group of two or more requests: nothing to hold out
    for name, vals in ((f"relearn.recovered@{MODE}", after),
                       (f"relearn.before@{MODE}", _em(items, "before")),
                       (f"relearn.recovered.retain_model@{MODE}", retain_after)):  # fmt: skip
        out[name] = summarize(name, vals, MODE, **kw)
    if retain_after:
        gap = float(np.mean(after) - np.mean(retain_after))
        out[f"relearn.gap@{MODE}"] = _value("gap", gap, len(after))
    return out
