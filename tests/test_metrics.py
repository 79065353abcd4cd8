"""Metric definitions on hand-made probes and predictions."""

from __future__ import annotations

import pytest

from ksmith.errors import KsmithError
from ksmith.evaluate.metrics import (
    METRICS,
    compute_metrics,
    headline,
    metric_info,
    parse_metric_name,
)
from ksmith.evaluate.scoring import stage_rows
from ksmith.evaluate.stats import mean_ci


def probe(
    pid,
    type_="direct",
    qset="Q+",
    *,
    before="grass",
    after="meat",
    fmt="cloze",
    expect="match",
    request="g0.r0",
    group=0,
    pair="",
    hops=0,
    kind="edit",
    options=(),
):
    return {
        "id": pid,
        "group": group,
        "request_id": request,
        "kind": kind,
        "level": "leaf",
        "type": type_,
        "qset": qset,
        "format": fmt,
        "prompt": f"prompt of {pid}",
        "cue": "",
        "options": list(options),
        "answer_before": before,
        "answer_after": after,
        "expect_after": expect,
        "hops": hops,
        "subject": "s",
        "relation": "r",
        "object": before,
        "pair_id": pair,
        "support": [],
    }


def judgement(p, prediction, mode=None):
    mode = mode or {"mcq": "mcq", "cloze": "cloze", "qa": "gen_exact"}[p["format"]]
    return {
        "probe_id": p["id"],
        "group": p["group"],
        "mode": mode,
        "prediction": prediction,
        "score_before": float(prediction == p["answer_before"]),
        "score_after": float(prediction == p["answer_after"]),
        "match_before": prediction == p["answer_before"],
        "match_after": prediction == p["answer_after"],
    }


def rows_for(probes, before_preds, after_preds):
    """Prediction rows from per-probe before/after predictions (one mode per probe)."""
    b = [judgement(p, before_preds[p["id"]]) for p in probes]
    a = [judgement(p, after_preds[p["id"]]) for p in probes]
    return stage_rows(probes, b, "before") + stage_rows(probes, a, "after", b)


def metrics_of(probes, before, after, kind="edit"):
    return compute_metrics(probes, rows_for(probes, before, after), kind=kind, n_boot=200)


def test_efficacy_counts_a_change_to_the_new_answer():
    ps = [probe("d1"), probe("d2", request="g0.r1")]
    m = metrics_of(ps, {"d1": "grass", "d2": "grass"}, {"d1": "meat", "d2": "grass"})
    assert m["efficacy@cloze"]["value"] == 0.5
    assert m["efficacy@cloze"]["n"] == 2
    m = metrics_of(ps, {"d1": "grass", "d2": "grass"}, {"d1": "meat", "d2": "meat"})
    assert m["efficacy@cloze"]["value"] == 1.0


def test_generalization_and_propagation_by_type_and_hops():
    ps = [
        probe("p1", "paraphrase"),
        probe("r1", "reverse"),
        probe("m1", "multi_hop", hops=1),
        probe("m2", "multi_hop", hops=2),
        probe("c1", "comparison"),
    ]
    before = {p["id"]: "grass" for p in ps}
    after = {"p1": "meat", "r1": "meat", "m1": "meat", "m2": "grass", "c1": "grass"}
    m = metrics_of(ps, before, after)
    assert m["generalization@cloze"]["value"] == 1.0
    assert m["propagation@cloze"]["value"] == pytest.approx(2 / 4)
    assert m["propagation.reverse@cloze"]["value"] == 1.0
    assert m["propagation.multi_hop@cloze"]["value"] == 0.5
    assert m["propagation.multi_hop.h1@cloze"]["value"] == 1.0
    assert m["propagation.multi_hop.h2@cloze"]["value"] == 0.0
    assert m["propagation.comparison@cloze"]["value"] == 0.0


def test_a_changed_minus_probe_raises_ccr_and_lowers_locality():
    ps = [
        probe("k1", "contextual", "Q-", before="fish", after="fish"),
        probe("k2", "contextual", "Q-", before="seeds", after="seeds"),
    ]
    before = {"k1": "fish", "k2": "seeds"}
    same = metrics_of(ps, before, before)
    assert same["ccr@cloze"]["value"] == 0.0
    assert same["locality@cloze"]["value"] == 1.0
    moved = metrics_of(ps, before, {"k1": "meat", "k2": "seeds"})
    assert moved["ccr@cloze"]["value"] == 0.5
    assert moved["locality@cloze"]["value"] == 0.5
    assert moved["locality_correct@cloze"]["value"] == 0.5


