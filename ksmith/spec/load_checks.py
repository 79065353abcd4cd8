"""Checks the loader runs beyond one model's fields: limits, and a suite against its files.

- `graph_limit_errors`: every size preset of a graph stays within `Limits` (entities, base
  facts), computed from the spec before anything is built.
- `suite_path_issues`: a suite's paths stay inside its spec tree (the folder holding the
  suite, or the parent of a ``suites/`` folder, as in ``specs/``); absolute paths are allowed
  with a warning (the suite will not move with its specs).
- `suite_errors`: two graphs of one domain, a scale no level can supply, MCQ probes over a
  range with fewer than 4 entities, and the suite's total requests and probe rows within
  `Limits`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ksmith.errors import SpecError
from ksmith.spec.graph import GraphSpec
from ksmith.spec.graph_semantics import MCQ_OPTIONS, small_ranges
from ksmith.spec.intervention import InterventionSpec
from ksmith.spec.limits import Limits, env_name
from ksmith.spec.sizing import (
    base_fact_bound,
    entity_count,
    fmt_count,
    probes_per_request_bound,
    suite_requests,
    targetable_bound,
)
from ksmith.spec.suite import SuiteSpec


def graph_limit_errors(spec: GraphSpec, file: str | Path, bounds: Limits) -> list[SpecError]:
    """One error per size preset whose world would exceed `bounds`."""
    out = []
    for size in spec.sizes:
        n = entity_count(spec, size)
        if n > bounds.max_entities:
            out.append(
                SpecError(
                    f"size '{size}' makes a world of {fmt_count(n)} entities, more than the "
                    f"limit of {bounds.max_entities:,} ({env_name('max_entities')})",
                    file=file,
                    field=f"sizes.{size}",
                )
            )
            continue  # the fact bound would only repeat the same size
        facts = base_fact_bound(spec, size)
        if facts > bounds.max_base_facts:
            out.append(
                SpecError(
                    f"size '{size}' may sample up to {fmt_count(facts)} base facts, more than "
                    f"the limit of {bounds.max_base_facts:,} ({env_name('max_base_facts')})",
                    file=file,
                    field=f"sizes.{size}",
                )
            )
    return out


def spec_root(suite_path: Path) -> Path:
    """The folder a suite's paths must stay in: the suite's folder, or its parent when the suite
    sits in a ``suites/`` folder (``specs/suites/x.yaml`` -> ``specs/``)."""
    folder = _lexical(suite_path).parent
    return folder.parent if folder.name == "suites" else folder


def _lexical(path: Path) -> Path:
    # '..' is resolved in the text, symlinks are not followed: a link the user placed inside
    # the spec folder is part of it
    return Path(os.path.normpath(os.path.abspath(path)))


def suite_path_issues(
    suite_path: Path, suite: SuiteSpec
) -> tuple[list[SpecError], list[SpecError]]:
    """(errors, warnings) for the suite's graph and intervention paths."""
    root = spec_root(suite_path)
    errors: list[SpecError] = []
    warnings: list[SpecError] = []
    fields = [(f"graphs.{i}.path", g.path) for i, g in enumerate(suite.graphs)]
    fields.append(("interventions", suite.interventions))
    for field, raw in fields:
        if Path(raw).is_absolute():
            warnings.append(
                SpecError(
                    f"absolute path '{raw}': the suite will not move with its specs",
                    file=suite_path,
                    field=field,
                )
            )
            continue
        target = _lexical(suite_path.parent / raw)
        if not target.is_relative_to(root):
            errors.append(
                SpecError(
                    f"'{raw}' leaves the suite's spec folder {root}: keep graph and intervention "
                    "specs inside it (or give an absolute path)",
                    file=suite_path,
                    field=field,
                )
            )
    return errors, warnings


def suite_errors(
    suite_path: Path,
    suite_name: str,
    graphs: list[tuple[int, GraphSpec, str, Path]],
    ispec: InterventionSpec,
    ipath: Path,
    bounds: Limits,
) -> tuple[list[SpecError], list[SpecError]]:
    """(errors, warnings) of a suite whose files all loaded: `graphs` holds (suite index, spec,
    size, path). MCQ over a closed set of fewer than 4 values is an error; over a pool or level
    that small at the chosen size, a warning (a larger size may be meant)."""
    out: list[SpecError] = []
    warnings: list[SpecError] = []
    domains: dict[str, int] = {}
    for i, g, size, gpath in graphs:
        if g.domain in domains:
            out.append(
                SpecError(
                    f"{gpath} has domain '{g.domain}', as graphs.{domains[g.domain]}: config "
                    "names (<domain>.<kind>.<level>.k<scale>) would clash; one graph per domain",
                    file=suite_path,
                    field=f"graphs.{i}.path",
                )
            )
        domains.setdefault(g.domain, i)
        for lv in ispec.levels:
            if lv not in g.levels:
                continue  # reported against the intervention spec's levels
            bound, nodes, n_rel = targetable_bound(g, size, lv)
            for s in ispec.scales_for(lv):
                if s > bound:
                    where = f"level_scales.{lv}" if lv in ispec.level_scales else "scales"
                    out.append(
                        SpecError(
                            f"suite '{suite_name}': level '{lv}' of graph '{g.name}' ({gpath}, "
                            f"size '{size}') has only {bound:,} targetable (subject, relation) "
                            f"pairs ({nodes:,} nodes x {n_rel} sampled relations), fewer than "
                            f"scale {s} ({ipath} field '{where}'); lower the scale for this level "
                            "or use a larger size",
                            file=suite_path,
                            field=f"graphs.{i}.size",
                        )
                    )
        if "mcq" in ispec.formats:
            for rel, rng, n in small_ranges(g, size):
                closed = rng in g.value_types and g.value_types[rng].kind == "closed"
                (out if closed else warnings).append(
                    SpecError(
                        f"relation '{rel}' of {gpath} ranges over '{rng}', which has {n} "
                        f"entit{'y' if n == 1 else 'ies'} at size '{size}': its MCQ probes "
                        f"would have fewer than {MCQ_OPTIONS} options; add values, or drop mcq "
                        f"from {ipath} field 'formats'",
                        file=suite_path,
                        field=f"graphs.{i}.path",
                    )
                )
    levels = sorted({lv for _, g, _, _ in graphs for lv in g.levels})
    requests = suite_requests(ispec, levels, len(graphs))
    probes = requests * probes_per_request_bound(ispec)
    if requests > bounds.max_requests:
        out.append(
            SpecError(
                f"the suite asks for {fmt_count(requests)} update requests ({len(graphs)} "
                f"graph(s) x kinds x levels x scale x groups, from {ipath}), more than the limit "
                f"of {bounds.max_requests:,} ({env_name('max_requests')})",
                file=suite_path,
                field="interventions",
            )
        )
    elif probes > bounds.max_probes:
        out.append(
            SpecError(
                f"the suite may write up to {fmt_count(probes)} probe rows ({fmt_count(requests)} "
                f"requests x up to {probes_per_request_bound(ispec)} probes each, from {ipath}), "
                f"more than the limit of {bounds.max_probes:,} ({env_name('max_probes')})",
                file=suite_path,
                field="interventions",
            )
        )
    return out, warnings
