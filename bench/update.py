"""Cost of the locate-then-edit editors on the world model: batch vs sequential, cached stats.

    python bench/update.py [MODEL_DIR] [--corpus DATASET_DIR_OR_TXT] [--ks 1,10,100]

With no MODEL_DIR, a model is built from the default world-model spec (specs/world/default.yaml)
with a word tokenizer over a synthetic corpus (random weights: this measures cost, not quality).
MEMIT, AlphaEdit and FT-M (if registered) apply k requests in one batch; ROME applies the same
k one after another. Prints seconds per request, the ratio of sequential ROME to batched MEMIT
per request at the largest k, the peak resident memory, and whether a second MEMIT run reused
the cached second moments. The last line is one key=value summary.
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from ksmith.methods import load_builtin_methods
from ksmith.methods import stats as stats_mod
from ksmith.methods.alphaedit import AlphaEdit
from ksmith.methods.base import METHODS, Request, TextPair, UpdateProblem
from ksmith.methods.memit import MEMIT
from ksmith.methods.rome import ROME
from ksmith.runtime import keep_freed_memory

FOODS = "meat grass fish seeds insects fruit leaves nectar".split()
PLACES = "forest desert ocean river mountain swamp cave meadow".split()


def synthetic_world(n_subjects: int, seed: int = 0) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Corpus lines and (subject, prompt, object) facts of a small fictional world."""
    rng = random.Random(seed)
    syll = "ba ko ri mu te sa lo ni ve du ga pe".split()
    names = sorted({"".join(rng.choice(syll) for _ in range(3)) for _ in range(4 * n_subjects)})
    names = names[:n_subjects]
    facts, corpus = [], []
    for n in names:
        food, place = rng.choice(FOODS), rng.choice(PLACES)
        facts.append((n, f"{n} eats", food))
        corpus += [
            f"{n} eats {food} .",
            f"{n} lives in the {place} .",
            f"what does {n} eat ? {food}",
            f"where does {n} live ? {place}",
        ]
    return corpus, facts


def build_default_model(corpus: list[str]):
    from ksmith.world.spec import load_world_spec
    from ksmith.world.tokenizer import train_tokenizer
    from ksmith.world.training import build_model

    spec = load_world_spec()
    tok = train_tokenizer(corpus + [f"{o}" for o in FOODS + PLACES], kind="word")
    return build_model(spec, tok).eval(), tok


def problem_for(facts, k: int) -> UpdateProblem:
    reqs = []
    for i, (subj, prompt, old) in enumerate(facts[:k]):
        new = FOODS[(FOODS.index(old) + 1) % len(FOODS)] if old in FOODS else FOODS[0]
        reqs.append(Request(f"r{i}", subj, "eats", prompt, old, new))
    plus = tuple(TextPair(r.prompt, r.new_object or "", r.request_id) for r in reqs)
    return UpdateProblem(kind="edit", requests=tuple(reqs), plus=plus)


def timed(method, model, tok, problem) -> float:
    edited = copy.deepcopy(model)
    t0 = time.perf_counter()
    method.apply(edited, tok, problem)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="world model folder (default: built, random)")
    ap.add_argument(
        "--corpus", help="statistics corpus: dataset folder or .txt (default: the synthetic corpus)"
    )
    ap.add_argument("--ks", default="1,10,100", help="comma-separated request counts")
    args = ap.parse_args(argv)
    keep_freed_memory()  # as the ksmith command and pipeline workers do
    logging.basicConfig(level=logging.WARNING)
    ks = [int(x) for x in args.ks.split(",")]
    corpus, facts = synthetic_world(max(ks))
    if args.model:
        from ksmith.models.loading import load_model

        model, tok = load_model(args.model, device="cpu")
    else:
        model, tok = build_default_model(corpus)
    print(
        f"threads={torch.get_num_threads()} model_type={model.config.model_type} "
        f"layers={model.config.num_hidden_layers} hidden={model.config.hidden_size}"
    )
    work = Path(tempfile.mkdtemp(prefix="ksmith-bench-"))
    corpus_path = args.corpus
    if corpus_path is None:
        corpus_path = str(work / "corpus.txt")
        Path(corpus_path).write_text("\n".join(corpus))
    cache = str(work / "stats")

    computed = []
    original = stats_mod.compute_second_moments

    def counting(*a, **kw):
        computed.append(1)
        return original(*a, **kw)

    stats_mod.compute_second_moments = counting
    common = {"mom2_corpus_path": corpus_path, "mom2_cache_dir": cache}
    makers = {
        "memit": lambda: MEMIT(MEMIT.Params(**common)),
        "alphaedit": lambda: AlphaEdit(AlphaEdit.Params(**common)),
        "rome_seq": lambda: ROME(ROME.Params(**common)),
    }
    load_builtin_methods()
    if "ft_m" in METHODS:
        ftm = METHODS.get("ft_m")
        makers["ft_m"] = lambda: ftm(ftm.Params())
    # warm the statistics cache once, so timings compare the edits themselves
    timed(makers["memit"](), model, tok, problem_for(facts, 1))
    timed(makers["rome_seq"](), model, tok, problem_for(facts, 1))
    per_req: dict[tuple[str, int], float] = {}
    for k in ks:
        problem = problem_for(facts, k)
        for name, make in makers.items():
            if name == "rome_seq":
                problem_k = UpdateProblem(kind="edit", requests=problem.requests, mode="sequential")
            else:
                problem_k = problem
            secs = timed(make(), model, tok, problem_k)
            per_req[(name, k)] = secs / k
            print(f"{name:10s} k={k:<4d} seconds={secs:8.3f} per_request={secs / k:.4f}")
            sys.stdout.flush()
    before = len(computed)
    timed(makers["memit"](), model, tok, problem_for(facts, 1))  # a fresh instance: new run
    reused = len(computed) == before
    kmax = max(ks)
    ratio = per_req[("rome_seq", kmax)] / per_req[("memit", kmax)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ratio(rome_seq/memit per request, k={kmax})={ratio:.2f} (target >= 10)")
    print(f"peak_rss_mb={peak_mb:.0f} stats_reused_second_run={reused}")
    summary = " ".join(
        [f"{n}_k{k}_s_per_req={v:.4f}" for (n, k), v in sorted(per_req.items())]
        + [f"ratio={ratio:.2f}", f"peak_rss_mb={peak_mb:.0f}", f"stats_reused={reused}"]
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
