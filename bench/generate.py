"""Generation throughput and linearity, measured in one run.

Builds the biology world at two substantial sizes (`half`: `large` with half the leaf
branching, and `large`), renders its corpus, samples one leaf group (scale 10,000, or a tenth
of the leaf facts) and derives its probes. Prints base and derived facts, the seconds of each
stage, probe rows per second, peak RSS, and the time per fact of the large world over the half
one (`ratio=`, 1.0 = linear). With `--suite`, also generates a whole suite (as `ksmith
generate`, worker processes included) and reports its wall and CPU seconds. The machine's load
is printed: on shared cores wall time depends on it. The last line is one `key=value` summary.

    python bench/generate.py [--graph specs/graphs/biology.yaml] [--scale 10000]
                             [--suite specs/suites/full.yaml] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ksmith.data.parquet import RowGroupWriter, table_from_columns
from ksmith.data.schema import CORPUS_SCHEMA, PROBE_SCHEMA
from ksmith.graph import build_world, frozen_heap
from ksmith.intervene import CandidatePool, ProbeBuilder, WorldIndex, group_diff, sample_group
from ksmith.render import Renderer, corpus_batches
from ksmith.spec import GraphSpec, InterventionSpec, load_spec

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


def with_half_size(path: str):
    """The graph spec with an extra size `half`: `large` with half the leaf branching (a second
    substantial size, so the linearity ratio is not dominated by fixed costs)."""
    data = yaml.safe_load(Path(path).read_text())
    large = data["sizes"]["large"]
    half = {**large, "branching": dict(large["branching"])}
    leaf = data["levels"][-1]
    half["branching"][leaf] = max(1, half["branching"][leaf] // 2)
    data["sizes"]["half"] = half
    return GraphSpec.model_validate(data)


def run_suite(path: str, workers: int | None) -> dict:
    """`ksmith generate` a whole suite in a fresh process (worker processes included) into a
    temporary folder: wall and CPU seconds, and peak RSS summed over the process tree
    (sampled every 0.2 s with psutil when it is installed)."""
    cmd = [sys.executable, "-m", "ksmith", "generate", path, "--no-progress"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    peak = 0
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen([*cmd, "--out", str(Path(tmp) / "ds")], stdout=subprocess.PIPE)
        try:
            import psutil

            root = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    tree = [root, *root.children(recursive=True)]
                    peak = max(peak, sum(p.memory_info().rss for p in tree))
                except psutil.Error:
                    pass
                time.sleep(0.2)
        except ImportError:
            pass
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"ksmith generate failed ({proc.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "wall": time.perf_counter() - t0,
        "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "summary": out.decode().strip().splitlines()[-1],
        "peak_gib": peak / 2**30,
        "worker_rss_gib": after.ru_maxrss / 2**20,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", default=str(REPO / "specs/graphs/biology.yaml"))
    ap.add_argument("--scale", type=int, default=10_000)
    ap.add_argument("--sizes", nargs=2, default=["half", "large"])
    ap.add_argument("--suite", default=None, help="also time generating this suite (full.yaml)")
    ap.add_argument("--workers", type=int, default=None, help="worker processes for --suite")
    args = ap.parse_args()
    spec = with_half_size(args.graph)
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
    print(f"peak RSS {rss_gib:.2f} GiB (single process; {os.cpu_count()} CPUs, load {_load()})")
    summary = (
        f"ratio={ratio:.2f} ratio_without_world_build={ratio_data:.2f} "
        f"probe_rows_per_s={large['rows'] / large['t']['probes']:.0f} "
        f"base_facts={large['base']} derived_facts={large['derived']} "
        f"large_total_s={large['total']:.1f} group_diff_s={large['t']['group_diff']:.1f} "
        f"peak_rss_gib={rss_gib:.2f}"
    )
    if args.suite:
        su = run_suite(args.suite, args.workers)
        print(
            f"suite {args.suite}: {su['summary']}\n  {su['wall']:.1f}s wall, {su['cpu']:.1f}s CPU "
            f"(load {_load()}); peak RSS summed over processes {su['peak_gib']:.2f} GiB, "
            f"largest process {su['worker_rss_gib']:.2f} GiB"
        )
        summary += (
            f" suite_s={su['wall']:.1f} suite_cpu_s={su['cpu']:.1f} "
            f"suite_peak_rss_gib={su['peak_gib']:.2f}"
        )
    print(summary)
    return 0


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
