"""Torch CPU threads per process: one update and a small evaluation at 1 and 2 threads.

    python bench/threads.py [--repeats 3] [--side-by-side 1|2] [--methods ft_m,rome]
                            [--k 10] [--probes 2000] [--generate 128]

Each measurement runs in a fresh process (torch fixes its thread pool at start-up) that builds
a model of the default world-model shape (specs/world/default.yaml, random weights, word
tokenizer over a synthetic corpus: this measures cost, not quality), then times

- `update`: one edit of `--k` requests with each of `--methods` (each on a fresh copy),
- `evaluate`: the `hf` backend scoring `--probes` (prompt, answer) pairs and greedily
  generating `--generate` continuations of 8 tokens, as an evaluation cell does.

`--side-by-side 2` runs two such processes at once, as the pipeline's default `workers: 2` does.
Thread counts take turns within each repeat; each side reports its median over repeats, in
wall and CPU seconds (CPU seconds count a spinning thread's wait as work). The last line is one
`key=value` summary: `ratio=` is the 2-thread wall time over the 1-thread one for update and
evaluation together (above 1: one thread is faster), then the parts and the thread count the
ratio chooses.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import subprocess
import sys
import time

FOODS = "meat grass fish seeds insects fruit leaves nectar".split()
PLACES = "forest desert ocean river mountain swamp cave meadow".split()


def _world(n: int = 64, seed: int = 0) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Corpus lines and (subject, prompt, object) facts of a small fictional world."""
    rng = random.Random(seed)
    syll = "ba ko ri mu te sa lo ni ve du ga pe".split()
    names = sorted({"".join(rng.choice(syll) for _ in range(3)) for _ in range(4 * n)})[:n]
    corpus, facts = [], []
    for name in names:
        food, place = rng.choice(FOODS), rng.choice(PLACES)
        facts.append((name, f"{name} eats", food))
        corpus += [f"{name} eats {food} .", f"{name} lives in the {place} ."]
        corpus += [f"what does {name} eat ? {food}", f"where does {name} live ? {place}"]
    return corpus, facts


def _clock(fn) -> dict[str, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}


def child(threads: int, methods: list[str], k: int, n_probes: int, n_generate: int) -> dict:
    """One process: build the model, time an update per method and a small evaluation."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    from ksmith.evaluate.hf import HFBackend
    from ksmith.methods import load_builtin_methods
    from ksmith.methods.base import METHODS, Request, TextPair, UpdateProblem
    from ksmith.runtime import keep_freed_memory
    from ksmith.world.spec import load_world_spec
    from ksmith.world.tokenizer import train_tokenizer
    from ksmith.world.training import build_model

    keep_freed_memory()  # as the ksmith command and pipeline workers do
    corpus, facts = _world()
    tok = train_tokenizer(corpus + FOODS + PLACES, kind="word")
    model = build_model(load_world_spec(), tok).eval()
    reqs = [
        Request(f"r{i}", subj, "eats", prompt, old, FOODS[(FOODS.index(old) + 1) % len(FOODS)])
        for i, (subj, prompt, old) in enumerate(facts[:k])
    ]
    plus = tuple(TextPair(r.prompt, r.new_object or "", r.request_id) for r in reqs)
    problem = UpdateProblem(kind="edit", requests=tuple(reqs), plus=plus)
    load_builtin_methods()
    out: dict = {"threads": torch.get_num_threads()}
    for name in methods:
        cls = METHODS.get(name)
        params = cls.Params()
        if "mom2_corpus_path" in type(params).model_fields:
            import tempfile
            from pathlib import Path

            work = Path(tempfile.mkdtemp(prefix="ksmith-bench-threads-"))
            (work / "corpus.txt").write_text("\n".join(corpus))
            params = cls.Params(
                mom2_corpus_path=str(work / "corpus.txt"), mom2_cache_dir=str(work / "stats")
            )
            cls(params).apply(copy.deepcopy(model), tok, problem)  # statistics computed once
        edited = copy.deepcopy(model)
        method = cls(params)
        out[f"update_{name}"] = _clock(lambda m=method, e=edited: m.apply(e, tok, problem))
    rng = random.Random(1)
    probes = []  # distinct (two facts' context, question) pairs: nothing is scored twice
    for i in range(n_probes):
        (_, p1, o1), (_, p2, _) = facts[i % len(facts)], facts[(i // len(facts) + i) % len(facts)]
        probes.append((f"{p1} {o1} . {p2}", " " + rng.choice(FOODS)))
    backend = HFBackend(model, tok, batch_size=64)
    backend.score(probes[:16])  # warm-up
    out["evaluate"] = _clock(
        lambda: (
            backend.score(probes),
            backend.generate([p for p, _ in probes[:n_generate]], max_new_tokens=8),
        )
    )
    return out


def _run(threads: int, side_by_side: int, argv: list[str]) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", str(threads), *argv]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(side_by_side)]
    results = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"child failed (exit {p.returncode})")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="repeats per thread count")
    ap.add_argument("--side-by-side", type=int, default=1, help="processes run at once")
    ap.add_argument("--methods", default="ft_m,rome", help="comma-separated update methods")
    ap.add_argument("--k", type=int, default=10, help="requests in the update")
    ap.add_argument("--probes", type=int, default=2000, help="probes scored")
    ap.add_argument("--generate", type=int, default=128, help="prompts greedily continued")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    if args.child is not None:
        print(json.dumps(child(args.child, methods, args.k, args.probes, args.generate)))
        return 0
    passed = ["--methods", args.methods, "--k", str(args.k), "--probes", str(args.probes)]
    passed += ["--generate", str(args.generate)]
    parts = [f"update_{m}" for m in methods] + ["evaluate"]
    samples: dict[int, dict[str, list[dict]]] = {1: {}, 2: {}}
    for rep in range(args.repeats):
        for threads in (1, 2) if rep % 2 == 0 else (2, 1):
            for res in _run(threads, args.side_by_side, passed):
                for part in parts:
                    samples[threads].setdefault(part, []).append(res[part])
    med = {
        (t, part, clock): statistics.median(s[clock] for s in samples[t][part])
        for t in (1, 2)
        for part in parts
        for clock in ("wall", "cpu")
    }
    print(f"{args.side_by_side} process(es) side by side, median of {args.repeats} runs")
    print(f"{'':18s}{'1 thread wall':>14s}{'cpu':>8s}{'2 threads wall':>16s}{'cpu':>8s}")
    for part in parts:
        print(
            f"{part:18s}{med[(1, part, 'wall')]:14.3f}{med[(1, part, 'cpu')]:8.3f}"
            f"{med[(2, part, 'wall')]:16.3f}{med[(2, part, 'cpu')]:8.3f}"
        )
    total = {t: sum(med[(t, p, "wall")] for p in parts) for t in (1, 2)}
    upd = {t: sum(med[(t, p, "wall")] for p in parts if p != "evaluate") for t in (1, 2)}
    ratio = total[2] / total[1]
    summary = [
        f"ratio={ratio:.2f}",
        f"update_ratio={upd[2] / upd[1]:.2f}",
        f"evaluate_ratio={med[(2, 'evaluate', 'wall')] / med[(1, 'evaluate', 'wall')]:.2f}",
        f"wall_1={total[1]:.3f}",
        f"wall_2={total[2]:.3f}",
        f"side_by_side={args.side_by_side}",
        f"fastest_threads={1 if ratio >= 1 else 2}",
    ]
    print(" ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
