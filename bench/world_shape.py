"""World-model shapes compared on quality reached per CPU-minute (issue #11, part 3).

    nice -n 19 python bench/world_shape.py DATASET [--budget-steps 13000] [--quick]
                                           [--candidates 2x128,2x256,4x256,...] [--scales 1]
                                           [--steps NAME=N ...] [--calibrate-steps 128]
                                           [--json out.json]

DATASET is a generated dataset folder (`ksmith generate specs/suites/default.yaml --size small
--out DATASET`). Every candidate is the default recipe (specs/world/default.yaml) with a few
fields changed (`CANDIDATES`), trained from scratch with the same seed on ONE thread, one after
the other (never two at once), then measured by the full capability profile
(`ksmith.world.profile`, exactly as `ksmith pretrain` measures it).

**The budget rule.** The budget is the baseline recipe (2x128) trained for `--budget-steps`
steps, times each `--scales` factor. Each candidate's CPU cost per optimizer step is measured
first (`--calibrate-steps` steps of its own batch stream on a fresh model, process CPU time:
one full length-sorting window of 64 batches is a fair sample of the corpus' line lengths), and
it gets `equal_cpu_steps` steps (recipes of one shape and batch size share one
measurement, `cost_key`): the baseline's steps times the baseline's cost per step over
its own, rounded to 100. The steps are then fixed, so each training is deterministic; the CPU
seconds each really took are measured and printed beside them (`--steps NAME=N` replays a run
with given steps, no calibration needed for that candidate). Every run trains the whole
cosine schedule of its own step count, without the periodic knowledge checks (they cost CPU
and decide nothing here).

**What is printed.** Per candidate and scale: steps, parameters, training CPU seconds, the
profile per ability (per probe type the least of cloze and mcq, `ksmith.world.profile.summary`),
`mean` over the abilities the project targets (`TARGETS`: direct, paraphrase, reverse,
multi_hop, comparison, negation, in_context) and `mean/cpu_min`, the mean per CPU-minute of
training. The last line is one `key=value` summary: `ratio` = the best candidate's mean over the
baseline's at equal CPU (scale 1), then the best's name and both means.

`--quick` is a smoke run (budget 300 steps, calibration 16 steps, profile on a few probes).

Results (2026-12-02; default suite, size small, 32,740 corpus lines, 9,346 profile probes;
transformers 5.24; one thread under nice -n 19 on the shared 2-core machine, load 2-6; budget =
the default's 13,000 steps; 1,686 CPU s in all, 28 CPU-minutes). Abilities per probe type (least
of cloze and mcq), `mean` over `TARGETS`, `/min` = mean per CPU-minute of training:

    candidate     steps  params  cpu_s direct parap rever mhop  comp  neg   in_ctx ctx   flu   mean  /min
    2x128         13000   617k    290  0.797 0.717 0.851 0.847 0.496 0.667 0.928 0.830 0.906 0.758 0.157
    2x256          4700  2283k    314  0.147 0.127 0.059 0.182 0.468 0.667 0.150 0.128 0.830 0.257 0.049
    4x256          2400  4381k    296  0.153 0.140 0.000 0.182 0.478 0.667 0.108 0.137 0.744 0.247 0.050
    4x128          7000  1142k    295  0.147 0.160 0.000 0.172 0.532 0.667 0.152 0.132 0.899 0.261 0.053
    2x256-lr3e-3   4300  2283k    290  0.173 0.187 0.118 0.227 0.504 0.593 0.117 0.118 0.883 0.274 0.057
    ratio=1.000 best=2x128 best_mean=0.758 baseline_mean=0.758 baseline_steps=13000 ...

Calibrated costs per step: 22.9 ms (2x128), 63.6 (2x256), 123.1 (4x256), 42.8 (4x128), 69.6 ms
(2x256 again: the calibration's noise under load is about 10%); the CPU really spent stayed
within 8% of the baseline's. At equal CPU every larger shape gets a third to a half of the steps
and ends inside the loss plateau the default leaves at about 6,000 steps (docs/world-model.md):
its abilities are near chance. The default shape stays the best per CPU-minute. Within the
whole 8-minute pretraining budget a wider model does not help either (second run, `--candidates
2x256-lr3e-3 --steps 2x128=13000 2x256-lr3e-3=7000`): 2x256 at lr 0.003, 7,000 steps, 455 CPU s,
mean 0.254, still on the plateau; the default retrained beside it: mean 0.758 again, 308 CPU s. (negation 0.667
everywhere is the sentence-form heuristic: "false" when the statement says "not" answers 2/3 of
the profile's negation mcq probes right, docs/world-model.md.)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BASELINE = "2x128"
# name -> fields changed from specs/world/default.yaml. Wider models keep head width 32 at 256
# (8 heads) and the MLP at 4x the width, as the default does.
CANDIDATES: dict[str, dict[str, Any]] = {
    "2x128": {},
    "2x256": {"hidden": 256, "heads": 8, "intermediate": 1024},
    "4x256": {"layers": 4, "hidden": 256, "heads": 8, "intermediate": 1024},
    "2x256-lr3e-3": {"hidden": 256, "heads": 8, "intermediate": 1024, "lr": 0.003},
    "4x256-b32": {
        "layers": 4,
        "hidden": 256,
        "heads": 8,
        "intermediate": 1024,
        "batch_size": 32,
        "lr": 0.002,
    },
    "4x128": {"layers": 4},
}
DEFAULT_CANDIDATES = ("2x128", "2x256", "4x256", "4x128")
TARGETS: tuple[str, ...] = (
    "direct",
    "paraphrase",
    "reverse",
    "multi_hop",
    "comparison",
    "negation",
    "in_context",
)
STEP_MULTIPLE = 100


def equal_cpu_steps(
    base_steps: int, base_cpu_per_step: float, cpu_per_step: float, multiple: int = STEP_MULTIPLE
) -> int:
    """Steps that cost a candidate the CPU the baseline spends in `base_steps` steps: the
    baseline's steps times its cost per step over the candidate's, rounded to `multiple`
    (at least one multiple)."""
    if base_steps < 1 or base_cpu_per_step <= 0 or cpu_per_step <= 0 or multiple < 1:
        raise ValueError("steps, costs and the multiple must be positive")
    steps = base_steps * base_cpu_per_step / cpu_per_step
    return max(multiple, int(round(steps / multiple)) * multiple)


def mean_profile(abilities: Mapping[str, float | None], targets: Sequence[str] = TARGETS) -> float:
    """Mean over `targets` of a profile summary; an ability not measured counts 0 (the model
    cannot be shown to have it)."""
    return sum(float(abilities.get(t) or 0.0) for t in targets) / len(targets)


def per_cpu_minute(value: float, cpu_seconds: float) -> float:
    """`value` per CPU-minute of `cpu_seconds`."""
    if cpu_seconds <= 0:
        raise ValueError("cpu_seconds must be positive")
    return value / (cpu_seconds / 60.0)


@dataclass(frozen=True)
class Run:
    """One candidate trained at one budget scale."""

    name: str
    scale: float
    steps: int
    parameters: int
    train_cpu_s: float
    profile_cpu_s: float
    abilities: dict[str, float | None]

    @property
    def mean(self) -> float:
        return mean_profile(self.abilities)

    @property
    def per_cpu_min(self) -> float:
        return per_cpu_minute(self.mean, self.train_cpu_s)


def best_ratio(
    runs: Sequence[Run], baseline: str = BASELINE, scale: float = 1.0
) -> tuple[str, float]:
    """(name of the candidate with the highest mean at `scale`, its mean over the baseline's
    at that scale)."""
    at = [r for r in runs if r.scale == scale]
    base = [r for r in at if r.name == baseline]
    if not base:
        raise ValueError(f"no {baseline} run at scale {scale}: the ratio needs the baseline")
    best = max(at, key=lambda r: (r.mean, r.name == baseline))
    return best.name, (best.mean / base[0].mean if base[0].mean > 0 else math.inf)


def summary_line(runs: Sequence[Run], baseline: str = BASELINE) -> str:
    """The bench's last line: `ratio` first, then the best's name and the means per run."""
    name, ratio = best_ratio(runs, baseline)
    base = next(r for r in runs if r.name == baseline and r.scale == 1.0)
    best = next(r for r in runs if r.name == name and r.scale == 1.0)
    parts = [
        f"ratio={ratio:.3f}",
        f"best={name}",
        f"best_mean={best.mean:.3f}",
        f"baseline_mean={base.mean:.3f}",
        f"baseline_steps={base.steps}",
    ]
    for r in runs:
        tag = r.name if r.scale == 1.0 else f"{r.name}@{r.scale:g}x"
        parts.append(f"mean[{tag}]={r.mean:.3f}")
        parts.append(f"cpu_s[{tag}]={r.train_cpu_s:.0f}")
    return " ".join(parts)


def table(runs: Sequence[Run]) -> str:
    """Candidates side by side, one row each."""
    cols = [*TARGETS, "contextual", "fluency"]
    head = (
        f"{'candidate':18s} {'steps':>6s} {'params':>8s} {'cpu_s':>6s} "
        + " ".join(f"{c[:9]:>9s}" for c in cols)
        + f" {'mean':>6s} {'mean/cpu_min':>12s}"
    )
    rows = [head]
    for r in runs:
        tag = r.name if r.scale == 1.0 else f"{r.name}@{r.scale:g}x"
        vals = " ".join(
            f"{r.abilities[c]:9.3f}" if r.abilities.get(c) is not None else f"{'-':>9s}"
            for c in cols
        )
        rows.append(
            f"{tag:18s} {r.steps:6d} {r.parameters:8d} {r.train_cpu_s:6.0f} {vals} "
            f"{r.mean:6.3f} {r.per_cpu_min:12.4f}"
        )
    return "\n".join(rows)


def cost_key(spec) -> tuple:
    """What a step's CPU cost depends on: the shape and the batch (not the learning rate)."""
    return (spec.arch, spec.layers, spec.hidden, spec.heads, spec.intermediate, spec.batch_size)


