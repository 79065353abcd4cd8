"""Metrics: one registry, and the pure function that recomputes them from predictions.

Naming scheme: ``<metric>[.<slice>...]@<mode>``. ``<metric>`` is a registered name (its meta
gives direction, group, description, kinds); an optional slice narrows the items
(``propagation.multi_hop.h2@cloze``: multi-hop probes at 2 hops); ``<mode>`` is how items were
scored: ``mcq``, ``cloze``, ``gen_exact``, ``gen_contains`` for probe metrics; ``any`` (RR:
any mode counts), ``mixed`` (conflict pairs whose two probes have different formats, each
judged in its primary mode); ``generation``, ``next_token``, ``hidden`` for model-derived
metrics; ``update`` for cost; ``lmeval`` for general capability.

Every value is the mean of per-item values (probes, requests, pairs, prompts or groups), with a
seeded 95% percentile-bootstrap interval over those items (stats.py). Prediction-derived
metrics (``source="predictions"``) are computed here by `compute_metrics`; model-derived ones
(fluency, drift) by the runner, cost from update.json, capability by lm-eval.

Headline (`HEADLINE`, for tables): efficacy, generalization, propagation, locality, ccr,
conflict_rate, negation, rr (unlearning), fluency and drift_kl, each in the first available mode
of `HEADLINE_MODES` (cloze first: teacher-forced token accuracy, as KnowEdit scores edits).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ksmith.errors import KsmithError
from ksmith.evaluate.quality import kl_divergence, linear_cka, ngram_entropy
from ksmith.evaluate.scoring import PRIMARY_MODE
from ksmith.evaluate.stats import summarize
from ksmith.evaluate.view import Item, PredictionView
from ksmith.registry import Registry

KINDS = ("edit", "unlearn")
PROPAGATION_TYPES = ("reverse", "multi_hop", "comparison")
HEADLINE: tuple[str, ...] = (
    "efficacy",
    "generalization",
    "propagation",
    "locality",
    "ccr",
    "conflict_rate",
    "negation",
    "rr",
    "fluency",
    "drift_kl",
)
HEADLINE_MODES: tuple[str, ...] = (
    "any",
    "cloze",
    "mcq",
    "gen_exact",
    "gen_contains",
    "mixed",
    "generation",
    "next_token",
)

Series = tuple[str, str, Sequence[float]]  # (full name, mode, per-item values)
METRICS: Registry[Callable[..., Any]] = Registry("metric", entry_point_group="ksmith.metrics")


def metric(
    name: str,
    *,
    direction: str,
    group: str,
    description: str,
    kinds: Sequence[str] = KINDS,
    source: str = "predictions",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a metric. ``source="predictions"`` functions take a `PredictionView` and yield
    `Series`; other sources register the function computing their per-item values."""
    if direction not in ("higher", "lower"):
        raise ValueError(direction)
    return METRICS.register(
        name,
        direction=direction,
        group=group,
        description=description,
        kinds=tuple(kinds),
        source=source,
    )


def parse_metric_name(name: str) -> tuple[str, str, str]:
    """``"propagation.multi_hop.h2@cloze"`` -> ``("propagation", "multi_hop.h2", "cloze")``."""
    head, _, mode = name.partition("@")
    base, _, sub = head.partition(".")
    return base, sub, mode


