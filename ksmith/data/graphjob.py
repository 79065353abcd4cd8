"""One graph of a suite: its world, corpus and configs, written into the output folder.

`run_graph` is what `generate_dataset` runs per graph, in the main process or in a worker
process. A graph's files depend only on its spec, the intervention spec and the suite seed, so
graphs can be generated in any order and in parallel: the config files go straight to their own
paths, and the corpus (one file for the whole suite) is streamed to a sink in graph order -- the
shared writer when serial, an Arrow IPC part file the main process appends in order otherwise.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from ksmith.data.card import probes_path, requests_path
from ksmith.data.parquet import write_columns
from ksmith.data.schema import CORPUS_SCHEMA, PROBE_SCHEMA, REQUEST_SCHEMA
from ksmith.errors import KsmithError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GraphJob:
    """What one graph's generation needs (picklable: sent to worker processes)."""

    index: int
    spec: object  # GraphSpec
    size: str
    where: str  # suite/graph description for error messages
    ispec: object  # InterventionSpec
    suite_seed: int
    configs: tuple[tuple[str, str, int], ...]  # (kind, level, scale), in output order


@dataclass
class GraphResult:
    """What one graph wrote: fact counts and, per config in order, its counts."""

    index: int
    base_facts: int = 0
    derived_facts: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    profile: dict[str, dict[str, int]] = field(default_factory=dict)


def run_graph(
    job: GraphJob,
    out: Path,
    corpus_sink: Callable[[pa.Table], None] | None = None,
    on_config: Callable[[str, dict[str, int]], None] | None = None,
) -> GraphResult:
    """Generate one graph into `out`. The corpus goes to `corpus_sink`, or, when None, to the
    IPC part file `corpus_part(out, job.index)`."""
    from ksmith.graph import build_world, frozen_heap
    from ksmith.intervene import WorldIndex
    from ksmith.render import Renderer

    spec = job.spec
    clock = _Clock()
    world = build_world(spec, job.size)
    res = GraphResult(job.index, len(world.base_facts), len(world.facts) - len(world.base_facts))
    renderer = Renderer(spec)
    clock.lap("world")
    index = WorldIndex(world)
    clock.lap("index")
    with frozen_heap():  # the world is built: GC passes need not rescan it
        _write_graph(job, out, world, index, renderer, res, corpus_sink, on_config, clock)
    log.info("graph %s/%s: %s", spec.name, job.size, clock)
    return res


class _Clock:
    """CPU seconds per stage, for the log."""

    def __init__(self):
        self.t, self.laps = time.process_time(), {}

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.laps[name] = self.laps.get(name, 0.0) + now - self.t
        self.t = now

    def __str__(self) -> str:
        return ", ".join(f"{k} {v:.1f}s" for k, v in self.laps.items()) + " CPU"


def _write_graph(job, out, world, index, renderer, res, corpus_sink, on_config, clock) -> None:
    from ksmith.data.generate import config_rows, profile_rows
    from ksmith.intervene import CandidatePool, derive_seed
    from ksmith.render import corpus_batches

    spec = job.spec
    batches = corpus_batches(world, renderer, seed=derive_seed(job.suite_seed, spec.seed, "corpus"))
    if corpus_sink is not None:
        for batch in batches:
            corpus_sink(batch)
    else:
        with pa.ipc.new_file(corpus_part(out, job.index), CORPUS_SCHEMA) as part:
            for batch in batches:
                part.write_table(pa.Table.from_arrays(batch.columns, schema=CORPUS_SCHEMA))
    clock.lap("corpus")
    pool = CandidatePool(world)
    for kind, level, scale in job.configs:
        rows = config_rows(
            index, pool, renderer, job.ispec,
            kind=kind, level=level, scale=scale, seed=job.suite_seed, where=job.where,
        )  # fmt: skip
        clock.lap("configs")
        write_columns(out / requests_path(rows.name), REQUEST_SCHEMA, rows.requests.lists)
        write_columns(out / probes_path(rows.name), PROBE_SCHEMA, rows.probes.lists)
        counts = {"groups": rows.groups, "requests": len(rows.requests), "probes": len(rows.probes)}
        res.counts[rows.name] = counts
        if on_config is not None:
            on_config(rows.name, counts)
        del rows
        gc.collect(0)  # automatic GC is off in `frozen_heap`: sweep this config's young objects
        clock.lap("write")
    for rows in profile_rows(index, pool, renderer, job.ispec, seed=job.suite_seed,
                             where=job.where):  # fmt: skip
        write_columns(out / requests_path(rows.name), REQUEST_SCHEMA, rows.requests.lists)
        write_columns(out / probes_path(rows.name), PROBE_SCHEMA, rows.probes.lists)
        res.profile[rows.name] = {
            "groups": rows.groups, "requests": len(rows.requests), "probes": len(rows.probes)
        }  # fmt: skip
    clock.lap("profile")


def corpus_part(out: Path, index: int) -> Path:
    """Where a worker puts graph `index`'s corpus (removed once appended)."""
    return out / f".corpus-part-{index}.arrow"


def run_graph_in_worker(job: GraphJob, out: Path) -> GraphResult:
    """`run_graph` in a worker process; errors come back as plain, picklable KsmithErrors."""
    try:
        return run_graph(job, out)
    except KsmithError as e:
        raise KsmithError(str(e)) from None
