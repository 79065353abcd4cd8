"""Aggregation of verified submissions into ranked tables, and the composite score.

Composite score
---------------
For each kind, a few *component* metrics (`COMPONENTS`) cover the questions the benchmark asks
of an update: did the requested fact change (efficacy), does the change hold under held-out
wordings (generalization), does it ripple through entailed facts (propagation), and was
everything else left alone (locality). Each component is put on [0, 1] with higher = better using
its direction from the ONE metric registry (`ksmith.evaluate.metrics.METRICS`): ``v`` for
``higher``, ``1 - v`` for ``lower``. The composite of a cell (one dataset config) is the
**harmonic mean** of its components; the composite of a row is the mean of its cells' composites.

Why the harmonic mean: like F1 it is high only when every component is high, so a method cannot
buy rank by trading one property for another. That trade is exactly what KnowledgeSmith
(arXiv 2510.02392) reports: editing over-spreads (high efficacy, low locality) and unlearning
under-spreads (the direct fact is gone, entailed facts survive). An arithmetic mean would hide
both; a single component of 0 gives a composite of 0. A component that does not apply to a
cell (value null, no probes of that type) is left out of that cell's mean rather than counted as
0. Every table shows the components next to the composite, so the composite never stands alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ksmith.errors import KsmithError
from ksmith.leaderboard.schema import Cell, Submission

KINDS = ("edit", "unlearn")
KIND_TITLES = {"edit": "Editing", "unlearn": "Unlearning"}

# The composite's component metrics per kind (names in the metric registry).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "edit": ("efficacy", "generalization", "propagation", "locality"),
    "unlearn": ("efficacy", "generalization", "propagation", "locality"),
}


# Unlearning against the retain model (issue 12; ksmith.evaluate.retain_metrics): shown beside
# the composite for unlearn rows, never part of it (older submissions do not have them). Both
# are higher-is-better: forget quality is TOFU's KS p-value (the unlearned model's truth ratios
# indistinguishable from the retain model's), retain agreement the share of probes answered as
# the retain model answers them.
RETAIN_COLUMNS: dict[str, str] = {"forget_quality": "higher", "retain_agreement": "higher"}
RETAIN_MODE = "teacher_forced"  # the mode of numbers computed from per-item token scores

# Fallback order of scoring modes when a component is reported in several (the metric module's
# HEADLINE_MODES, cloze first, is used when importable).
DEFAULT_MODES = ("any", "cloze", "mcq", "gen_exact", "gen_contains", "mixed")
COST_METRIC = "cost.wall_seconds@update"


@dataclass(frozen=True)
class MetricInfo:
    """A registry entry as the leaderboard shows it."""

    name: str
    direction: str  # "higher" | "lower"
    description: str
    group: str
    kinds: tuple[str, ...]
    source: str = "predictions"  # only these are recomputed by verify

    @property
    def verified(self) -> bool:
        return self.source == "predictions"


def base_name(full: str) -> str:
    """`propagation.multi_hop.h2@cloze` -> `propagation` (the registry name)."""
    return full.partition("@")[0].partition(".")[0]


def mode_order() -> tuple[str, ...]:
    try:
        from ksmith.evaluate.metrics import HEADLINE_MODES
    except ImportError:
        return DEFAULT_MODES
    return tuple(HEADLINE_MODES)


def registry_snapshot() -> dict[str, MetricInfo]:
    """Every metric in `ksmith.evaluate.metrics.METRICS` with its direction and definition."""
    from ksmith.evaluate.metrics import METRICS

    out = {}
    for name in METRICS.names():
        meta = METRICS.meta(name)
        kinds = meta.get("kinds") or KINDS
        out[name] = MetricInfo(
            name=name,
            direction=str(meta.get("direction", "higher")),
            description=str(meta.get("description", "")),
            group=str(meta.get("group", "")),
            kinds=tuple(kinds) if not isinstance(kinds, str) else (kinds,),
            source=str(meta.get("source", "predictions")),
        )
    return out


def check_components(registry: Mapping[str, MetricInfo]) -> None:
    """Every composite component must be a registered metric of its kind with a direction."""
    for kind, names in COMPONENTS.items():
        for name in names:
            info = registry.get(name)
            if info is None:
                raise KsmithError(f"composite component '{name}' is not in the metric registry")
            if kind not in info.kinds:
                raise KsmithError(f"composite component '{name}' does not apply to kind {kind}")
            if info.direction not in ("higher", "lower"):
                raise KsmithError(f"metric '{name}' has direction {info.direction!r}")
            if not info.verified:
                raise KsmithError(f"composite component '{name}' is not prediction-derived")


def oriented(value: float | None, direction: str) -> float | None:
    """`value` on a higher-is-better [0, 1] scale."""
    if value is None:
        return None
    return value if direction == "higher" else 1.0 - value


def harmonic_mean(values: Iterable[float | None]) -> float | None:
    """Harmonic mean of the non-null values (0 if any is 0); None if all are null."""
    xs = [max(0.0, min(1.0, v)) for v in values if v is not None]
    if not xs:
        return None
    if any(x == 0.0 for x in xs):
        return 0.0
    return len(xs) / sum(1.0 / x for x in xs)


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def component(cell: Cell, base: str) -> tuple[str | None, float | None]:
    """The cell's headline value of a component: its whole-set metric (no slice) in the first
    scoring mode of `mode_order()` that has a value; (None, None) if there is none."""
    for mode in mode_order():
        name = f"{base}@{mode}"
        m = cell.metrics.get(name)
        if m is not None and m.value is not None:
            return name, m.value
    return None, None


def retain_value(cell: Cell, base: str) -> tuple[str | None, float | None]:
    """A cell's headline value of a `RETAIN_COLUMNS` metric (whole set, no slice): teacher
    forced, else the first scoring mode of `mode_order()` with a value; (None, None) for an
    edit cell or a cell evaluated without the retain model."""
    for mode in (RETAIN_MODE, *mode_order()):
        m = cell.metrics.get(f"{base}@{mode}")
        if m is not None and m.value is not None:
            return f"{base}@{mode}", m.value
    return None, None


def cell_composite(cell: Cell, registry: Mapping[str, MetricInfo]) -> float | None:
    """Harmonic mean of the cell's oriented component metrics."""
    return harmonic_mean(
        oriented(component(cell, base)[1], registry[base].direction)
        for base in COMPONENTS[cell.kind]
    )