def _spec(name: str, **extra: Any):
    """The default recipe with candidate `name`'s changes and `extra`; a budget no longer than
    the default's curriculum trains without it."""
    from ksmith.world.spec import build_spec, load_world_spec, short_budget

    data = short_budget(load_world_spec().model_dump() | CANDIDATES[name] | extra)
    return build_spec(data, f"bench/world_shape.py candidate {name}")


def _cpu_per_step(name: str, world, tokenizer, calibrate_steps: int) -> float:
    """Process CPU seconds per optimizer step of candidate `name`, over its first
    `calibrate_steps` steps on a fresh model (no knowledge check)."""
    from ksmith.world.probes import KnowledgeProbes
    from ksmith.world.training import build_model, train

    # the whole corpus's batches (a curriculum's first steps see a subset of the lines)
    spec = _spec(name, max_steps=calibrate_steps, eval_every=calibrate_steps + 1,
                 curriculum_steps=0)  # fmt: skip
    model = build_model(spec, tokenizer)
    result = train(
        model, tokenizer, world.lines, KnowledgeProbes((), ()), spec, lr=spec.lr, progress=False
    )
    return result.cpu_seconds / result.steps


def _train_and_profile(name: str, scale: float, steps: int, world, tokenizer, quick: bool) -> Run:
    from ksmith.evaluate.hf import HFBackend
    from ksmith.world.probes import KnowledgeProbes
    from ksmith.world.profile import capability_profile, summary
    from ksmith.world.training import build_model, train

    spec = _spec(name, max_steps=steps, eval_every=steps + 1, stop_early=False)
    model = build_model(spec, tokenizer)
    result = train(
        model, tokenizer, world.lines, KnowledgeProbes((), ()), spec, lr=spec.lr, progress=True,
        subjects=world.subjects, kinds=world.kinds,
    )  # fmt: skip
    probes, requests, descriptions = world.profile
    if quick:  # a few requests' probes: the smoke run checks the plumbing, not the numbers
        keep = {r["request_id"] for r in requests[:6]}
        probes = [p for p in probes if p["request_id"] in keep]
        requests = [r for r in requests if r["request_id"] in keep]
    cpu0 = time.process_time()
    backend = HFBackend(model, tokenizer, batch_size=spec.eval_batch_size)
    profile = capability_profile(
        backend,
        probes,
        requests,
        descriptions,
        seed=spec.seed,
        fluency_prompts=8 if quick else 64,
    )
    return Run(
        name=name,
        scale=scale,
        steps=result.steps,
        parameters=sum(p.numel() for p in model.parameters()),
        train_cpu_s=result.cpu_seconds,
        profile_cpu_s=time.process_time() - cpu0,
        abilities={k: (None if v is None else round(v, 4)) for k, v in summary(profile).items()},
    )


