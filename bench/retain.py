"""What the retain model and the metrics against it add to `dvc repro` (issue #12, part 5).

    nice -n 19 python bench/retain.py DATASET [--steps 1500] [--configs GLOB] [--json out.json]

DATASET is a generated dataset folder (`ksmith generate specs/suites/default.yaml --size small
--out DATASET`). Two measurements, each side by side in this one run:

1. **Pretraining.** The default world-model recipe cut to `--steps` steps (the knowledge checks
   off: they decide nothing here), on one thread: the world model alone, then the world model
   with the retain model beside it in a second process, as the pipeline's pretrain stage runs
   them (`ksmith.pipeline.commands._start_retain`). Wall seconds of each, and the CPU seconds of
   both processes. On two free cores the side-by-side wall time is about the world model's
   alone: the retain model costs CPU, not time.
2. **Evaluation.** Every unlearn config matching `--configs` (default all), evaluated with the
   world model (no update, one thread, no cache) with the unlearning step off
   (`EvalOptions.unlearning=False`: no items, no relearning, no retain metrics) and on (items,
   the relearning attack and the metrics against the retain model's evaluation, which is made
   first and counted separately, as the pipeline's `retain` stage makes it once per dataset).

The last line is the `key=value` summary: `ratio` = side-by-side wall / world-model-alone wall
(pretraining), then `eval_ratio` = evaluation CPU with the unlearning step / without, and the
seconds behind both.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import resource
import tempfile
import time
from pathlib import Path


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def pretraining(dataset: Path, steps: int, tmp: Path) -> dict[str, float]:
    from ksmith.pipeline.commands import _start_retain
    from ksmith.world import load_world_spec
    from ksmith.world.pretrain import pretrain
    from ksmith.world.spec import build_spec, short_budget

    short = {"max_steps": steps, "eval_every": steps, "eval_sample": 50,
             "allow_below_threshold": True}  # fmt: skip
    spec = build_spec(short_budget(load_world_spec().model_dump() | short), "bench/retain.py")
    out: dict[str, float] = {}
    t, c = time.perf_counter(), _self_cpu()
    pretrain(dataset, tmp / "alone", spec, device="cpu", progress=False)
    out["alone_s"], out["alone_cpu_s"] = time.perf_counter() - t, _self_cpu() - c
    t, c, cc = time.perf_counter(), _self_cpu(), _children_cpu()
    proc = _start_retain(str(dataset), str(tmp / "retain"), spec, "cpu")
    pretrain(dataset, tmp / "beside", spec, device="cpu", progress=False)
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"the retain model's training failed (exit code {proc.exitcode})")
    out["side_by_side_s"] = time.perf_counter() - t
    out["side_by_side_cpu_s"] = (_self_cpu() - c) + (_children_cpu() - cc)
    return out


def evaluation(dataset: Path, model: Path, retain: Path, pattern: str, tmp: Path):
    from ksmith.data import list_configs
    from ksmith.evaluate import EvalOptions
    from ksmith.evaluate.runner import evaluate

    configs = [c for c in list_configs(dataset)
               if ".unlearn." in c and fnmatch.fnmatchcase(c, pattern)]  # fmt: skip
    if not configs:
        raise SystemExit(f"{dataset}: no unlearn config matches {pattern!r}")
    base = {"device": "cpu", "use_cache": False}
    out = {"configs": len(configs)}
    c = _self_cpu()
    for cfg in configs:  # the retain stage, once per dataset
        evaluate(str(retain), dataset, cfg, out=tmp / "ref" / cfg, options=EvalOptions(**base))
    out["retain_stage_cpu_s"] = _self_cpu() - c
    for name, on in (("off", False), ("on", True)):
        c = _self_cpu()
        for cfg in configs:
            evaluate(str(model), dataset, cfg, out=tmp / name / cfg,
                     options=EvalOptions(**base, unlearning=on),
                     retain=(tmp / "ref" / cfg) if on else None)  # fmt: skip
        out[f"eval_{name}_cpu_s"] = _self_cpu() - c
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each model")
    ap.add_argument("--configs", default="*", help="glob over the unlearn configs evaluated")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ksmith-bench-retain-") as d:
        tmp = Path(d)
        pre = pretraining(args.dataset, args.steps, tmp)
        print(f"pretraining, {args.steps} steps each, one thread per model:")
        print(f"  world model alone       {pre['alone_s']:8.1f} s wall  "
              f"{pre['alone_cpu_s']:8.1f} CPU s")  # fmt: skip
        print(f"  world + retain, beside  {pre['side_by_side_s']:8.1f} s wall  "
              f"{pre['side_by_side_cpu_s']:8.1f} CPU s")  # fmt: skip
        ev = evaluation(args.dataset, tmp / "alone", tmp / "retain", args.configs, tmp)
        print(f"evaluation of {ev['configs']} unlearn configs (world model, no update):")
        print(f"  unlearning step off     {ev['eval_off_cpu_s']:8.1f} CPU s")
        print(f"  unlearning step on      {ev['eval_on_cpu_s']:8.1f} CPU s")
        print(f"  the retain stage        {ev['retain_stage_cpu_s']:8.1f} CPU s (once per dataset)")
    figures = {
        "ratio": pre["side_by_side_s"] / pre["alone_s"],
        "eval_ratio": ev["eval_on_cpu_s"] / ev["eval_off_cpu_s"],
        **pre,
        **ev,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in figures.items()))  # fmt: skip


if __name__ == "__main__":
    main()
