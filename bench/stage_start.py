"""A pipeline stage's start and end: workers started before planning vs after it.

    python bench/stage_start.py [--dataset out/dataset] [--model out/model]
                                [--editors out/editors] [--methods ice,ga] [--repeats 3]

Every update and evaluate stage of `dvc repro` is one `ksmith pipeline ...` process that plans
its cells and runs them in `workers` processes; when the default suite ran one such stage per
method (28 of them, cells of seconds; until 2026-12-04, see bench/merged_stages.py) the
processes' start and end were a good part of the run. It measures single-method stages. Two ways, each in fresh
processes, taking turns within each repeat:

- `after`: as the pipeline did before `stage_workers` (ksmith 00551ea's parent): plan first
  (importing torch), then spawn `workers` processes, which import torch and transformers and
  run every cell, and end through the interpreter's teardown; the stage process too.
- `prestart`: `ksmith pipeline update|evaluate` with its `workers` processes spawned first
  (their imports overlap the stage process's planning), the stage process running no cell;
  every process ends without the interpreter's teardown.
- `stage`: `ksmith pipeline update|evaluate` as it is: the stage process starts `workers - 1`
  processes first and runs cells itself too (one interpreter fewer).

Both run the same cells (`ksmith.pipeline.cells`) into a scratch folder; their outputs are
compared (model weights and predictions byte for byte). Per method and stage kind it prints
the median wall and CPU seconds (CPU: the stage process and its children). The last line is
one `key=value` summary; `ratio=` is the `after` wall time over the `stage` one, summed over
the stages measured (above 1: the pipeline's way is faster), `prestart_ratio=` the same for
`prestart`.

Needs a `dvc repro` (or its generate, pretrain, retain, editors stages) for its inputs.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ksmith.io import MARKER

ROOT = Path(__file__).resolve().parent.parent

# The previous way, run as a script in a fresh process: plan, then spawn the workers.
AFTER = r"""
import multiprocessing, sys
from concurrent.futures import ProcessPoolExecutor
from types import SimpleNamespace

from ksmith.cli import set_threads
from ksmith.pipeline import cell_stages as c
from ksmith.pipeline import workers as w

kind, method, dataset, model, editors, updates, retain, out, params_path = sys.argv[1:10]
set_threads(1)
args = SimpleNamespace(params=params_path, method=method, dataset=dataset, model=model,
                       editors=editors, updates=updates, retain=retain, out=out, kind=None)
from ksmith.pipeline.params import load_params
params = load_params(params_path)


class Late:  # spawned after planning, torch only at start, normal exit: the old _local_pool
    def __init__(self, n):
        self.workers = n
        ctx = multiprocessing.get_context("spawn")
        with w._environment(w.WORKER_ENV):
            self.pool = ProcessPoolExecutor(n, mp_context=ctx, initializer=w.init_worker,
                                            initargs=(params.threads,))
    def run(self, calls):
        for f in [self.pool.submit(w.call, x) for x in calls]:
            yield f.result()
    def close(self):
        self.pool.shutdown(wait=True)


w.LocalWorkers = lambda n, threads, warm=(), here=False: Late(n)
if kind == "update":
    c._update_cells(args, params, None)
else:
    c._evaluate_cells(args, [method], params, None)  # method: a name or none
"""


# `ksmith` as it is, but the stage process runs no cell (all `workers` spawned at its start).
PRESTART = r"""
import sys
import ksmith.pipeline.workers as w

init = w.LocalWorkers.__init__
w.LocalWorkers.__init__ = lambda self, n, threads, warm=(), here=False: init(self, n, threads, warm)
from ksmith.cli import run