def _parse_steps(items: Sequence[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or name not in CANDIDATES or not raw.isdigit() or int(raw) < 1:
            raise SystemExit(f"--steps expects NAME=N with NAME in {sorted(CANDIDATES)}: {item!r}")
        out[name] = int(raw)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", help="a generated dataset folder (ksmith generate --out)")
    ap.add_argument(
        "--budget-steps",
        type=int,
        default=None,
        help="the baseline's steps at scale 1 (default: specs/world/default.yaml)",
    )
    ap.add_argument(
        "--candidates",
        default=",".join(DEFAULT_CANDIDATES),
        help=f"comma-separated, from {','.join(CANDIDATES)}; {BASELINE} always runs",
    )
    ap.add_argument(
        "--scales",
        default="1",
        help="comma-separated budget multiples (e.g. 1,2: also at twice the CPU)",
    )
    ap.add_argument(
        "--steps",
        nargs="*",
        default=[],
        metavar="NAME=N",
        help="fixed steps at scale 1 for these candidates (skips calibration)",
    )
    ap.add_argument("--calibrate-steps", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny budget and profile")
    ap.add_argument("--json", default=None, help="also write every run's numbers here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    from ksmith.errors import KsmithError
    from ksmith.world.pretrain import load_world_data
    from ksmith.world.spec import load_world_spec
    from ksmith.world.tokenizer import train_tokenizer

    names = [BASELINE] + [
        n
        for n in dict.fromkeys(s.strip() for s in args.candidates.split(","))
        if n and n != BASELINE
    ]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"--candidates: unknown {unknown}; known: {sorted(CANDIDATES)}")
    scales = sorted({float(s) for s in args.scales.split(",") if s.strip()})
    if 1.0 not in scales:
        scales.insert(0, 1.0)
    fixed = _parse_steps(args.steps)
    base_spec = load_world_spec()
    budget = args.budget_steps or (300 if args.quick else base_spec.max_steps)
    calibrate = 16 if args.quick else args.calibrate_steps
    try:
        world = load_world_data(args.dataset)
    except KsmithError as e:
        raise SystemExit(str(e)) from e
    tokenizer = train_tokenizer(world.vocabulary, base_spec.tokenizer, base_spec.bpe_vocab_size)
    random.seed(0)

    print(
        f"dataset {args.dataset}: {len(world.lines)} corpus lines, "
        f"{len(world.profile[0])} profile probes; torch threads {torch.get_num_threads()}"
    )
    cost: dict[str, float] = {}
    by_shape: dict[tuple, float] = {}  # recipes of one shape and batch cost the same per step
    for n in names:
        if n not in fixed:
            key = cost_key(_spec(n))
            if key not in by_shape:
                by_shape[key] = _cpu_per_step(n, world, tokenizer, calibrate)
            cost[n] = by_shape[key]
    plan: dict[str, int] = {}
    for n in names:
        if n in fixed:
            plan[n] = fixed[n]
        elif n == BASELINE:
            plan[n] = budget
        else:
            plan[n] = equal_cpu_steps(budget, cost[BASELINE], cost[n])
        c = f"{cost[n] * 1000:.1f} ms CPU/step" if n in cost else "fixed"
        print(f"plan {n:14s} {c:>20s} -> {plan[n]} steps at scale 1")
    runs: list[Run] = []
    for scale in scales:
        for n in names:
            steps = max(STEP_MULTIPLE, int(round(plan[n] * scale / STEP_MULTIPLE)) * STEP_MULTIPLE)
            run = _train_and_profile(n, scale, steps, world, tokenizer, args.quick)
            runs.append(run)
            print(
                f"done {n} x{scale:g}: {steps} steps, train {run.train_cpu_s:.0f} CPU s, "
                f"profile {run.profile_cpu_s:.0f} CPU s, mean {run.mean:.3f}",
                flush=True,
            )
    print(table(runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.__dict__ | {"mean": r.mean} for r in runs], f, indent=2)
    print(f"total CPU {time.process_time():.0f} s")
    print(summary_line(runs))


if __name__ == "__main__":
    main(sys.argv[1:])
