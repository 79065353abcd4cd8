"""Materialize a suite: worlds -> requests and probes -> a Hub-layout dataset folder.

`build_suite_plan` resolves the suite (pure: specs in, resolved spec text and fingerprint out);
`generate_dataset` writes the folder atomically (contract section 1), one config at a time, so
memory holds one config's rows, not the whole suite.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ksmith import __version__
from ksmith.data.card import CardInfo, corpus_path, probes_path, render_card, requests_path
from ksmith.data.parquet import RowGroupWriter, write_columns
from ksmith.data.schema import (
    CORPUS_SCHEMA,
    FORMAT_VERSION,
    PROBE_SCHEMA,
    REQUEST_COLUMNS,
    REQUEST_SCHEMA,
    config_name,
)
from ksmith.errors import SpecError
from ksmith.intervene import (
    CandidatePool,
    Columns,
    ProbeBuilder,
    WorldIndex,
    derive_seed,
    group_diff,
    sample_group,
)
from ksmith.io import atomic_output_dir
from ksmith.render import Renderer, corpus_batches

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuitePlan:
    """A loaded suite with sizes resolved, its canonical YAML and its fingerprint."""

    loaded: object  # ksmith.spec.LoadedSuite
    sizes: tuple[str, ...]  # per graph, after any --size override
    spec_yaml: str
    fingerprint: str


@dataclass
class GenerateStats:
    """What one generation wrote and how long it took."""

    out: Path
    fingerprint: str
    base_facts: int = 0
    derived_facts: int = 0
    corpus_lines: int = 0
    probes: int = 0
    requests: int = 0
    seconds: float = 0.0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def build_suite_plan(suite_path: str | Path, size: str | None = None) -> SuitePlan:
    """Load a suite and everything it names; resolve sizes; compute the fingerprint.

    The fingerprint is sha256 over the canonical YAML of the resolved suite (suite, each graph
    spec with its size, the intervention spec), the generator format version and the seed.
    """
    from ksmith.spec import canonical_yaml, load_suite, spec_fingerprint

    loaded = load_suite(suite_path)
    suite = loaded.suite
    sizes = []
    domains: dict[str, int] = {}
    for i, (gspec, gsize, gpath) in enumerate(loaded.graphs):
        chosen = size or gsize
        if chosen not in gspec.sizes:
            raise SpecError(
                f"--size '{chosen}' is not a size of {gpath} ({sorted(gspec.sizes)})",
                file=suite_path,
                field=f"graphs.{i}.size",
            )
        if gspec.domain in domains:
            raise SpecError(
                f"domain '{gspec.domain}' appears in two graphs (config names would clash)",
                file=suite_path,
                field=f"graphs.{i}.path",
            )
        domains[gspec.domain] = i
        sizes.append(chosen)
    resolved = {
        "suite": suite.model_dump(mode="json"),
        "graphs": [
            {"size": sz, "spec": g.model_dump(mode="json")}
            for (g, _, _), sz in zip(loaded.graphs, sizes, strict=True)
        ],
        "interventions": loaded.interventions.model_dump(mode="json"),
        "format_version": FORMAT_VERSION,
    }
    text = canonical_yaml(resolved)
    fp = spec_fingerprint(resolved, {"format_version": FORMAT_VERSION, "seed": suite.seed})
    return SuitePlan(loaded, tuple(sizes), text, fp)


@dataclass(frozen=True)
class ConfigRows:
    """Rows of one config: request and probe columns (schema order)."""

    name: str
    groups: int
    requests: Columns
    probes: Columns


def config_rows(
    index: WorldIndex,
    pool: CandidatePool,
    renderer: Renderer,
    ispec,
    *,
    kind: str,
    level: str,
    scale: int,
    seed: int,
    where: str,
) -> ConfigRows:
    """Sample every group of one (kind, level, scale) and derive its requests and probes."""
    domain = index.world.spec.domain
    name = config_name(domain, kind, level, scale)
    requests = Columns(REQUEST_COLUMNS)
    probes: Columns | None = None
    n_groups = ispec.groups_for(scale)
    for g in range(n_groups):
        gseed = derive_seed(seed, ispec.seed, domain, kind, level, scale, g)
        reqs = sample_group(
            pool, kind=kind, level=level, scale=scale, group=g, seed=gseed, where=where
        )
        diff = group_diff(index, {r.fact.id: r.new_object for r in reqs})
        builder = ProbeBuilder(index, renderer, ispec, diff, gseed + 1)
        for r in reqs:
            builder.add_request(r)
        for r in reqs:
            f = r.fact
            answer = r.new_object if r.new_object is not None else f.object
            plus = renderer.training_prompts(f.relation, f.subject)
            minus_p, minus_a = builder.retain(r, ispec.retain_per_request)
            requests.append(*(
                g, r.request_id, kind, level, f.subject, f.relation, f.object,
                r.new_object or "", renderer.cloze(f.relation, f.subject), plus,
                [answer] * len(plus), minus_p, minus_a,
            ))  # fmt: skip
        if probes is None:
            probes = builder.columns
        else:
            probes.extend(builder.columns)
    assert probes is not None  # every config has at least one group
    return ConfigRows(name, n_groups, requests, probes)


def _config_jobs(plan: SuitePlan) -> Iterator[tuple[int, str, str, int]]:
    ispec = plan.loaded.interventions
    for gi in range(len(plan.loaded.graphs)):
        for kind in ispec.kinds:
            for level in ispec.levels:
                for scale in ispec.scales_for(level):
                    yield gi, kind, level, scale


def generate_dataset(
    suite_path: str | Path,
    out: str | Path,
    *,
    size: str | None = None,
    progress: bool = True,
) -> GenerateStats:
    """Write the dataset of `suite_path` to `out` (atomically; see `ksmith.io`)."""
    from ksmith.graph import build_world

    t0 = time.perf_counter()
    plan = build_suite_plan(suite_path, size)
    loaded = plan.loaded
    suite, ispec = loaded.suite, loaded.interventions
    stats = GenerateStats(Path(out), plan.fingerprint)
    jobs = list(_config_jobs(plan))
    with atomic_output_dir(out, kind="dataset") as tmp:
        corpus = RowGroupWriter(tmp / corpus_path(), CORPUS_SCHEMA)
        bar = tqdm(total=len(jobs), desc="configs", unit="config", disable=not progress)
        for gi, (gspec, _, gpath) in enumerate(loaded.graphs):
            gsize = plan.sizes[gi]
            where = f"suite '{suite.name}', graph '{gspec.name}' ({gpath}, size '{gsize}')"
            world = build_world(gspec, gsize)
            stats.base_facts += len(world.base_facts)
            stats.derived_facts += len(world.facts) - len(world.base_facts)
            renderer = Renderer(gspec)
            index = WorldIndex(world)
            for batch in corpus_batches(
                world, renderer, seed=derive_seed(suite.seed, gspec.seed, "corpus")
            ):
                corpus.write(batch)
            pool = CandidatePool(world)
            for job in jobs:
                if job[0] != gi:
                    continue
                _, kind, level, scale = job
                rows = config_rows(
                    index, pool, renderer, ispec,
                    kind=kind, level=level, scale=scale, seed=suite.seed, where=where,
                )  # fmt: skip
                write_columns(tmp / requests_path(rows.name), REQUEST_SCHEMA, rows.requests.lists)
                write_columns(tmp / probes_path(rows.name), PROBE_SCHEMA, rows.probes.lists)
                stats.counts[rows.name] = {
                    "groups": rows.groups,
                    "requests": len(rows.requests),
                    "probes": len(rows.probes),
                }
                stats.requests += len(rows.requests)
                stats.probes += len(rows.probes)
                bar.update(1)
                bar.set_postfix(config=rows.name, probes=stats.probes)
        bar.close()
        stats.corpus_lines = corpus.close()
        (tmp / "spec.yaml").write_text(plan.spec_yaml, encoding="utf-8")
        card = CardInfo(
            suite=suite.name,
            fingerprint=plan.fingerprint,
            format_version=FORMAT_VERSION,
            ksmith_version=__version__,
            seed=suite.seed,
            size=",".join(dict.fromkeys(plan.sizes)),
            spec_yaml=plan.spec_yaml,
            corpus_lines=stats.corpus_lines,
            counts=stats.counts,
        )
        (tmp / "README.md").write_text(render_card(card), encoding="utf-8")
    stats.seconds = time.perf_counter() - t0
    log.info(
        "wrote %s: %d configs, %d requests, %d probes, %d corpus lines in %.1fs (fingerprint %s)",
        out, len(stats.counts), stats.requests, stats.probes, stats.corpus_lines,
        stats.seconds, plan.fingerprint[:12],
    )  # fmt: skip
    return stats
