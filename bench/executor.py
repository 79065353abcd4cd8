"""The executor's own cost per cell, Ray against local, measured in one run.

    python bench/executor.py [--hidden 128] [--layers 2] [--method ft_m] [--level leaf]
                             [--scales 1,10,100]

Builds the tiny pipeline's inputs in a temporary folder: the default suite's dataset and an
untrained world model of the default shape (`--hidden`, `--layers`; what it knows does not
matter here, what it costs does). Then runs the same cells (update with
`--method`, then evaluate, on one level at each scale) through `run_jobs`, as the pipeline
does (cell store, logs, delivery), twice: on the local executor in this process, and on a Ray
instance started here with one CPU, so that both run one cell at a time and each cell's
own compute is timed inside it.

Per cell, the executor's overhead is its wall time less the cell's own compute. `ratio=` is
Ray's extra overhead per cell over the local executor's, as a fraction of the mean cell time
(target: under 0.10). A stage on Ray also pays once `ray.init` and its worker's start (imports,
first model load: the warm-up cells' extra time); `ratio_with_stage_default=` spreads that
over a stage of the default suite (9 cells). Per-cell compute times by stage and k are
printed too (docs/scaling.md builds its cost model from them). The last line is one
`key=value` summary with `ratio=` first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ksmith.pipeline.store import CellStore  # noqa: E402
from ksmith.pipeline.workers import Job, run_jobs  # noqa: E402


def timed(record: str, fn, *args, **kwargs) -> None:
    """Run a cell and append its own compute time (seconds) to `record`."""
    start = time.perf_counter()
    fn(*args, **kwargs)
    with open(record, "a") as f:
        f.write(json.dumps({"out": kwargs.get("out"), "s": time.perf_counter() - start}) + "\n")


def _wrap(jobs: list[Job], record: Path) -> list[Job]:
    return [
        Job(j.name, timed, (str(record), j.fn, *j.args), j.cost, j.kwargs, j.out, j.key)
        for j in jobs
    ]


def _inputs(work: Path, args: argparse.Namespace) -> tuple[str, str]:
    """The default suite's dataset and an untrained world model of the asked shape."""
    from ksmith.data import generate_dataset
    from ksmith.world.pretrain import load_world_data
    from ksmith.world.spec import load_world_spec
    from ksmith.world.tokenizer import train_tokenizer
    from ksmith.world.training import build_model

    dataset, model = work / "dataset", work / "model"
    generate_dataset(ROOT / "specs/suites/default.yaml", dataset, size="small", progress=False)
    shape = {"hidden": args.hidden, "intermediate": 4 * args.hidden, "layers": args.layers}
    spec = load_world_spec(None, [f"{k}={json.dumps(v)}" for k, v in shape.items()])
    tokenizer = train_tokenizer(load_world_data(dataset).vocabulary, spec.tokenizer)
    build_model(spec, tokenizer).save_pretrained(model)
    tokenizer.save_pretrained(model)
    return str(dataset), str(model)


def _stage_jobs(
    stage: str, dataset: str, model: str, out: Path, args, updates: Path | None = None
) -> list[Job]:
    from ksmith.evaluate.runner import EvalOptions
    from ksmith.methods.commands import UpdateRun
    from ksmith.pipeline.cells import evaluate_jobs, update_jobs
    from ksmith.pipeline.matrix import Cell

    cells = [
        Cell(args.method, f"biology.edit.{args.level}.k{k}", "biology", "edit", args.level, k, 0)
        for k in args.scales
    ]
    if stage == "update":
        template = UpdateRun(model=model, dataset=dataset, config="", method=args.method, out="")
        return update_jobs(cells, template, out)
    updates = str(updates or out.parent / "update")
    options = EvalOptions(device="cpu", batch_size=16, use_cache=False)
    return evaluate_jobs(
        cells, model=model, dataset=dataset, updates=updates, options=options, out=out
    )