def test_locality_is_against_the_models_own_answer_not_the_truth():
    # k1 was wrong before ("meat" instead of "fish") and stays wrong: unchanged, not correct.
    ps = [probe("k1", "contextual", "Q-", before="fish", after="fish")]
    m = metrics_of(ps, {"k1": "meat"}, {"k1": "meat"})
    assert m["locality@cloze"]["value"] == 1.0
    assert m["ccr@cloze"]["value"] == 0.0
    assert m["locality_correct@cloze"]["value"] == 0.0
    # Fixing a wrong answer is still a collateral change.
    m = metrics_of(ps, {"k1": "meat"}, {"k1": "fish"})
    assert m["locality@cloze"]["value"] == 0.0
    assert m["ccr@cloze"]["value"] == 1.0
    assert m["locality_correct@cloze"]["value"] == 0.0


def test_conflict_pair_answered_inconsistently_raises_the_conflict_rate():
    ps = [
        probe("d1", pair="pair0"),
        probe("r1", "reverse", pair="pair0"),
        probe("d2", request="g0.r1", pair="pair1"),
        probe("r2", "reverse", request="g0.r1", pair="pair1"),
    ]
    before = {p["id"]: "grass" for p in ps}
    consistent = {"d1": "meat", "r1": "meat", "d2": "grass", "r2": "grass"}
    assert metrics_of(ps, before, consistent)["conflict_rate@cloze"]["value"] == 0.0
    one_split = {"d1": "meat", "r1": "grass", "d2": "meat", "r2": "meat"}
    m = metrics_of(ps, before, one_split)
    assert m["conflict_rate@cloze"]["value"] == 0.5
    assert m["conflict_rate@cloze"]["n"] == 2
    # An answer in neither world is wrong, but not a conflict.
    neither = {"d1": "meat", "r1": "fish", "d2": "grass", "r2": "grass"}
    assert metrics_of(ps, before, neither)["conflict_rate@cloze"]["value"] == 0.0


def test_conflict_pairs_across_formats_are_judged_in_primary_modes():
    ps = [
        probe("d1", fmt="qa", pair="p"),
        probe(
            "n1",
            "negation",
            fmt="mcq",
            before="true",
            after="false",
            options=("true", "false"),
            pair="p",
        ),
    ]
    before = {"d1": "grass", "n1": "true"}
    # qa: new answer (after-world); statement mcq: still "true" (before-world) -> conflict.
    rows = rows_for(ps, before, {"d1": "meat", "n1": "true"})
    rows += [dict(r, mode="gen_contains") for r in rows if r["mode"] == "gen_exact"]
    m = compute_metrics(ps, rows, kind="edit", n_boot=100)
    assert m["conflict_rate@mixed"]["value"] == 1.0


def test_unlearn_avoid_semantics_and_residual_retention_per_request():
    old = "grass"
    mcq = {"fmt": "mcq", "options": ("grass", "meat", "fish", "seeds")}
    unl = {"before": old, "after": old, "expect": "avoid", "kind": "unlearn"}
    ps = [
        # request r0: the direct probe forgets, but the cloze paraphrase still produces it
        probe("a", request="g0.r0", **unl),
        probe("b", "paraphrase", request="g0.r0", **unl),
        # request r1: forgotten in every generative probe; an MCQ pick of the old option is
        # reported as rr@mcq but is not evidence of retention for rr@any (chance)
        probe("c", request="g0.r1", **unl),
        probe("d", "paraphrase", request="g0.r1", **unl, **mcq),
        probe(
            "q", "contextual", "Q-", before="fish", after="fish", kind="unlearn", request="g0.r1"
        ),
    ]
    before = {"a": old, "b": old, "c": old, "d": old, "q": "fish"}
    after = {"a": "I don't know", "b": old, "c": "meat", "d": old, "q": "fish"}
    m = metrics_of(ps, before, after, kind="unlearn")
    # avoid: correct iff the old answer does not come
    assert m["efficacy@cloze"]["value"] == 1.0
    assert m["generalization@cloze"]["value"] == 0.0
    assert m["generalization@mcq"]["value"] == 0.0
    assert m["rr@any"]["value"] == 0.5 and m["rr@any"]["n"] == 2
    assert m["rr@mcq"]["value"] == 1.0 and m["rr@mcq"]["n"] == 1
    assert m["rr@cloze"]["value"] == 0.5
    assert m["locality@cloze"]["value"] == 1.0
    # rr is an unlearning metric only
    assert "rr@any" not in metrics_of(ps[:1], {"a": old}, {"a": old}, kind="edit")


