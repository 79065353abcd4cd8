"""Greedy generation: the `hf` backend against transformers' ``generate`` and lm-eval's HFLM,
measured side by side in one run.

Generates for the same prompts three ways on the world model:
  ksmith        -- `HFBackend.generate` (left-padded batches, longest first; the decoding loop
                   written out, `ksmith.evaluate.hf_generation.greedy_loop`, a finished row
                   leaving the batch);
  transformers  -- the same batches decoded by ``model.generate`` with the same stopping
                   criterion (what the backend did before the loop was written out);
  lmeval        -- lm-eval's ``HFLM.generate_until`` (``until`` = the stop strings,
                   ``max_gen_toks`` = the budget), the tool a user would otherwise pick.
Two workloads from the dataset's probes: ``recall`` (reasoned probes: the model writes the
facts asked up to the cue, at most `REASON_TOKENS` new tokens, as `reasoned_prompts` does) and
``answers`` (cloze and qa probes: a short answer up to a newline, `generation_budget` tokens).
Each side is timed as the best of `--repeats` runs, the sides taking turns. Checks that ksmith
and transformers give the same texts (`same=1`) and counts the prompts where HFLM's text
differs after whitespace normalisation (`lmeval_differs=`; HFLM pads and truncates its own
way). The last line is one `key=value` summary, `ratio=` being lmeval time / ksmith time on
both workloads together (`vs_transformers=` the same against ``generate``).

    python bench/greedy.py --model WORLD_MODEL_DIR --dataset DATASET_DIR [--n 512]
                           [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

import ksmith.evaluate.hf_generation as hf_generation
from ksmith.evaluate.hf import HFBackend
from ksmith.evaluate.scoring import REASON_TOKENS, generation_budget
from ksmith.runtime import keep_freed_memory


def workloads(root: Path, n: int, seed: int = 0) -> dict[str, list[tuple[str, int, tuple]]]:
    """``recall`` and ``answers``: up to `n` distinct (prompt, budget, stop) each, seeded."""
    from ksmith.world.probes import probe_rows

    recall, answers = set(), set()
    for row in probe_rows(root):
        if row.get("cue"):
            recall.add((row["prompt"], REASON_TOKENS, (row["cue"], "\n")))
        elif row["format"] in ("cloze", "qa"):
            budget = generation_budget([row["answer_before"], row["answer_after"]])
            answers.add((row["prompt"], budget, ("\n",)))
    out = {}
    for name, items in (("recall", recall), ("answers", answers)):
        items = sorted(items)
        random.Random(seed).shuffle(items)
        out[name] = items[:n]
    return out


def by_call(items):
    """Items grouped as one backend call each: same budget and stop strings."""
    calls: dict[tuple, list[str]] = {}
    for prompt, budget, stop in items:
        calls.setdefault((budget, stop), []).append(prompt)
    return calls


def run_backend(backend: HFBackend, items, fast: bool) -> list[str]:
    supported = hf_generation.fast_greedy_supported
    if not fast:
        hf_generation.fast_greedy_supported = lambda model: False
    try:
        texts: dict[tuple, str] = {}
        for (budget, stop), prompts in by_call(items).items():
            for p, t in zip(prompts, backend.generate(prompts, budget, stop=stop), strict=True):
                texts[(p, budget, stop)] = t
    finally:
        hf_generation.fast_greedy_supported = supported
    return [texts[item] for item in items]


def run_lmeval(lm, items) -> list[str]:
    from lm_eval.api.instance import Instance

    requests = [
        Instance(
            request_type="generate_until",
            doc={},
            arguments=(p, {"until": list(stop), "max_gen_toks": budget, "do_sample": False}),
            idx=i,
        )
        for i, (p, budget, stop) in enumerate(items)
    ]
    return lm.generate_until(requests, disable_tqdm=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="world model folder")
    ap.add_argument("--dataset", type=Path, required=True, help="dataset folder")
    ap.add_argument("--n", type=int, default=512, help="prompts per workload")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    keep_freed_memory()
    from lm_eval.models.huggingface import HFLM

    from ksmith.models import load_model

    model, tokenizer = load_model(args.model, device="cpu")
    # HFLM passes `max_length`; a saved generation config's `max_new_tokens` would override it
    model.generation_config.max_new_tokens = None
    backend = HFBackend(model, tokenizer, batch_size=args.batch_size)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)
    work = workloads(args.dataset, args.n)
    print(
        f"model={args.model} threads={torch.get_num_threads()} "
        + " ".join(f"{k}={len(v)}" for k, v in work.items())
    )
    sides = {
        "ksmith": lambda items: run_backend(backend, items, fast=True),
        "transformers": lambda items: run_backend(backend, items, fast=False),
        "lmeval": lambda items: run_lmeval(lm, items),
    }
    best = {(s, w): float("inf") for s in sides for w in work}
    texts = {}
    with torch.inference_mode():
        for _ in range(args.repeats):
            for w, items in work.items():
                for s, fn in sides.items():
                    t0 = time.perf_counter()
                    texts[(s, w)] = fn(items)
                    best[(s, w)] = min(best[(s, w)], time.perf_counter() - t0)
    same = all(texts[("ksmith", w)] == texts[("transformers", w)] for w in work)
    differs = sum(
        " ".join(a.split()) != " ".join(b.split())
        for w in work
        for a, b in zip(texts[("ksmith", w)], texts[("lmeval", w)], strict=True)
    )
    for w in work:
        print(
            f"{w}: " + "  ".join(f"{s} {best[(s, w)]:.2f} s" for s in sides) + f"  ({len(work[w])})"
        )
    total = {s: sum(best[(s, w)] for w in work) for s in sides}
    print(
        f"ratio={total['lmeval'] / total['ksmith']:.2f} "
        f"vs_transformers={total['transformers'] / total['ksmith']:.2f} "
        + " ".join(f"{s}_s={t:.2f}" for s, t in total.items())
        + " "
        + " ".join(f"{s}_{w}_s={best[(s, w)]:.2f}" for s in sides for w in work)
        + f" same={int(same)} lmeval_differs={differs} prompts={sum(map(len, work.values()))} "
        f"batch_size={args.batch_size} threads={torch.get_num_threads()}"
    )


if __name__ == "__main__":
    main()