def _run(executor: str, dataset: str, model: str, work: Path, args) -> dict:
    """Both stages on one executor; wall and own compute per cell."""
    import ray

    result: dict = {"start": 0.0, "cells": {}}
    if executor == "ray":
        t = time.perf_counter()
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        result["start"] = time.perf_counter() - t
        from ksmith.pipeline.ray_executor import RayOptions

        options = RayOptions(cpus=1)
    else:
        options = None
    try:
        base = work / executor
        # Warm-up: the worker's imports and first model load belong to no measured cell.
        t = time.perf_counter()
        for stage in ("update", "evaluate"):
            out = base / "warm" / stage
            out.mkdir(parents=True)
            warm = _stage_jobs(stage, dataset, model, out, args)[:1]
            run_jobs(warm, store=CellStore(base / f"state-warm-{stage}"), ray=options)
        result["warm"] = time.perf_counter() - t
        for stage in ("update", "evaluate"):
            out = base / stage
            out.mkdir(parents=True)
            record = base / f"{stage}.jsonl"
            jobs = _wrap(_stage_jobs(stage, dataset, model, out, args), record)
            for job in jobs:  # one at a time: wall per cell, start to delivered
                t = time.perf_counter()
                run_jobs([job], store=CellStore(base / f"state-{stage}"), ray=options)
                wall = time.perf_counter() - t
                own = [json.loads(line)["s"] for line in record.read_text().splitlines()][-1]
                result["cells"][f"{stage}.{job.name}"] = {"wall": wall, "own": own}
    finally:
        if executor == "ray":
            ray.shutdown()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, default=128, help="world-model width (default shape)")
    p.add_argument("--layers", type=int, default=2, help="world-model depth")
    p.add_argument("--method", default="ft_m", help="update method of the cells")
    p.add_argument("--level", default="leaf", help="level of the cells")
    p.add_argument("--scales", default="1,10,100", help="scales k, one cell each")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    args.scales = [int(k) for k in args.scales.split(",")]
    os.environ.update({"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"})
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by torch when imported
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    logging.basicConfig(level=logging.WARNING)
    import torch

    from ksmith.runtime import keep_freed_memory

    keep_freed_memory()  # as the ksmith command and every worker process do
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # the stores' .ksmith/ and any relative path stay in here
        t = time.perf_counter()
        dataset, model = _inputs(work, args)
        print(f"inputs (dataset, world model {args.hidden}x{args.layers}): "
              f"{time.perf_counter() - t:.1f}s")  # fmt: skip
        runs = {ex: _run(ex, dataset, model, work, args) for ex in ("local", "ray")}

    print("cell: own compute and wall time, seconds, local then ray")
    for name, cell in runs["local"]["cells"].items():
        r = runs["ray"]["cells"][name]
        print(f"{name:34s} {cell['own']:8.2f} {cell['wall']:8.2f} {r['own']:8.2f} {r['wall']:8.2f}")

    def overhead(ex: str) -> float:
        return statistics.mean(c["wall"] - c["own"] for c in runs[ex]["cells"].values())

    cell_s = statistics.mean(c["own"] for c in runs["local"]["cells"].values())
    local_ms, ray_ms = 1000 * overhead("local"), 1000 * overhead("ray")
    ratio = (ray_ms - local_ms) / 1000 / cell_s
    start = runs["ray"]["start"]
    # A stage's fixed cost on Ray: starting Ray, and its worker's imports and first model
    # load, which the local executor's process had already paid (its warm-up is the same
    # work in a process that has imported ksmith; a local pool of spawned workers pays them
    # too).
    stage_s = start + max(0.0, runs["ray"]["warm"] - runs["local"]["warm"])
    per_stage = 9  # the default suite: 3 levels x 3 scales per kind, per method and seed
    with_start = ((ray_ms - local_ms) / 1000 * per_stage + stage_s) / (cell_s * per_stage)
    print(
        f"per cell: own compute {cell_s:.2f}s; executor overhead local {local_ms:.0f} ms, "
        f"ray {ray_ms:.0f} ms; per stage on ray: {stage_s:.1f}s (ray.init {start:.1f}s) "
        f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    print(
        f"ratio={ratio:.3f} overhead_local_ms={local_ms:.0f} overhead_ray_ms={ray_ms:.0f} "
        f"cell_s={cell_s:.2f} ray_init_s={start:.1f} ray_stage_s={stage_s:.1f} "
        f"ratio_with_stage_default={with_start:.3f} hidden={args.hidden} "
        f"layers={args.layers} method={args.method}"
    )


if __name__ == "__main__":
    main()
