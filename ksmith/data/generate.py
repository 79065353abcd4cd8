"""Materialize a suite: worlds -> requests and probes -> a Hub-layout dataset folder.

`build_suite_plan` resolves the suite (pure: specs in, resolved spec text and fingerprint out);
`generate_dataset` writes the folder atomically (contract section 1), one config at a time, so
memory holds one world and one config's rows, not the whole suite; the corpus is streamed to
parquet in fixed row groups. Graphs run in worker processes (`workers`; `ksmith.data.graphjob`)
with byte-identical output whatever the scheduling.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ksmith import __version__
from ksmith.data.card import CardInfo, corpus_path, render_card
from ksmith.data.graphjob import GraphJob, corpus_part, run_graph, run_graph_in_worker
from ksmith.data.interrupt import children_leave_interrupts, ignore_interrupts
from ksmith.data.parquet import RowGroupWriter
from ksmith.data.schema import (
    CORPUS_SCHEMA,
    FORMAT_VERSION,
    REQUEST_COLUMNS,
    config_name,
    profile_name,
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
from ksmith.render import Renderer
from ksmith.spec.intervention import Format, ProbeType

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
    profile: dict[str, dict[str, int]] = field(default_factory=dict)


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
        "suite": suite,
        "graphs": [
            {"size": sz, "spec": g} for (g, _, _), sz in zip(loaded.graphs, sizes, strict=True)
        ],
        "interventions": loaded.interventions,
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
            plus = renderer.training_prompts(f.relation, f.subject, f.object)
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


PROFILE_SCALE = 10  # requests per profile group: small enough for any level's footprints


def profile_rows(
    index: WorldIndex, pool: CandidatePool, renderer: Renderer, ispec, *, seed: int, where: str
) -> list[ConfigRows]:
    """The capability-profile configs of one world, one per level (`<domain>.profile.<level>`):
    `ispec.profile_per_level` edit requests drawn with their own seed, in groups of
    `PROFILE_SCALE`, with every probe type and format. Only their before answers (the world as
    it is) and, for in-context use, their direct and paraphrase after answers are measured
    (`ksmith.world.profile`), so they sample what the world model knows across the whole
    world, apart from the suite's own requests."""
    n = ispec.profile_per_level
    if n <= 0:
        return []
    full = ispec.model_copy(
        update={
            "groups": -(-n // PROFILE_SCALE),
            "probe_types": list(ProbeType.__args__),
            "formats": list(Format.__args__),
            "paraphrases_per_request": 2,
        }
    )
    domain = index.world.spec.domain
    out = []
    for level in ispec.levels:
        scale = min(PROFILE_SCALE, pool.count(level))
        if scale == 0:
            continue
        rows = config_rows(index, pool, renderer, full, kind="edit", level=level, scale=scale,
                           seed=derive_seed(seed, "profile"), where=where)  # fmt: skip
        out.append(ConfigRows(profile_name(domain, level), rows.groups, rows.requests,
                              rows.probes))  # fmt: skip
    return out


def _graph_jobs(plan: SuitePlan) -> list[GraphJob]:
    loaded = plan.loaded
    suite, ispec = loaded.suite, loaded.interventions
    configs = tuple(
        (kind, level, scale)
        for kind in ispec.kinds
        for level in ispec.levels
        for scale in ispec.scales_for(level)
    )
    return [
        GraphJob(
            gi,
            gspec,
            plan.sizes[gi],
            f"suite '{suite.name}', graph '{gspec.name}' ({gpath}, size '{plan.sizes[gi]}')",
            ispec,
            suite.seed,
            configs,
        )  # fmt: skip
        for gi, (gspec, _, gpath) in enumerate(loaded.graphs)
    ]


def default_workers(n_graphs: int) -> int:
    """Worker processes for `n_graphs` graphs: one per graph, at most 2 and the CPU count."""
    return max(1, min(n_graphs, 2, os.cpu_count() or 1))


def generate_dataset(
    suite_path: str | Path,
    out: str | Path,
    *,
    size: str | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> GenerateStats:
    """Write the dataset of `suite_path` to `out` (atomically; see `ksmith.io`).

    With `workers` > 1 (default: `default_workers`), graphs are generated in worker processes
    (spawned, one per graph: a script calling this needs the ``if __name__ == "__main__":``
    guard); the files are byte-identical to a serial run (each graph's output depends only on
    its specs and seeds, and the corpus is appended in graph order).
    """
    t0 = time.perf_counter()
    plan = build_suite_plan(suite_path, size)
    loaded = plan.loaded
    suite = loaded.suite
    stats = GenerateStats(Path(out), plan.fingerprint)
    jobs = _graph_jobs(plan)
    workers = default_workers(len(jobs)) if workers is None else max(1, workers)
    total = len(jobs) * len(jobs[0].configs) if jobs else 0
    with atomic_output_dir(out, kind="dataset") as tmp, ExitStack() as stack:
        futures = None
        if workers > 1 and len(jobs) > 1:
            # a fresh interpreter per graph: no memory carried over from the previous world,
            # and no fork of a process whose (arrow, tqdm) threads may hold locks
            ctx = mp.get_context("spawn")
            # workers leave Ctrl-C to this process, which stops them (ksmith.data.interrupt)
            with children_leave_interrupts():
                pool = ProcessPoolExecutor(
                    workers, mp_context=ctx, max_tasks_per_child=1, initializer=ignore_interrupts
                )
                ex = stack.enter_context(pool)
                stack.callback(ex.shutdown, cancel_futures=True)
                futures = [ex.submit(run_graph_in_worker, job, tmp) for job in jobs]
        corpus = RowGroupWriter(tmp / corpus_path(), CORPUS_SCHEMA)
        bar = tqdm(total=total, desc="configs", unit="config", disable=not progress)

        def done(name: str, counts: dict[str, int]) -> None:
            bar.update(1)
            bar.set_postfix(config=name)

        if futures is None:
            results = [run_graph(job, tmp, corpus.write, done) for job in jobs]
        else:
            results = _collect(jobs, futures, tmp, corpus, bar)
        bar.close()
        for res in results:  # graph order: the card lists configs as a serial run would
            stats.base_facts += res.base_facts
            stats.derived_facts += res.derived_facts
            for name, counts in res.counts.items():
                stats.counts[name] = counts
                stats.requests += counts["requests"]
                stats.probes += counts["probes"]
            stats.profile.update(res.profile)
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
            profile=stats.profile,
            levels=tuple(loaded.interventions.levels),
        )
        (tmp / "README.md").write_text(render_card(card), encoding="utf-8")
    stats.seconds = time.perf_counter() - t0
    log.info(
        "wrote %s: %d configs, %d requests, %d probes, %d corpus lines in %.1fs (fingerprint %s)",
        out, len(stats.counts), stats.requests, stats.probes, stats.corpus_lines,
        stats.seconds, plan.fingerprint[:12],
    )  # fmt: skip
    return stats


def _collect(jobs, futures, tmp: Path, corpus: RowGroupWriter, bar) -> list:
    """Results in graph order; each graph's corpus part is appended as soon as the graphs
    before it are done (while the pool works on later graphs), then deleted."""
    import pyarrow as pa

    results = []
    for job, fut in zip(jobs, futures, strict=True):
        res = fut.result()
        part = corpus_part(tmp, job.index)
        with pa.OSFile(str(part)) as src:  # batch by batch: a memory map would count in RSS
            reader = pa.ipc.open_file(src)
            for i in range(reader.num_record_batches):
                corpus.write(pa.Table.from_batches([reader.get_batch(i)]))
        part.unlink()
        bar.update(len(res.counts))
        results.append(res)
    return results
