"""The pipeline's update, evaluate and submit work: one stage per method vs one stage for all.

    python bench/merged_stages.py [--dataset out/dataset] [--model out/model]
                                  [--editors out/editors] [--retain out/retain-results]
                                  [--methods ft_m,rome,ga,ice] [--repeats 2]

Until 2026-12-04 `dvc.yaml` ran `update@METHOD`, `evaluate@METHOD` (+ `baseline`) and
`submit@METHOD` (+ `submit-baseline`): one `ksmith pipeline ...` process per method and stage,
each starting its workers and loading its inputs, and each ending on its longest cells with a
core idle. Now the update, evaluate and submit stages each run every method at once
(`--method all`: one pool for every method's cells). Both ways, in fresh processes, taking
turns within each repeat, on the same cells (the methods given and the baseline, with
params.yaml's kinds, levels, scales and seeds):

- `per_method`: for each method `pipeline update --method M`; for each method and `none`
  `pipeline evaluate --method M`; for each, `pipeline submit`;
- `all`: `pipeline update --method all`, `pipeline evaluate --method all`,
  `pipeline submit --method all`.

Each way starts without a cell store (so every cell is computed); the evaluator's cache of the
unchanged model's answers (`~/.cache/ksmith/before`) is shared, as in the pipeline. The outputs
are compared (every file but the JSON records, which hold wall times: byte for byte). It prints
the median wall and CPU seconds (CPU: the processes and their children) of each way; the last
line is one `key=value` summary, `ratio=` the per-method wall time over the all-methods one.

Needs a `dvc repro` (or its generate, pretrain, retain and editors stages) for its inputs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from stage_start import (
    run_timed,
    same_outputs,
    stage_args,
)  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("per_method", "all")


def _commands(way: str, methods: list[str], a: argparse.Namespace, out: Path) -> list[list[str]]:
    """The stage processes of one way, in order; outputs under `out` (updates/, results/,
    submissions/, laid out as dvc.yaml's)."""
    base = [sys.executable, "-m", "ksmith", "--threads", "1", "pipeline"]
    common = ["--params", str(out.parent / "params.yaml"), "--dataset", a.dataset]
    upd, res, sub = out / "updates", out / "results", out / "submissions"
    if way == "all":
        return [
            [*base, "update", *common, "--method", "all", "--model", a.model,
             "--editors", a.editors, "--out", str(upd)],
            [*base, "evaluate", *common, "--method", "all", "--model", a.model,
             "--updates", str(upd), "--retain", a.retain, "--out", str(res)],
            [*base, "submit", *common, "--method", "all", "--results", str(res),
             "--retain", a.retain, "--out", str(sub)],
        ]  # fmt: skip
    cmds = [
        [*base, "update", *common, "--method", m, "--model", a.model, "--editors", a.editors,
         "--out", str(upd / m)]
        for m in methods
    ]  # fmt: skip
    for m in [*methods, "none"]:
        updates = [] if m == "none" else ["--updates", str(upd / m)]
        cmds.append([*base, "evaluate", *common, "--method", m, "--model", a.model, *updates,
                     "--retain", a.retain, "--out", str(res / m)])  # fmt: skip
    for m in [*methods, "none"]:
        cmds.append([*base, "submit", *common, "--results", str(res / m), "--retain", a.retain,
                     "--out", str(sub / f"world-{m}")])  # fmt: skip
    return cmds


def main() -> None:
    a = stage_args(__doc__, "ft_m,rome,ga,ice", 2)
    methods = a.methods.split(",")
    params = yaml.safe_load(Path(a.params).read_text())
    params["methods"] = methods
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    scratch = Path(tempfile.mkdtemp(prefix="ksmith-merged-stages-"))
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    walls: dict[str, list[float]] = {w: [] for w in WAYS}
    cpus: dict[str, list[float]] = {w: [] for w in WAYS}
    same = True
    try:
        for rep in range(a.repeats):
            for way in WAYS if rep % 2 == 0 else WAYS[::-1]:
                out = scratch / way
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(scratch / ".ksmith", ignore_errors=True)  # every cell computed
                out.mkdir()
                wall = cpu = 0.0
                for cmd in _commands(way, methods, a, out):
                    w, c = run_timed(cmd, env, scratch)
                    wall, cpu = wall + w, cpu + c
                walls[way].append(wall)
                cpus[way].append(cpu)
                print(f"repeat {rep}: {way}: {wall:.2f} s, {cpu:.2f} CPU s", flush=True)
            for folder in ("updates", "results"):
                same = same and same_outputs(scratch / WAYS[0] / folder, scratch / WAYS[1] / folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    wall = {w: statistics.median(walls[w]) for w in WAYS}
    cpu = {w: statistics.median(cpus[w]) for w in WAYS}
    print("\n| way | wall s | CPU s |\n|---|---|---|")
    for w in WAYS:
        print(f"| {w} | {wall[w]:.1f} | {cpu[w]:.1f} |")
    print(
        f"ratio={wall['per_method'] / wall['all']:.3f} "
        f"cpu_ratio={cpu['per_method'] / cpu['all']:.3f} per_method_s={wall['per_method']:.1f} "
        f"all_s={wall['all']:.1f} methods={len(methods)} same_outputs={same}"
    )


if __name__ == "__main__":
    main()
