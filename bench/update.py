"""Cost of every update method on the world model: seconds per request at k = 1, 10 and 100.

    python bench/update.py [MODEL_DIR] [--corpus DATASET_DIR_OR_TXT] [--ks 1,10,100]
                           [--methods memit,rome,...] [--threads 1]

With no MODEL_DIR, `out/model` is used when it exists, else a model is built from the default
world-model spec (specs/world/default.yaml) with a word tokenizer over a synthetic corpus (random
weights: this measures cost, not quality). Every registered method (or those listed) runs with
its YAML defaults for the model type on k requests at once: editors on edit requests, unlearning
methods on unlearn requests (with a retain set); ROME, which writes one fact at a time, edits
the k requests one after another. The statistics cache of the locate-then-edit editors is
warmed first, so timings compare the updates themselves. Prints seconds per request per method
and k, the peak resident memory, whether a second MEMIT run reused the cached second moments,
and last one key=value summary line whose `ratio` is ROME's cost per request over MEMIT's at
the largest k (batching pays off: target >= 10).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from ksmith.methods import get_method, load_builtin_methods
from ksmith.methods import stats as stats_mod
from ksmith.methods.base import METHODS, Request, TextPair, UpdateMethod, UpdateProblem
from ksmith.methods.params import resolve_params
from ksmith.runtime import keep_freed_memory

FOODS = "meat grass fish seeds insects fruit leaves nectar".split()
PLACES = "forest desert ocean river mountain swamp cave meadow".split()
DEFAULT_MODEL = Path("out/model")


def synthetic_world(n_subjects: int, seed: int = 0) -> tuple[list[str], list[tuple[str, ...]]]:
    """Corpus lines and (subject, prompt, food, place) facts of a small fictional world."""
    rng = random.Random(seed)
    syll = "ba ko ri mu te sa lo ni ve du ga pe".split()
    names = sorted({"".join(rng.choice(syll) for _ in range(3)) for _ in range(4 * n_subjects)})
    names = names[:n_subjects]
    facts, corpus = [], []
    for n in names:
        food, place = rng.choice(FOODS), rng.choice(PLACES)
        facts.append((n, f"{n} eats", food, place))
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


def problem_for(facts, k: int, method: UpdateMethod) -> UpdateProblem:
    """k requests of the method's kind; Q+ the request prompts, Q- where the subjects live."""
    reqs = []
    for i, (subj, prompt, old, _place) in enumerate(facts[:k]):
        new = FOODS[(FOODS.index(old) + 1) % len(FOODS)] if method.kind == "edit" else None
        reqs.append(Request(f"r{i}", subj, "eats", prompt, old, new))
    plus = tuple(TextPair(r.prompt, r.new_object or r.old_object, r.request_id) for r in reqs)
    minus = tuple(TextPair(f"{s} lives in the", place) for s, _p, _o, place in facts[:k])
    problem = UpdateProblem(kind=method.kind, requests=tuple(reqs), plus=plus, minus=minus)
    return dataclasses.replace(problem, target=method.target_kind())


def make_method(name: str, model, common: dict[str, str]) -> UpdateMethod:
    """The method with its YAML defaults for this model type (statistics corpus and cache set
    for the editors that take second moments)."""
    cls = get_method(name)
    params = resolve_params(
        cls, model_type=model.config.model_type, num_layers=model.config.num_hidden_layers
    )
    extra = {k: v for k, v in common.items() if k in type(params).model_fields}
    return cls(params.model_copy(update=extra))


def timed(method: UpdateMethod, model, tok, problem: UpdateProblem) -> float:
    edited = copy.deepcopy(model)  # each run starts from the base weights
    torch.manual_seed(problem.seed)
    t0 = time.perf_counter()
    method.apply(edited, tok, problem)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="world model folder (default: out/model or built)")
    ap.add_argument(
        "--corpus", help="statistics corpus: dataset folder or .txt (default: the synthetic corpus)"
    )
    ap.add_argument("--ks", default="1,10,100", help="comma-separated request counts")
    ap.add_argument("--methods", help="comma-separated method names (default: every one)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the ksmith command and pipeline workers do
    logging.basicConfig(level=logging.WARNING)
    ks = [int(x) for x in args.ks.split(",")]
    corpus, facts = synthetic_world(max(ks))
    model_dir = args.model or (str(DEFAULT_MODEL) if DEFAULT_MODEL.is_dir() else None)
    if model_dir:
        from ksmith.models.loading import load_model

        model, tok = load_model(model_dir, device="cpu")
    else:
        model, tok = build_default_model(corpus)
    print(
        f"model={model_dir or 'built (random)'} threads={torch.get_num_threads()} "
        f"model_type={model.config.model_type} layers={model.config.num_hidden_layers} "
        f"hidden={model.config.hidden_size}"
    )
    work = Path(tempfile.mkdtemp(prefix="ksmith-bench-"))
    corpus_path = args.corpus
    if corpus_path is None:
        corpus_path = str(work / "corpus.txt")
        Path(corpus_path).write_text("\n".join(corpus))
    common = {"mom2_corpus_path": corpus_path, "mom2_cache_dir": str(work / "stats")}

    computed = []
    original = stats_mod.compute_second_moments

    def counting(*a, **kw):
        computed.append(1)
        return original(*a, **kw)

    stats_mod.compute_second_moments = counting
    load_builtin_methods()
    names = args.methods.split(",") if args.methods else METHODS.names()
    from ksmith.methods.trained.commands import TRAINED_METHODS

    # Trained editors need an editor trained on a world's split (`ksmith train-editor`); this
    # bench's model and facts are synthetic, so their cost per request is read from a pipeline
    # run's update.json instead (README, "Methods").
    for name in [n for n in names if n in TRAINED_METHODS]:
        print(f"{name:10s} skipped: a trained editor (ksmith train-editor) is needed")
        names.remove(name)
    for name in ("memit", "rome"):  # the ratio's two methods, and warm the statistics cache
        if name not in names:
            names.append(name)
        method = make_method(name, model, common)
        timed(method, model, tok, problem_for(facts, 1, method))
    per_req: dict[tuple[str, int], float] = {}
    for k in ks:
        for name in names:
            method = make_method(name, model, common)
            secs = timed(method, model, tok, problem_for(facts, k, method))
            per_req[(name, k)] = secs / k
            print(
                f"{name:10s} {method.kind:7s} k={k:<4d} seconds={secs:8.3f} per_request={secs / k:.4f}"
            )
            sys.stdout.flush()
    before = len(computed)
    memit = make_method("memit", model, common)  # a fresh instance: a new run
    timed(memit, model, tok, problem_for(facts, 1, memit))
    reused = len(computed) == before
    kmax = max(ks)
    ratio = per_req[("rome", kmax)] / per_req[("memit", kmax)]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"ratio(rome/memit per request, k={kmax})={ratio:.2f} (target >= 10)")
    print(f"peak_rss_mb={peak_mb:.0f} stats_reused_second_run={reused}")
    summary = " ".join(
        [f"{n}_k{k}_s_per_req={v:.4f}" for (n, k), v in sorted(per_req.items())]
        + [f"ratio={ratio:.2f}", f"peak_rss_mb={peak_mb:.0f}", f"stats_reused={reused}"]
    )
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