sys.argv = ["ksmith", *sys.argv[1:]]
run()
"""

WAYS = ("after", "prestart", "stage")


def run_timed(cmd: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, float]:
    """Run `cmd` (exit on failure, with its error); its wall and CPU seconds (with children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(
            f"{Path(sys.argv[0]).name}: {' '.join(cmd[:8])} ... failed:\n{proc.stderr[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def same_outputs(a: Path, b: Path) -> bool:
    """Every file but the JSON records (which hold wall times and paths) byte-identical; output
    markers (`.ksmith-output`: one per stage output, so per method or per stage) not compared."""

    def files(root: Path) -> list[Path]:
        return sorted(p.relative_to(root) for p in root.rglob("*")
                      if p.is_file() and p.name != MARKER)  # fmt: skip

    files_a, files_b = files(a), files(b)
    if files_a != files_b:
        return False
    return all(filecmp.cmp(a / p, b / p, shallow=False) for p in files_a if p.suffix != ".json")


def stage_args(doc: str, methods: str, repeats: int) -> argparse.Namespace:
    """The pipeline stages' inputs (a `dvc repro`'s out/ folders, checked, made absolute),
    params, methods and repeats, from the command line."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--dataset", default="out/dataset")
    ap.add_argument("--model", default="out/model")
    ap.add_argument("--editors", default="out/editors")
    ap.add_argument("--retain", default="out/retain-results")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--methods", default=methods)
    ap.add_argument("--repeats", type=int, default=repeats)
    a = ap.parse_args()
    for name in ("dataset", "model", "editors", "retain"):
        path = Path(getattr(a, name)).resolve()
        if not path.is_dir():
            sys.exit(f"{Path(sys.argv[0]).name}: --{name} {path}: no such folder "
                     "(run dvc repro first)")  # fmt: skip
        setattr(a, name, str(path))
    return a


def main() -> None:
    a = stage_args(__doc__, "ice,ga", 3)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    scratch = Path(tempfile.mkdtemp(prefix="ksmith-stage-start-"))
    walls: dict[tuple[str, str, str], list[float]] = {}
    cpus: dict[tuple[str, str, str], list[float]] = {}
    same = True
    try:
        for rep in range(a.repeats):
            for method in a.methods.split(","):
                for kind in ("update", "evaluate"):
                    outs = {}
                    for way in WAYS if rep % 2 == 0 else WAYS[::-1]:
                        out = scratch / f"{way}-{kind}-{method}"
                        shutil.rmtree(out, ignore_errors=True)
                        shutil.rmtree(scratch / ".ksmith", ignore_errors=True)
                        updates = str(scratch / f"stage-update-{method}")
                        if way == "after":
                            cmd = [sys.executable, "-c", AFTER, kind, method, a.dataset,
                                   a.model, a.editors, updates, a.retain, str(out), a.params]  # fmt: skip
                        else:
                            head = ["-m", "ksmith"] if way == "stage" else ["-c", PRESTART]
                            cmd = [sys.executable, *head, "--threads", "1",
                                   "pipeline", kind, "--params", a.params, "--method", method,
                                   "--dataset", a.dataset, "--model", a.model, "--out", str(out)]  # fmt: skip
                            cmd += (["--editors", a.editors] if kind == "update"
                                    else ["--updates", updates, "--retain", a.retain])  # fmt: skip
                        wall, cpu = run_timed(cmd, env)
                        walls.setdefault((method, kind, way), []).append(wall)
                        cpus.setdefault((method, kind, way), []).append(cpu)
                        outs[way] = out
                        print(f"repeat {rep}: {kind} {method} {way}: {wall:.2f} s, {cpu:.2f} CPU s",
                              flush=True)  # fmt: skip
                    same = same and all(same_outputs(outs["after"], outs[w]) for w in WAYS[1:])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = dict.fromkeys(WAYS, 0.0)
    print("\n| method | stage | " + " | ".join(f"{w}: wall / CPU s" for w in WAYS) + " |")
    print("|---|---|" + "---|" * len(WAYS))
    for method in a.methods.split(","):
        for kind in ("update", "evaluate"):
            cells = []
            for way in WAYS:
                w = statistics.median(walls[(method, kind, way)])
                c = statistics.median(cpus[(method, kind, way)])
                total[way] += w
                cells.append(f"{w:.2f} / {c:.2f}")
            print(f"| {method} | {kind} | " + " | ".join(cells) + " |")
    saved = (total["after"] - total["stage"]) / (2 * len(a.methods.split(",")))
    print(
        f"ratio={total['after'] / total['stage']:.3f} "
        f"prestart_ratio={total['after'] / total['prestart']:.3f} after_s={total['after']:.2f} "
        f"prestart_s={total['prestart']:.2f} stage_s={total['stage']:.2f} "
        f"saved_per_stage_s={saved:.2f} same_outputs={same}"
    )


if __name__ == "__main__":
    main()