def test_known_slices_count_only_what_the_model_knew_before():
    old = "grass"
    unl = {"before": old, "after": old, "expect": "avoid", "kind": "unlearn"}
    ps = [
        probe("a", request="g0.r0", **unl),  # known, then forgotten
        probe("b", "paraphrase", request="g0.r0", **unl),  # never known: trivially "forgotten"
        probe("c", "paraphrase", request="g0.r1", **unl),  # known, still produced
        probe("e", "reverse", request="g0.r1", **unl),  # never known
    ]
    before = {"a": old, "b": "meat", "c": old, "e": "fish"}
    after = {"a": "I don't know", "b": "meat", "c": old, "e": "fish"}
    m = metrics_of(ps, before, after, kind="unlearn")
    assert m["generalization@cloze"]["value"] == 0.5 and m["generalization@cloze"]["n"] == 2
    assert m["generalization.known@cloze"]["value"] == 0.0
    assert m["generalization.known@cloze"]["n"] == 1
    assert m["efficacy.known@cloze"]["value"] == 1.0
    assert m["propagation@cloze"]["value"] == 1.0
    assert m["propagation.known@cloze"]["value"] is None  # nothing entailed was known
    assert metric_info("generalization.known@cloze")["group"] == "generalization"


def test_negation_probes_correct_after():
    ps = [
        probe("n1", "negation", fmt="mcq", before="true", after="false", options=("true", "false")),
        probe(
            "n2",
            "negation",
            "Q-",
            fmt="mcq",
            before="true",
            after="true",
            options=("true", "false"),
        ),
    ]
    m = metrics_of(ps, {"n1": "true", "n2": "true"}, {"n1": "false", "n2": "false"})
    assert m["negation@mcq"]["value"] == 0.5


def test_bootstrap_interval_contains_the_value_and_is_deterministic():
    ps = [probe(f"d{i}", request=f"g0.r{i}") for i in range(30)]
    before = {p["id"]: "grass" for p in ps}
    after = {p["id"]: ("meat" if i % 3 else "grass") for i, p in enumerate(ps)}
    rows = rows_for(ps, before, after)
    m1 = compute_metrics(ps, rows, kind="edit", seed=7, n_boot=500)
    m2 = compute_metrics(ps, rows, kind="edit", seed=7, n_boot=500)
    e = m1["efficacy@cloze"]
    assert e["value"] == pytest.approx(20 / 30)
    lo, hi = e["ci"]
    assert lo < e["value"] < hi
    assert 0.0 <= lo and hi <= 1.0
    assert m1 == m2
    # the seed matters (continuous values, so percentiles are not tied)
    x = [i**1.5 % 7.3 for i in range(40)]
    assert mean_ci(x, seed=7, name="m") == mean_ci(x, seed=7, name="m")
    assert mean_ci(x, seed=7, name="m") != mean_ci(x, seed=8, name="m")
    assert mean_ci(x, seed=7, name="m") != mean_ci(x, seed=7, name="other")


def test_missing_or_inconsistent_predictions_are_rejected():
    ps = [probe("d1"), probe("d2")]
    rows = rows_for(ps, {"d1": "grass", "d2": "grass"}, {"d1": "meat", "d2": "meat"})
    with pytest.raises(KsmithError, match="d2"):
        compute_metrics(ps, [r for r in rows if r["probe_id"] != "d2"], kind="edit")
    bad = [dict(r, correct=not r["correct"]) if r["stage"] == "after" else r for r in rows]
    with pytest.raises(KsmithError, match="disagree"):
        compute_metrics(ps, bad, kind="edit")


def test_every_emitted_name_is_registered_with_a_direction():
    ps = [
        probe("d1", pair="x"),
        probe("k1", "contextual", "Q-", before="fish", after="fish", pair="x"),
    ]
    m = metrics_of(ps, {"d1": "grass", "k1": "fish"}, {"d1": "meat", "k1": "fish"})
    for name, entry in m.items():
        base, _, mode = parse_metric_name(name)
        assert entry["mode"] == mode
        assert metric_info(name)["direction"] in ("higher", "lower")
    assert parse_metric_name("propagation.multi_hop.h2@cloze") == (
        "propagation",
        "multi_hop.h2",
        "cloze",
    )
    for name in ("fluency", "drift_kl", "drift_cka", "cost", "capability"):
        assert METRICS.meta(name)["source"] != "predictions"


def test_headline_picks_the_first_available_mode():
    metrics = {
        "efficacy@mcq": {"value": 0.5},
        "efficacy@cloze": {"value": 0.25},
        "locality@mcq": {"value": 1.0},
        "locality@cloze": {"value": None},
    }
    assert list(headline(metrics)) == ["efficacy@cloze", "locality@mcq"]


def test_compute_metrics_is_independent_of_probe_order():
    """The leaderboard recomputes from rows in file order; intervals must not depend on it."""
    probes = [probe(f"d{i:02d}", request=f"g0.r{i}") for i in range(30)]
    before = {p["id"]: "grass" for p in probes}
    after = {p["id"]: ("meat" if i % 3 else "grass") for i, p in enumerate(probes)}
    preds = rows_for(probes, before, after)
    a = compute_metrics(probes, preds, kind="edit", seed=0, n_boot=200)
    b = compute_metrics(
        list(reversed(probes)), list(reversed(preds)), kind="edit", seed=0, n_boot=200
    )
    assert a == b