@dataclass(frozen=True)
class Row:
    """One submission's line in one table (a kind, optionally restricted to a level or scale)."""

    submission: str
    method: str
    model: str
    cells: int
    composite: float | None
    components: dict[str, float | None]
    modes: dict[str, tuple[str, ...]]  # component -> full metric names averaged (their modes)
    wall_seconds: float | None  # mean over cells of the mean update seconds per group
    required: int = 0  # cells of the dataset's suite for this kind (coverage: cells/required)
    # unlearn rows: RETAIN_COLUMNS name -> mean over the cells that have it (None: no cell has)
    retain: dict[str, float | None] = field(default_factory=dict)
    retain_modes: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    """A ranked table: best composite first, ties and nulls broken by submission id."""

    title: str
    kind: str
    suite: str
    fingerprint: str
    rows: list[Row]
    slice: str = "all"  # "all", "level=<name>" or "scale=<k>"
    # Submissions that miss cells of the suite: listed apart, never ranked (overall table only).
    partial: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Curve:
    """Composite and components against scale k, one series per submission."""

    kind: str
    suite: str
    fingerprint: str
    metric: str  # "composite" or a component name
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _row(
    sub: Submission, cells: list[Cell], registry: Mapping[str, MetricInfo], required: int = 0
) -> Row:
    kind = cells[0].kind
    picked = {base: [component(c, base) for c in cells] for base in COMPONENTS[kind]}
    walls = [c.metrics[COST_METRIC].value if COST_METRIC in c.metrics else None for c in cells]
    against: dict[str, list[tuple[str | None, float | None]]] = {}
    if kind == "unlearn":
        against = {b: [retain_value(c, b) for c in cells] for b in RETAIN_COLUMNS}
    return Row(
        submission=sub.id,
        method=sub.method.name,
        model=sub.model.id,
        cells=len(cells),
        composite=_mean(cell_composite(c, registry) for c in cells),
        components={base: _mean(v for _, v in pairs) for base, pairs in picked.items()},
        modes={
            base: tuple(sorted({n for n, _ in pairs if n is not None}))
            for base, pairs in picked.items()
        },
        wall_seconds=None if any(w is None for w in walls) else _mean(walls),
        required=required or len(cells),
        retain={base: _mean(v for _, v in pairs) for base, pairs in against.items()},
        retain_modes={
            base: tuple(sorted({n for n, _ in pairs if n is not None}))
            for base, pairs in against.items()
        },
    )


def _ranked(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.composite is None, -(r.composite or 0.0), r.submission))


def level_order(levels: Iterable[str]) -> list[str]:
    """Default levels general-to-specific first, then any others alphabetically."""
    default = ["root", "intermediate", "leaf"]
    levels = set(levels)
    return [lv for lv in default if lv in levels] + sorted(levels - set(default))


