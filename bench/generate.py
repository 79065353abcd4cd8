"""Generation throughput and linearity, measured in one run.

Builds the biology world at two sizes, renders its corpus, samples one leaf group (scale
10,000, or all a small world allows) and derives its probes and request rows. Prints base and
derived facts, probe rows per second, peak RSS, and the time per fact of the large world over the
small one (`ratio=`, 1.0 = linear). The last line is one `key=value` summary.

    python bench/generate.py [--graph specs/graphs/biology.yaml] [--scale 10000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from ksmith.data.parquet import RowGroupWriter, table_from_columns
from ksmith.data.schema import CORPUS_SCHEMA, PROBE_SCHEMA
from ksmith.graph import build_world, frozen_heap
from ksmith.intervene import CandidatePool, ProbeBuilder, WorldIndex, group_diff, sample_group
from ksmith.render import Renderer, corpus_batches
from ksmith.spec import InterventionSpec, load_spec

REPO = Path(__file__).resolve().parents[1]


def run(spec, size: str, scale: int, ispec) -> dict:
    t = {}
    t0 = time.perf_counter()
    world = build_world(spec, size)
    t["world"] = time.perf_counter() - t0
    renderer = Renderer(spec)
    t0 = time.perf_counter()
    index = WorldIndex(world)  # per-world indexes, shared by every group
    t["index"] = time.perf_counter() - t0
    with frozen_heap():  # as `ksmith generate`: the built world is kept out of GC passes
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:  # streamed to parquet, as generate does
            writer = RowGroupWriter(Path(tmp) / "train.parquet", CORPUS_SCHEMA)
            for batch in corpus_batches(world, renderer, seed=0):
                writer.write(batch)
            n_corpus = writer.close()
        t["corpus"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool = CandidatePool(world)
        k = min(scale, pool.count("leaf") // 10)
        reqs = sample_group(
            pool, kind="edit", level="leaf", scale=k, group=0, seed=1, where="bench"
        )
        t["sample"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        diff = group_diff(index, {r.fact.id: r.new_object for r in reqs})
        t["group_diff"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        builder = ProbeBuilder(index, renderer, ispec, diff, 2)
        for r in reqs:
            builder.add_request(r)
        for r in reqs:
            builder.retain(r, ispec.retain_per_request)
        table_from_columns(PROBE_SCHEMA, builder.columns.lists)
        t["probes"] = time.perf_counter() - t0
    total = sum(t.values())
    return {
        "size": size,
        "base": len(world.base_facts),
        "facts": len(world.facts),
        "derived": len(world.facts) - len(world.base_facts),
        "corpus": n_corpus,
        "requests": k,
        "rows": len(builder),
        "t": t,
        "total": total,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default=str(REPO / "specs/graphs/biology.yaml"))
    ap.add_argument("--scale", type=int, default=10_000)
    ap.add_argument("--sizes", nargs=2, default=["small", "large"])
    args = ap.parse_args()
    spec = load_spec(args.graph)
    ispec = load_spec(REPO / "specs/interventions/full.yaml")
    assert isinstance(ispec, InterventionSpec)
    res = [run(spec, s, args.scale, ispec) for s in args.sizes]
    for r in res:
        t = r["t"]
        print(
            f"{r['size']}: base facts {r['base']:,}, derived facts {r['derived']:,}, corpus lines "
            f"{r['corpus']:,}, requests {r['requests']:,}, probe rows {r['rows']:,}; seconds: "
            + ", ".join(f"{k} {v:.2f}" for k, v in t.items())
            + f", total {r['total']:.2f}; probe rows/s {r['rows'] / t['probes']:,.0f}"
        )
    small, large = res
    per_fact = [r["total"] / r["facts"] for r in res]
    ratio = per_fact[1] / per_fact[0]
    ratio_data = ((large["t"]["corpus"] + large["t"]["probes"]) / large["facts"]) / (
        (small["t"]["corpus"] + small["t"]["probes"]) / small["facts"]
    )
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {rss_gib:.2f} GiB (torch threads untouched; single process)")
    print(
        f"ratio={ratio:.2f} ratio_without_world_build={ratio_data:.2f} "
        f"probe_rows_per_s={large['rows'] / large['t']['probes']:.0f} "
        f"base_facts={large['base']} derived_facts={large['derived']} "
        f"large_total_s={large['total']:.1f} group_diff_s={large['t']['group_diff']:.1f} "
        f"peak_rss_gib={rss_gib:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