def metric_info(name: str) -> dict[str, Any]:
    """Registry meta (direction, group, description, kinds, source) of a full metric name."""
    return METRICS.meta(parse_metric_name(name)[0])


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The headline subset: for each name in HEADLINE, its first mode (HEADLINE_MODES order)
    with a value."""
    out = {}
    for base in HEADLINE:
        for mode in HEADLINE_MODES:
            name = f"{base}@{mode}"
            if name in metrics and metrics[name].get("value") is not None:
                out[name] = metrics[name]
                break
    return out


def _f(flags: Iterable[bool]) -> list[float]:
    return [float(x) for x in flags]


def _per_mode(view: PredictionView, name: str, value: Callable[[Item], bool], **where: Any):
    for mode in view.modes:
        yield f"{name}@{mode}", mode, _f(value(it) for it in view.select(mode, **where))


def _correct_after(view: PredictionView, name: str, **where: Any):
    """Share of the selected probes correct after the update, per mode; and `name`.known, the
    same over the probes the model answered correctly before it only. A fact the model never
    knew is trivially "forgotten" and its edit changes no knowledge, so the .known slice says
    what an update did to what the model actually knew."""
    for mode in view.modes:
        items = view.select(mode, **where)
        yield f"{name}@{mode}", mode, _f(it.after["correct"] for it in items)
        known = [it for it in items if it.before["correct"]]
        yield f"{name}.known@{mode}", mode, _f(it.after["correct"] for it in known)


@metric(
    "efficacy",
    direction="higher",
    group="efficacy",
    description="direct Q+ probes correct after the update (edit success, KnowEdit eq. 10); "
    ".known: only probes answered correctly before it",
)
def efficacy(view: PredictionView) -> Iterable[Series]:
    yield from _correct_after(view, "efficacy", type="direct", qset="Q+")


@metric(
    "generalization",
    direction="higher",
    group="generalization",
    description="paraphrases of the requested facts correct after the update, in the phrasing "
    "each fact is never trained in (other facts of its relation are); .known: only those "
    "answered correctly before it; .unseen: in the relation's template no training line uses",
)
def generalization(view: PredictionView) -> Iterable[Series]:
    yield from _correct_after(view, "generalization", type="paraphrase", qset="Q+")
    yield from _correct_after(view, "generalization.unseen", type="paraphrase_unseen", qset="Q+")


@metric(
    "propagation",
    direction="higher",
    group="propagation",
    description="entailed Q+ facts correct after the update: overall, and by type "
    "(reverse, multi_hop and its hop counts .h<k>, comparison); .known: overall, only probes "
    "answered correctly before it",
)
def propagation(view: PredictionView) -> Iterable[Series]:
    def ok(it: Item) -> bool:
        return it.after["correct"]

    yield from _correct_after(view, "propagation", type=PROPAGATION_TYPES, qset="Q+")
    for t in PROPAGATION_TYPES:
        yield from _per_mode(view, f"propagation.{t}", ok, type=t, qset="Q+")
    hops = sorted({int(it.probe["hops"]) for it in view.select(type="multi_hop", qset="Q+")})
    for h in hops:
        yield from _per_mode(
            view, f"propagation.multi_hop.h{h}", ok, type="multi_hop", qset="Q+", hops=h
        )


@metric(
    "locality",
    direction="higher",
    group="locality",
    description="Q- probes whose answer after the update equals the model's own answer "
    "before it (KnowEdit eq. 11), whether or not that answer was right",
)
def locality(view: PredictionView) -> Iterable[Series]:
    yield from _per_mode(view, "locality", lambda it: not it.after["changed"], qset="Q-")


@metric(
    "locality_correct",
    direction="higher",
    group="locality",
    description="Q- probes unchanged by the update AND correct after it",
)
def locality_correct(view: PredictionView) -> Iterable[Series]:
    yield from _per_mode(
        view,
        "locality_correct",
        lambda it: not it.after["changed"] and it.after["correct"],
        qset="Q-",
    )


@metric(
    "ccr",
    direction="lower",
    group="locality",
    description="collateral change ratio: share of Q- probes whose answer changed",
)
def ccr(view: PredictionView) -> Iterable[Series]:
    yield from _per_mode(view, "ccr", lambda it: it.after["changed"], qset="Q-")


@metric(
    "negation",
    direction="higher",
    group="robustness",
    description="negation probes (true/false statements and their negations) correct after",
)
def negation(view: PredictionView) -> Iterable[Series]:
    yield from _per_mode(view, "negation", lambda it: it.after["correct"], type="negation")


@metric(
    "accuracy_before",
    direction="higher",
    group="baseline",
    description="probes the model answered correctly before the update (what it knew); "
    ".direct: the requested facts only",
)
def accuracy_before(view: PredictionView) -> Iterable[Series]:
    yield from _per_mode(view, "accuracy_before", lambda it: it.before["correct"])
    yield from _per_mode(
        view, "accuracy_before.direct", lambda it: it.before["correct"], type="direct", qset="Q+"
    )


@metric(
    "rr",
    direction="lower",
    group="efficacy",
    kinds=("unlearn",),
    description="residual retention: share of unlearned requests whose old answer is still "
    "produced by at least one of their probes (@any: any probe type in any generative mode, "
    "cloze or generation; @<mode>: that mode). MCQ is kept out of @any: a forced choice among "
    "few options names the old answer by chance, so any-of-many MCQ probes would count nearly "
    "every request as retained",
)
def residual_retention(view: PredictionView) -> Iterable[Series]:
    by_request: dict[str, list[Item]] = defaultdict(list)
    for it in view.items:
        if it.probe["expect_after"] == "avoid":
            by_request[it.probe["request_id"]].append(it)
    reqs = sorted(by_request)
    yield (
        "rr@any",
        "any",
        _f(any(it.after["match_after"] for it in by_request[r] if it.mode != "mcq") for r in reqs),
    )
    for mode in view.modes:
        vals = [[it for it in by_request[r] if it.mode == mode] for r in reqs]
        yield f"rr@{mode}", mode, _f(any(it.after["match_after"] for it in v) for v in vals if v)


@metric(
    "conflict_rate",
    direction="lower",
    group="consistency",
    description="conflict pairs answered inconsistently after the update: one probe in the "
    "before-world, the other only in the after-world",
)
def conflict_rate(view: PredictionView) -> Iterable[Series]:
    pairs: dict[str, list[Item]] = defaultdict(list)
    for it in view.items:
        if it.probe["pair_id"]:
            pairs[it.probe["pair_id"]].append(it)
    per_mode: dict[str, list[float]] = {m: [] for m in [*view.modes, "mixed"]}
    for pid in sorted(pairs):
        items = pairs[pid]
        ids = sorted({it.probe["id"] for it in items})
        if len(ids) < 2:
            continue
        shared = [
            m
            for m in view.modes
            if all(any(it.probe["id"] == i and it.mode == m for it in items) for i in ids)
        ]
        if shared:
            choices = [(m, [it for it in items if it.mode == m]) for m in shared]
        else:
            primary = [it for it in items if it.mode == PRIMARY_MODE[it.probe["format"]]]
            choices = [("mixed", primary)]
        for mode, members in choices:
            per_mode[mode].append(float(_inconsistent([it.worlds for it in members])))
    for mode, vals in per_mode.items():
        if mode != "mixed" or vals:
            yield f"conflict_rate@{mode}", mode, vals


def _inconsistent(worlds: Sequence[frozenset[str]]) -> bool:
    """At least two answers belong to a world, and no single world holds all of them."""
    placed = [w for w in worlds if w]
    return len(placed) >= 2 and not frozenset.intersection(*placed)


# Model-derived and recorded metrics: registered for their meta; computed outside predictions.
metric(
    "fluency",
    direction="higher",
    group="fluency",
    source="model",
    description="weighted bi/tri-gram entropy of greedy continuations after the update "
    "(ROME, KnowEdit); .before: the same prompts on the model before it",
)(ngram_entropy)
metric(
    "drift_kl",
    direction="lower",
    group="drift",
    source="model",
    description="mean KL(before || after) of next-token distributions on Q- prompts",
)(kl_divergence)
metric(
    "drift_cka",
    direction="higher",
    group="drift",
    source="model",
    description="linear CKA between hidden states before and after the update on Q- "
    "prompts (1 = same representation up to rotation and scale)",
)(linear_cka)
METRICS.register_lazy(
    "cost",
    "ksmith.evaluate.cost:cost_metrics",
    direction="lower",
    group="cost",
    source="update",
    kinds=KINDS,
    description="cost of the update, mean over groups: .wall_seconds, .peak_memory_bytes, "
    ".changed_parameters (all 0 for the no-update baseline)",
)
METRICS.register_lazy(
    "capability",
    "ksmith.evaluate.lmeval:capability_metrics",
    direction="higher",
    group="capability",
    source="lmeval",
    kinds=KINDS,
    description="general capability: lm-eval task metrics on the updated model "
    "(capability.<task>.<metric>@lmeval; higher-is-better metrics only)",
)


def compute_metrics(
    probes: Sequence[Mapping[str, Any]],
    predictions: Iterable[Mapping[str, Any]],
    *,
    kind: str,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, dict[str, Any]]:
    """Every prediction-derived metric for one config: ``{name: {value, ci, n, mode}}``.

    Pure and deterministic: the leaderboard calls it to recompute a submission's numbers from
    its predictions and the released probes.
    """
    if kind not in KINDS:
        raise KsmithError(f"kind is {kind!r}; expected one of {', '.join(KINDS)}")
    # Bootstrap intervals resample items by position: fix the order so that any caller (the
    # runner, the leaderboard) gets the same numbers from the same rows.
    probes = sorted(probes, key=lambda p: (int(p["group"]), str(p["id"])))
    view = PredictionView(probes, predictions)
    out: dict[str, dict[str, Any]] = {}
    for name in METRICS.names():
        meta = METRICS.meta(name)
        if meta.get("source") != "predictions" or kind not in meta.get("kinds", KINDS):
            continue
        for full, mode, values in METRICS.get(name)(view):
            out[full] = summarize(full, values, mode, seed=seed, n_boot=n_boot)
    return dict(sorted(out.items()))