def build_tables(
    subs: list[Submission],
    registry: Mapping[str, MetricInfo],
    suites: Mapping[str, Iterable[str]] | None = None,
) -> tuple[list[Table], list[Curve]]:
    """All ranked tables (per dataset and kind: overall, per level, per scale) and scale curves.

    Only a submission covering every cell of its dataset's suite for a kind is ranked for that
    kind: `suites` maps a dataset fingerprint to its configs (a fingerprint it lacks, or no
    `suites`, counts the cells any submission on that dataset covers). A partial submission is
    listed apart in the overall table's `partial` rows, with its coverage, and nowhere else.
    """
    check_components(registry)
    suites = suites or {}
    by_board: dict[tuple[str, str, str], list[tuple[Submission, list[Cell]]]] = defaultdict(list)
    for sub in sorted(subs, key=lambda s: s.id):
        for kind in KINDS:
            cells = [c for c in sub.cells if c.kind == kind]
            if cells:
                key = (sub.dataset.fingerprint, sub.dataset.suite, kind)
                by_board[key].append((sub, cells))
    tables: list[Table] = []
    curves: list[Curve] = []
    order = sorted(by_board, key=lambda k: (k[1], k[0], KINDS.index(k[2])))
    for fp, suite, kind in order:
        everything = by_board[(fp, suite, kind)]
        if fp in suites:
            required = {c for c in suites[fp] if c.split(".")[1:2] == [kind]}
        else:
            required = {c.config for _, cells in everything for c in cells}
        entries = [(s, cells) for s, cells in everything if required <= {c.config for c in cells}]
        partial = [
            _row(s, cells, registry, len(required))
            for s, cells in everything
            if not required <= {c.config for c in cells}
        ]
        title = KIND_TITLES[kind]

        def table(
            slice_: str, heading: str, pick, entries=entries, fp=fp, suite=suite, kind=kind
        ) -> Table:
            rows = []
            for sub, cells in entries:
                chosen = [c for c in cells if pick(c)]
                if chosen:
                    rows.append(_row(sub, chosen, registry))
            return Table(heading, kind, suite, fp, _ranked(rows), slice_)

        overall = table("all", f"{title}: all cells", lambda c: True)
        tables.append(replace(overall, partial=_ranked(partial)))
        all_cells = [c for _, cells in entries for c in cells]
        for level in level_order({c.level for c in all_cells}):
            tables.append(
                table(
                    f"level={level}", f"{title}: level {level}", lambda c, lv=level: c.level == lv
                )
            )
        scales = sorted({c.scale for c in all_cells})
        for k in scales:
            tables.append(table(f"scale={k}", f"{title}: scale k={k}", lambda c, k=k: c.scale == k))
        for metric in ("composite", *COMPONENTS[kind]):
            curve = Curve(kind, suite, fp, metric)
            for sub, cells in entries:
                points = []
                for k in scales:
                    at_k = [c for c in cells if c.scale == k]
                    if not at_k:
                        continue
                    row = _row(sub, at_k, registry)
                    v = row.composite if metric == "composite" else row.components[metric]
                    if v is not None:
                        points.append((k, v))
                if points:
                    curve.series[sub.id] = points
            curves.append(curve)
    return tables, curves


def cell_records(
    subs: list[Submission], registry: Mapping[str, MetricInfo]
) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat record per (submission, cell) for the CSV: columns, then rows (sorted)."""
    metric_names = sorted({name for s in subs for c in s.cells for name in c.metrics})
    base = [
        "submission",
        "method",
        "model",
        "suite",
        "dataset_fingerprint",
        "config",
        "domain",
        "kind",
        "level",
        "scale",
        "composite",
        *RETAIN_COLUMNS,
    ]
    records = []
    for sub in sorted(subs, key=lambda s: s.id):
        for cell in sorted(sub.cells, key=lambda c: c.config):
            rec: dict[str, Any] = {
                "submission": sub.id,
                "method": sub.method.name,
                "model": sub.model.id,
                "suite": sub.dataset.suite,
                "dataset_fingerprint": sub.dataset.fingerprint,
                "config": cell.config,
                "domain": cell.domain,
                "kind": cell.kind,
                "level": cell.level,
                "scale": cell.scale,
                "composite": cell_composite(cell, registry),
                **{b: retain_value(cell, b)[1] for b in RETAIN_COLUMNS},
            }
            for name in metric_names:
                rec[name] = cell.metrics[name].value if name in cell.metrics else None
            records.append(rec)
    return [*base, *metric_names], records
